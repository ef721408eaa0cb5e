"""Sampling, stop rules and streaming.

Oracles: transformers' logits warpers for temperature/top-k/top-p; for stop strings and streaming, a
hand-checkable toy tokenizer (token i decodes to one known character) so the expected text is computed by hand.
"""
import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from minagent import load_model
from minagent.generation import SamplingParams, generate, warp_logits

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?\n"


class CharTokenizer:
    """Token i is the character ALPHABET[i % 32]: decode is obvious, so expected texts are easy to state."""

    def decode(self, ids):
        return "".join(ALPHABET[i % len(ALPHABET)] for i in ids)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.8), (0.5, 50, 0.3)])
def test_warping_matches_transformers(temperature, top_k, top_p):
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(3)) * 3
    want = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        want = TopKLogitsWarper(top_k)(None, want)
    if top_p < 1:
        want = TopPLogitsWarper(top_p)(None, want)
    got = warp_logits(logits, SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(hf_checkpoint):
    model = load_model(hf_checkpoint("qwen3")[0])
    prompt = [[5, 6, 7, 8]]
    a = generate(model, prompt, SamplingParams(max_new_tokens=12, temperature=1.0, seed=11))[0].token_ids
    b = generate(model, prompt, SamplingParams(max_new_tokens=12, temperature=1.0, seed=11))[0].token_ids
    c = generate(model, prompt, SamplingParams(max_new_tokens=12, temperature=1.0, seed=12))[0].token_ids
    assert a == b and a != c
    greedy = generate(model, prompt, SamplingParams(max_new_tokens=12))[0].token_ids
    assert generate(model, prompt, SamplingParams(max_new_tokens=12, temperature=2.0, top_k=1,
                                                  seed=5))[0].token_ids == greedy


def test_stop_id_ends_the_row_and_is_not_returned(hf_checkpoint):
    model = load_model(hf_checkpoint("llama-gqa")[0])
    full = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=12))[0]
    stop = full.token_ids[5]
    cut = full.token_ids.index(stop)
    got = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=12, stop_ids=[stop]))[0]
    assert got.token_ids == full.token_ids[:cut] and got.finish_reason == "stop_id"
    assert full.finish_reason == "length" and len(full.token_ids) == 12


def test_stop_string_cuts_text_and_streaming_never_shows_it(hf_checkpoint):
    model, tok = load_model(hf_checkpoint("llama-gqa")[0]), CharTokenizer()
    full = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=24), tokenizer=tok)[0]
    assert full.text == tok.decode(full.token_ids)
    stop = full.text[9:12]  # a three-character stop string that straddles several tokens
    streamed = []
    got = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=24, stop_strings=[stop]), tokenizer=tok,
                   on_text=lambda row, t: streamed.append(t))[0]
    assert got.text == full.text[:full.text.index(stop)]
    assert got.finish_reason == "stop_string"
    assert "".join(streamed) == got.text and all(stop not in s for s in streamed)


def test_streaming_pieces_add_up_per_row_in_a_batch(hf_checkpoint):
    model, tok = load_model(hf_checkpoint("qwen2-tied")[0]), CharTokenizer()
    pieces = {0: [], 1: []}
    out = generate(model, [[4, 5], [6, 7, 8, 9]], SamplingParams(max_new_tokens=9), tokenizer=tok,
                   on_text=lambda row, t: pieces[row].append(t))
    for row in (0, 1):
        assert "".join(pieces[row]) == out[row].text == tok.decode(out[row].token_ids)


def test_bad_generation_arguments_are_explained(hf_checkpoint):
    model = load_model(hf_checkpoint("qwen3")[0])
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]])
    with pytest.raises(ValueError, match="need a tokenizer"):
        generate(model, [[1]], SamplingParams(stop_strings=["x"]))
    with pytest.raises(ValueError, match="padding_side"):
        generate(model, [[1], [1, 2]], padding_side="middle")


@pytest.mark.parametrize("field,value,hf_rejects", [
    ("temperature", -0.5, lambda v: TemperatureLogitsWarper(v)),
    ("temperature", float("nan"), lambda v: TemperatureLogitsWarper(v)),
    ("top_k", -3, lambda v: TopKLogitsWarper(v)),
    ("top_p", 1.5, lambda v: TopPLogitsWarper(v)),
    ("top_p", -0.1, lambda v: TopPLogitsWarper(v)),
    ("max_new_tokens", -1, lambda v: GenerationConfig(max_new_tokens=v).validate(strict=True)),
])
def test_out_of_range_settings_are_refused_like_transformers(field, value, hf_rejects):
    """transformers refuses these values (ValueError); they used to be taken silently here (a negative temperature
    decoded greedily, top_k=-3 or top_p=1.5 switched the filter off) or failed as "KV cache full"."""
    with pytest.raises(ValueError):
        hf_rejects(value)
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field} must be"):
        SamplingParams(**{field: value})
    SamplingParams(max_new_tokens=0, top_p=0.0, top_k=0, temperature=0.0)  # the edges that mean something here


def test_prompt_ids_outside_the_vocabulary_are_named(hf_checkpoint):
    model = load_model(hf_checkpoint("qwen3")[0])  # vocabulary of 257
    for bad in (257, -1):
        with pytest.raises(ValueError, match=rf"prompt 1 holds token id {bad}, outside the model's vocabulary of 257"):
            generate(model, [[1, 2], [3, bad]], SamplingParams(max_new_tokens=2))


def test_a_bare_stop_string_is_one_stop_string_and_a_bare_stop_id_one_id(hf_checkpoint):
    """transformers' GenerationConfig takes stop_strings as "str or list[str]" and eos_token_id as "int or
    list[int]"; a bare string used to be iterated as a set of one-character stop strings (the reply cut at the first
    of its characters), a bare id failed with "'int' object is not iterable". Expected texts are hand-checkable
    (CharTokenizer: one character per token)."""
    model, tok = load_model(hf_checkpoint("llama-gqa")[0]), CharTokenizer()
    full = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=24), tokenizer=tok)[0]
    stop = full.text[9:12]
    # read as a set of characters, the stop string would cut earlier: the test can tell the two apart
    assert min(full.text.index(c) for c in stop) < full.text.index(stop)
    got = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=24, stop_strings=stop), tokenizer=tok)[0]
    assert got.text == full.text[:full.text.index(stop)] and got.finish_reason == "stop_string"
    later = SamplingParams(max_new_tokens=24)
    later.stop_strings = stop  # set after construction
    assert generate(model, [[1, 2, 3]], later, tokenizer=tok)[0].text == got.text
    stop_id = full.token_ids[4]
    got = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=24, stop_ids=stop_id))[0]
    assert got.token_ids == full.token_ids[:full.token_ids.index(stop_id)] and got.finish_reason == "stop_id"
    with pytest.raises(ValueError, match=r"SamplingParams\.stop_strings must be a string or a sequence of strings"):
        SamplingParams(stop_strings=["ok", 7])


@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.5, 0.9])
def test_top_p_keeps_the_same_tokens_as_transformers_when_logits_tie(top_p):
    """Logits that tie (few distinct values, as bf16 logits often are): the filtered distribution must be
    transformers' TopPLogitsWarper's, token for token. A walk from the most likely token down kept the lower id
    of two tied tokens at the boundary where transformers keeps the higher one."""
    logits = torch.randint(-3, 3, (64, 40), generator=torch.Generator().manual_seed(0)).float()
    logits[:, :2] = 3.0  # two tied most likely tokens: top_p=0 keeps one of them
    want = TopPLogitsWarper(top_p)(None, logits.clone())
    got = warp_logits(logits, SamplingParams(temperature=1.0, top_p=top_p))
    torch.testing.assert_close(got.softmax(-1), want.softmax(-1), rtol=0, atol=1e-6)


def test_prefill_computes_the_head_only_where_transformers_does(hf_checkpoint, monkeypatch):
    """The prompt's logits are needed at its last position only; computing [B, T, vocab] made a long prompt cost
    gigabytes (8k tokens x a 152k vocabulary = 4.9 GB in fp32). Oracle: the positions transformers' generate
    feeds its lm_head (logits_to_keep=1), counted with a forward hook."""
    import kernels

    path, hf = hf_checkpoint("qwen2-tied")
    model = load_model(path)
    prompts = [list(range(3, 63)), list(range(5, 45))]  # 60 and 40 tokens
    hf_rows = []
    handle = hf.lm_head.register_forward_hook(lambda m, args, out: hf_rows.append(args[0].shape[1]))
    try:
        hf.generate(torch.tensor([prompts[0]]), max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=0)
    finally:
        handle.remove()
    head_rows, linear = [], kernels.linear

    def counting_linear(x, weight, bias=None):
        if weight is model.lm_head.weight:
            head_rows.append(x.shape[-2])
        return linear(x, weight, bias)

    monkeypatch.setattr(kernels, "linear", counting_linear)
    for batch in ([prompts[0]], prompts):
        head_rows.clear()
        generate(model, batch, SamplingParams(max_new_tokens=3))
        assert head_rows == hf_rows == [1, 1, 1]
