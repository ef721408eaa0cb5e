"""Prompt-lookup drafts: guess the next tokens by finding the last few tokens earlier in the context.

Why. An agent's replies copy a lot: a search query repeats the question's words, a final answer repeats a
passage, code repeats the names of the tools in the system prompt. On a CPU, decoding one token streams every
weight once, and a forward over a handful of tokens costs far less than that many forwards of one (the weights
are read once for all rows; 5 rows cost ~1.4x one on a 2-core AMD EPYC). So when the last `ngram` generated
tokens occurred earlier in the context, the tokens that followed them there are a cheap draft: one forward over
[last token, draft...] checks the whole draft, every draft token that greedy decoding would have produced is
accepted, and the first mismatch is replaced by the model's own choice, so every forward yields at least one
token. (The idea is "prompt lookup decoding", a form of speculative decoding with the context as the draft
model; transformers has it as `prompt_lookup_num_tokens`.)

Greedy only: the accepted tokens are the argmax of the same logits plain decoding computes, up to fp32 rounding
(a forward over several rows sums in another order than over one, which can flip a near-tie).

`NgramIndex` keeps, for each n-gram of the sequence, where it last ended, so a lookup is one dict access and
appending a token one dict store: no rescans of a context thousands of tokens long at every step.
"""
from __future__ import annotations


class NgramIndex:
    """Token ids with an index from each `ngram`-long window to the position just after its latest earlier
    occurrence. `draft(k)` returns up to k tokens that followed the latest earlier occurrence of the sequence's
    last `ngram` tokens (an empty list when there is none)."""

    def __init__(self, ids=(), ngram: int = 3):
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.ngram, self.ids, self._after = ngram, [], {}
        self.extend(ids)

    def extend(self, ids) -> None:
        for tok in ids:
            self.append(tok)

    def append(self, tok: int) -> None:
        n, ids = self.ngram, self.ids
        if len(ids) >= n:  # the window ending at the current last token is followed by `tok` at len(ids)
            self._after[tuple(ids[-n:])] = len(ids)
        ids.append(tok)

    def draft(self, k: int) -> list[int]:
        if k <= 0 or len(self.ids) < self.ngram:
            return []
        start = self._after.get(tuple(self.ids[-self.ngram:]))
        return [] if start is None else self.ids[start:start + k]
