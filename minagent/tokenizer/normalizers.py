"""The `normalizer` section of tokenizer.json, as a plain str -> str function.

Qwen2 declares NFC: text is composed (e + combining acute -> é) before pre-tokenization, so both spellings
encode identically. HF's NFC tables are Unicode 9.0, Python's newer, so the few later marks that Python would
reorder or compose are left alone, as HF leaves them. Other byte-level tokenizers (GPT-2, SmolLM2, Llama-3) have
no normalizer. The few other simple types are supported because they cost a line each; anything else is
rejected by name.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

from .errors import SpecError
from .unicode_additions import lowercase_added, unknown_to_hf_normalizers
from .unicode_regex import compile_pattern, is_whitespace, one_char_of

Normalizer = Callable[[str], str]


def _strip_whitespace(text: str, left: bool, right: bool) -> str:
    start, stop = 0, len(text)
    while left and start < stop and is_whitespace(text[start]):
        start += 1
    while right and stop > start and is_whitespace(text[stop - 1]):
        stop -= 1
    return text[start:stop]


@lru_cache(maxsize=1)
def _capitals_added() -> tuple[str, ...]:
    """The capitals that Rust's newer tables lowercase and this Python does not (lowercase_added). Looked for
    one by one with `in`: str.find skips a whole text in a fraction of the time a regex character class takes."""
    return tuple(map(chr, sorted(lowercase_added())))


def _lowercase(text: str) -> str:
    """HF lowercases character by character (Rust's char::to_lowercase, Unicode 17.0): Σ is always σ, where
    str.lower() writes a word-final Σ as ς; and the capitals assigned after this Python's Unicode version
    (unicode_additions.LOWERCASE_ADDED) lowercase too. Every other character lowercases the same either way."""
    lowered = "".join(c.lower() for c in text) if "\u03a3" in text else text.lower()
    if not lowered.isascii() and any(c in lowered for c in _capitals_added()):
        lowered = lowered.translate(lowercase_added())
    return lowered


@lru_cache(maxsize=1)
def _unknown_to_hf() -> re.Pattern:
    """One character HF's normalizers leave alone (see unicode_additions.UNKNOWN_TO_HF_NORMALIZERS), captured."""
    return re.compile(f"({one_char_of(unknown_to_hf_normalizers())})")


def _unicode_normalizer(form: str) -> Normalizer:
    """unicodedata.normalize as HF's older tables apply it: a code point they do not know is, for them, a starter
    that nothing combines with, so the text on either side of it is normalized on its own and it stays as is."""
    frozen = _unknown_to_hf()

    def run(text: str) -> str:
        # Text Python finds normalized already is normalized for HF too (its older tables only make fewer
        # characters decompose, reorder or compose), and the quick check is ~15x faster than the search below
        if unicodedata.is_normalized(form, text):
            return text
        if frozen.search(text) is None:
            return unicodedata.normalize(form, text)
        parts = frozen.split(text)  # text, frozen char, text, ...: normalize the text parts only
        return "".join(p if i % 2 else unicodedata.normalize(form, p) for i, p in enumerate(parts))
    return run


def build_normalizer(spec: dict | None, where: str = "normalizer") -> Normalizer | None:
    """Function for a tokenizer.json normalizer spec (None when there is nothing to do).
    Raises SpecError naming `where` (the JSON path) for types we do not implement."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(where, f"expected an object with a 'type', got {spec!r:.80}")
    kind = spec["type"]
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return _unicode_normalizer(kind)
    if kind == "Lowercase":
        return _lowercase
    if kind == "Sequence":
        steps = [build_normalizer(s, f"{where}.normalizers[{i}]") for i, s in enumerate(spec["normalizers"])]
        steps = [s for s in steps if s is not None]

        def run_all(text: str) -> str:
            for step in steps:
                text = step(text)
            return text
        return run_all
    if kind == "Prepend":
        prefix = spec["prepend"]
        return lambda text: prefix + text if text else text
    if kind == "Replace":
        pattern, content = spec["pattern"], spec["content"]
        if "String" in pattern:
            old = pattern["String"]
            return lambda text: text.replace(old, content)
        regex = compile_pattern(pattern["Regex"])
        return lambda text: regex.sub(lambda _m: content, text)
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        return lambda text: _strip_whitespace(text, left, right)
    raise SpecError(f"{where}.type", f"unsupported normalizer {kind!r} "
                     "(supported: NFC, NFD, NFKC, NFKD, Lowercase, Sequence, Prepend, Replace, Strip)")
