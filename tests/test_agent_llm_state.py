"""MinagentLLM's session must stay consistent (cache slots [0, len(s.ids)) hold the K/V of s.ids) when a
call fails mid-forward, and sampling must accept top_p=0 as transformers' TopPLogitsWarper does.
Oracle: a fresh full prefill (minagent.generation.generate / the module forward), float64."""

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

import kernels
from minagent import load_model, load_tokenizer
from minagent.agent.llm import MinagentLLM
from minagent.generation import SamplingParams, generate, sample_next, warp_logits
from minagent.inference import inference_forward
from training_tiny import tiny_checkpoint

LOOPY = [{"role": "system", "content": "Solve with code."},
         {"role": "user", "content": "What is git log? git log git log"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tiny_checkpoint(tmp_path_factory.mktemp("review_kv") / "tiny")
    return load_model(d, dtype="float32").double(), load_tokenizer(d)


def plain(model, tok, ids, max_new):
    return generate(model, [ids], SamplingParams(max_new_tokens=max_new, stop_ids=tok.stop_token_ids),
                    tokenizer=tok)[0].text


def _raise_on_attention_call(monkeypatch, n, exc=KeyboardInterrupt):
    orig, calls = kernels.attention, {"n": 0}

    def attention(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return orig(*a, **k)

    monkeypatch.setattr(kernels, "attention", attention)
    return orig


def test_interrupt_during_prefill_does_not_poison_the_session(tiny, monkeypatch):
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=0)
    llm.complete(LOOPY, max_tokens=10)
    msgs = LOOPY + [{"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "now a much longer new user turn with many tokens in it " * 3}]
    orig = _raise_on_attention_call(monkeypatch, 1)  # layer 0 of the prefill: later layers never written
    with pytest.raises(KeyboardInterrupt):
        llm.complete(msgs, max_tokens=10)
    monkeypatch.setattr(kernels, "attention", orig)
    assert llm.complete(msgs, max_tokens=10)[0] == plain(model, tok, llm.prompt_ids(msgs), 10)


def test_forward_error_does_not_poison_the_session(tiny):
    """A ValueError raised by the forward itself (a sliding-window checkpoint refusing a too-long prompt) after the
    session already recorded the new ids: the next, shorter request reuses slots that were never written."""
    model, tok = tiny
    old_extra, old_arch = dict(model.config.extra), model.config.architecture
    try:
        model.config.extra["sliding_window"] = 200
        object.__setattr__(model.config, "architecture", "MistralForCausalLM")
        assert model.config.attention_window == 200
        llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=0)
        llm.complete(LOOPY, max_tokens=8)
        obs = "Observation:\nExecution logs:\n" + "line of output\n" * 40
        turn = LOOPY + [{"role": "assistant", "content": "x<end_code>"}]
        with pytest.raises(ValueError, match="sliding-window"):
            llm.complete(turn + [{"role": "tool", "content": obs}], max_tokens=8)
        ok = turn + [{"role": "tool", "content": obs[:40]}]
        assert llm.complete(ok, max_tokens=8)[0] == plain(model, tok, llm.prompt_ids(ok), 8)
    finally:
        model.config.extra.clear()
        model.config.extra.update(old_extra)
        object.__setattr__(model.config, "architecture", old_arch)


@pytest.mark.parametrize("drafts", [0, 4])
def test_interrupt_during_decode_keeps_session_ids_equal_to_the_cache(tiny, monkeypatch, drafts):
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=drafts)
    orig = _raise_on_attention_call(monkeypatch, 1 + 2 * 3)  # layer 0 of the 3rd decoding forward
    with pytest.raises(KeyboardInterrupt):
        llm.complete(LOOPY, max_tokens=12)
    monkeypatch.setattr(kernels, "attention", orig)
    s = llm.sessions["agent"]
    # the next turn's rendering extends what the session holds (the reply so far, then a new user turn)
    nxt = s.ids + tok.encode("<|im_end|>\n<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\n",
                             add_special_tokens=False, parse_special=True)
    with torch.inference_mode():
        got = llm._prefill(inference_forward(model), s, nxt)[0]
        want = model(torch.tensor([nxt]))[0, -1]
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_top_p_zero_keeps_the_most_likely_token_like_transformers(tiny):
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    want = TopPLogitsWarper(0.0)(None, logits.clone())
    got = warp_logits(logits, SamplingParams(temperature=1.0, top_p=0.0))
    assert torch.equal(torch.isinf(got), torch.isinf(want))  # transformers keeps 1 token per row
    tok_ids = sample_next(logits, SamplingParams(temperature=1.0, top_p=0.0), torch.Generator().manual_seed(0))
    assert tok_ids.tolist() == logits.argmax(-1).tolist()
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024)
    greedy = llm.complete(LOOPY, max_tokens=6)
    assert llm.complete(LOOPY, max_tokens=6, temperature=0.7, top_p=0.0, seed=1) == greedy


def test_sessions_forget_kv_computed_with_weights_changed_since(tiny):
    """A training step or LoRA merge between calls changes the weights in place: the cached K/V of the shared
    prefix were computed with the old ones and must not be reused."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=0)
    llm.complete(LOOPY, max_tokens=10)
    k_proj = model.model.layers[0].self_attn.k_proj.weight
    saved = k_proj.detach().clone()
    try:
        with torch.no_grad():
            k_proj.mul_(3.0)
        msgs = LOOPY + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
        assert llm.complete(msgs, max_tokens=10)[0] == plain(model, tok, llm.prompt_ids(msgs), 10)
    finally:
        with torch.no_grad():
            k_proj.copy_(saved)


def test_finish_reasons_and_token_counts(tiny):
    """`last` says per row whether a stop (token or string) or the token budget ended it, as the server reports."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=0)
    text = llm.complete(LOOPY, max_tokens=6)[0]
    assert llm.last.finish_reasons == ["length"] and llm.last.completion_tokens == [6]
    assert llm.last.prompt_tokens == len(llm.prompt_ids(LOOPY))
    stop = text[2:4]
    assert stop and llm.complete(LOOPY, max_tokens=6, stop=[stop])[0] == text[:text.index(stop)]
    assert llm.last.finish_reasons == ["stop"]
    llm.complete(LOOPY, max_tokens=6, n=3, temperature=0.0, stop=[stop])
    assert llm.last.finish_reasons == ["stop"] * 3
    llm.complete(LOOPY, max_tokens=6, n=2, temperature=0.0)
    assert llm.last.finish_reasons == ["length"] * 2 and llm.last.completion_tokens == [6, 6]


def test_sessions_forget_kv_after_weights_are_replaced_by_assignment(tiny):
    """load_state_dict(assign=True) swaps in new tensors, whose version counters start at 0 again: the check
    compares the storages too."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=0)
    llm.complete(LOOPY, max_tokens=10)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    name = "model.layers.0.self_attn.k_proj.weight"
    try:
        model.load_state_dict({**old, name: old[name] * 3.0}, assign=True)
        msgs = LOOPY + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
        assert llm.complete(msgs, max_tokens=10)[0] == plain(model, tok, llm.prompt_ids(msgs), 10)
    finally:
        model.load_state_dict(old, assign=True)


def test_sessions_follow_a_model_moved_to_another_dtype_or_a_raised_max_len(tiny):
    """A session's K/V buffers were made for the model's dtype and the LLM's max_len at the time. After
    model.float() (or .to(device)) they must be rebuilt, not written into (an attention dtype error, or K/V
    silently rounded to the old precision); a raised max_len must not overflow the old buffers.
    Oracle: a fresh full prefill of the same conversation on the model as it is now."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=256)
    llm.complete(LOOPY, max_tokens=10)
    msgs = LOOPY + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
    try:
        model.float()  # float64 weights that came from float32: the round trip back is exact
        assert llm.complete(msgs, max_tokens=10)[0] == plain(model, tok, llm.prompt_ids(msgs), 10)
        assert llm.sessions["agent"].cache.k[0].dtype == torch.float32
    finally:
        model.double()
    llm.complete(msgs, max_tokens=10)
    llm.max_len = 512
    longer = msgs + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "more words " * 60}]
    n = len(llm.prompt_ids(longer))
    assert 256 < n + 10 <= 512
    assert llm.complete(longer, max_tokens=10)[0] == plain(model, tok, llm.prompt_ids(longer), 10)


def test_writes_torch_does_not_count_are_not_seen_until_the_sessions_are_cleared(tiny):
    """The documented limit of the weights check, pinned so the docstring stays true: an in-place write through
    `.data` keeps the parameter's version counter, so the session reuses K/V of the old weights; after
    `llm.sessions.clear()` the reply equals a fresh full prefill again (the oracle)."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=0)
    llm.complete(LOOPY, max_tokens=10)
    k_proj = model.model.layers[0].self_attn.k_proj.weight
    saved, version = k_proj.detach().clone(), k_proj._version
    msgs = LOOPY + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
    try:
        k_proj.data.mul_(3.0)
        assert k_proj._version == version  # invisible to the version counter: why it cannot be detected cheaply
        want = plain(model, tok, llm.prompt_ids(msgs), 10)
        llm.sessions.clear()
        assert llm.complete(msgs, max_tokens=10)[0] == want
    finally:
        k_proj.data.copy_(saved)
