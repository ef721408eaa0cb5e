"""MinagentLLM against transformers: greedy text from `complete` must equal transformers' greedy `generate` of the
same rendered prompt (fp32, decoded by transformers' tokenizer, cut before the first stop string), whatever the
draft settings, with or without KV reuse, across conversations that grow, get rewritten, shrink or alternate in
sessions, and at the context's edge. Also: a model loaded under torch.inference_mode() (inference-tensor
parameters, no version counters) must work, and bad n / max_tokens are errors naming the argument."""
import copy

import pytest
import torch
import transformers

from minagent import load_model, load_tokenizer
from minagent.agent.llm import MinagentLLM
from training_tiny import tiny_checkpoint

LOOPY = [{"role": "system", "content": "Solve with code."},
         {"role": "user", "content": "What is git log? git log git log"}]
OTHER = [{"role": "system", "content": "You answer questions."},
         {"role": "user", "content": "Explain the rebase command, please, with an example"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tiny_checkpoint(tmp_path_factory.mktemp("review_draftsrev") / "tiny")
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    return d, load_model(d, dtype="float32"), load_tokenizer(d), hf, transformers.AutoTokenizer.from_pretrained(d)


def first_stop_cut(text, stops):
    hits = [text.find(s) for s in stops if s in text]
    return text[:min(hits)] if hits else text


class Oracle:
    """transformers' greedy generate, its tokens decoded by transformers' tokenizer (memoised per prompt)."""

    def __init__(self, hf, hf_tok, stop_ids):
        self.hf, self.hf_tok, self.stop_ids, self.memo = hf, hf_tok, list(stop_ids), {}

    def tokens(self, ids, max_new):
        key = (tuple(ids), max_new)
        if key not in self.memo:
            out = self.hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=max_new, do_sample=False, eos_token_id=self.stop_ids,
                                   pad_token_id=0)[0, len(ids):].tolist() if max_new else []
            self.memo[key] = out
        return self.memo[key]

    def text(self, ids, max_new, stops=()):
        out = self.tokens(ids, max_new)
        ends = [i for i, t in enumerate(out) if t in self.stop_ids]
        return first_stop_cut(self.hf_tok.decode(out[:ends[0]] if ends else out), stops)


def test_a_model_loaded_under_inference_mode_completes_like_transformers(tiny):
    """Parameters made under torch.inference_mode() are inference tensors: reading their version counter raises
    ("Inference tensors do not track version counter"), which made every complete() fail while generate() works.
    Oracle: transformers' greedy generate, over a conversation that reuses the cache and drafts."""
    d, _, tok, hf, hf_tok = tiny
    with torch.inference_mode():
        model = load_model(d, dtype="float32")
    oracle = Oracle(hf, hf_tok, tok.stop_token_ids)
    llm = MinagentLLM(model, tok, max_len=512, draft_tokens=4, draft_ngram=1)
    messages = list(LOOPY)
    for turn in range(2):
        got = llm.complete(messages, max_tokens=16)[0]
        assert got == oracle.text(llm.prompt_ids(messages), 16)
        messages += [{"role": "assistant", "content": got}, {"role": "user", "content": f"turn {turn} git log"}]
    assert llm.complete(messages, max_tokens=8, n=2) == [oracle.text(llm.prompt_ids(messages), 8)] * 2


@pytest.mark.parametrize("draft_tokens,draft_ngram,reuse", [(0, 1, True), (1, 1, True), (8, 1, True),
                                                            (3, 2, False), (4, 3, True), (6, 4, True)])
def test_greedy_equals_transformers_while_history_grows_is_rewritten_shrinks_and_sessions_alternate(
        tiny, draft_tokens, draft_ngram, reuse):
    _, model, tok, hf, hf_tok = tiny
    oracle = Oracle(hf, hf_tok, tok.stop_token_ids)
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=draft_tokens, draft_ngram=draft_ngram,
                      reuse_cache=reuse)
    conversations = {"a": list(LOOPY), "b": list(OTHER)}
    for step in range(3):
        for session, messages in conversations.items():
            got = llm.complete(messages, max_tokens=20, session=session)[0]
            assert got == oracle.text(llm.prompt_ids(messages), 20), (step, session)
            if step == 0 and session == "a":  # an earlier message edited
                messages[1] = {"role": "user", "content": "What is git status? git log"}
            elif step == 1 and session == "b":  # a step dropped
                del messages[-2:]
            else:
                messages += [{"role": "assistant", "content": got}, {"role": "user", "content": f"obs {got[:8]}"}]
        # one session switched to the other conversation: the cache must be rewound to their common prefix
        got = llm.complete(conversations["b"], max_tokens=12, session="a")[0]
        assert got == oracle.text(llm.prompt_ids(conversations["b"]), 12)


def test_stop_strings_and_stop_ids_anywhere_in_the_reply_equal_transformers(tiny):
    """Stop strings taken from every few characters of the reply (straddling token boundaries, inside accepted
    drafts), and each of the reply's tokens made a stop id in turn (then also for n=2)."""
    _, model, tok, hf, hf_tok = tiny
    oracle = Oracle(hf, hf_tok, tok.stop_token_ids)
    ids = MinagentLLM(model, tok).prompt_ids(LOOPY)
    full = oracle.text(ids, 30)
    llms = [MinagentLLM(model, tok, max_len=1024, draft_tokens=dt, draft_ngram=ng) for dt, ng in ((0, 1), (8, 1),
                                                                                                   (4, 2))]
    for start in range(0, len(full) - 1, 4):
        for length in (1, 3):
            stops = (full[start:start + length], "never in the text")
            want = oracle.text(ids, 30, stops)
            for llm in llms:
                assert llm.complete(LOOPY, stop=stops, max_tokens=30)[0] == want, (stops, llm.draft_tokens)
    for stop_id in sorted(set(oracle.tokens(ids, 30)))[:12]:
        stopping = copy.copy(tok)
        stopping.stop_token_ids = list(tok.stop_token_ids) + [stop_id]
        want = Oracle(hf, hf_tok, stopping.stop_token_ids).text(ids, 30)
        llm = MinagentLLM(model, stopping, max_len=1024, draft_tokens=8, draft_ngram=1)
        assert llm.complete(LOOPY, max_tokens=30)[0] == want, stop_id
        assert llm.complete(LOOPY, max_tokens=30, n=2) == [want] * 2, stop_id


@pytest.mark.parametrize("max_tokens", [0, 1, 2, 9, 33])
def test_a_prompt_plus_budget_filling_max_len_exactly_equals_transformers(tiny, max_tokens):
    _, model, tok, hf, hf_tok = tiny
    oracle = Oracle(hf, hf_tok, tok.stop_token_ids)
    ids = MinagentLLM(model, tok).prompt_ids(LOOPY)
    want = oracle.text(ids, max_tokens)
    for draft_tokens, draft_ngram in ((0, 1), (8, 1), (2, 2)):
        llm = MinagentLLM(model, tok, max_len=len(ids) + max_tokens, draft_tokens=draft_tokens,
                          draft_ngram=draft_ngram)
        assert llm.complete(LOOPY, max_tokens=max_tokens) == [want]
        assert llm.complete(LOOPY, max_tokens=max_tokens, n=2) == [want] * 2
        with pytest.raises(Exception, match="does not fit the context"):
            llm.complete(LOOPY, max_tokens=max_tokens + 1)


@pytest.mark.parametrize("kwargs,field", [(dict(n=-1), "n"), (dict(n=0), "n"), (dict(n=2.0), "n"),
                                          (dict(max_tokens=None), "max_tokens"), (dict(max_tokens=-1), "max_tokens"),
                                          (dict(max_tokens=3.0), "max_tokens")])
def test_a_bad_count_is_an_error_naming_the_argument(tiny, kwargs, field):
    """(Hand-checked.) n=-1 failed inside torch.zeros, n=2.0 as a TypeError about zeros(), n=0 gave no completion,
    max_tokens=None a TypeError about adding None, max_tokens=-1 an error naming SamplingParams.max_new_tokens."""
    _, model, tok, _, _ = tiny
    llm = MinagentLLM(model, tok, max_len=256)
    with pytest.raises(ValueError, match=rf"MinagentLLM.complete: {field} must be an integer >= \d, got"):
        llm.complete(LOOPY, **kwargs)
    assert llm.sessions == {}  # refused before anything was prefilled


def test_drafts_never_feed_the_last_token_past_a_sliding_window(tiny, monkeypatch):
    """A sliding-window model answers while the conversation fits its window (minagent attends to every key, the
    same up to the window): plain decoding feeds prompt + max_tokens - 1 tokens, the last token is never fed. A
    draft may not feed it either: one that ran to the budget's end put one token past the window, and the
    window check raised where plain decoding answers. Oracle: transformers' greedy generate (full attention, the
    same inside the window)."""
    d, _, tok, hf, hf_tok = tiny
    oracle = Oracle(hf, hf_tok, tok.stop_token_ids)
    model = load_model(d, dtype="float32")
    window = {}
    monkeypatch.setattr(type(model.config), "attention_window", property(lambda cfg: window.get("span")))
    messages = list(LOOPY)
    prompt = MinagentLLM(model, tok).prompt_ids(messages)
    for budget in range(8, 40, 3):
        window["span"] = len(prompt) + budget - 1        # exactly what plain decoding feeds
        for drafts in (0, 8):
            llm = MinagentLLM(model, tok, max_len=len(prompt) + budget + 64, draft_tokens=drafts, draft_ngram=1)
            assert llm.complete(messages, max_tokens=budget)[0] == oracle.text(prompt, budget), (budget, drafts)
