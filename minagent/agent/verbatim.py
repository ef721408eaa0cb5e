"""Snapping a model's "word for word" copy back onto the text it copied from.

The context-answer extractor asks the model to copy the sentences that bear on the question. A small model
copies approximately: a digit dropped, a word misspelt, a table cell lost ("Default | 50 Range" for "Default |
500 Range"). The agent's next step reads values out of the extract, so an approximate copy is worse than none:
it states a wrong fact in the manual's own words. Here each sentence the model wrote is replaced by the source
sentence that holds most of its words, and dropped when none holds enough of them, so the extract only ever
holds text that is in the passages. A fragment ("Default | 500") brings back its whole sentence.
"""
from __future__ import annotations

import re
from collections import Counter

# a sentence ends at . ! ? followed by white space; "kis.conf" or "2.5" do not end one
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")  # (punctuation and table bars are in every sentence: they would match anything)


def sentences(text: str) -> list[str]:
    """The sentences of every non-empty line of `text`, in order (a passage's text is one line)."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]


def _words(text: str) -> Counter:
    return Counter(_WORD.findall(text.lower()))


def match(written: Counter, source: Counter) -> tuple[float, float]:
    """(share of the written words the source sentence holds, word-level F1 of the two): the first says the
    model copied from this sentence, the second prefers the sentence closest in length among equals."""
    common = sum((written & source).values())
    if not common:
        return 0.0, 0.0
    return common / sum(written.values()), 2 * common / (sum(written.values()) + sum(source.values()))


def snap_to_source(copy: str, source: str, min_share: float = 0.6) -> list[str]:
    """The source sentences `copy` reproduces, once each, in the order the copy gives them. A copied sentence
    maps to the source sentence that holds the largest share of its words (then the highest F1, then the
    first) when that share is >= min_share; below it (a sentence of the model's own, "No relevant text.") it
    maps to nothing."""
    candidates = [(s, _words(s)) for s in sentences(source)]
    kept: list[str] = []
    for written in sentences(copy):
        words = _words(written)
        best, best_score = None, (0.0, 0.0)
        for text, bag in candidates:
            score = match(words, bag)
            if score > best_score:
                best, best_score = text, score
        if best is not None and best_score[0] >= min_share and best not in kept:
            kept.append(best)
    return kept
