"""The `pre_tokenizer` section of tokenizer.json: cut text into pieces that BPE then encodes one by one.

BPE merges never cross a piece boundary, so these rules decide much of the final tokenization. The types found
in the byte-level tokenizers we target:
  - Qwen2/2.5, Llama-3:  Sequence[Split(regex, Isolated), ByteLevel(use_regex=false)]; the regexes differ only
    in digits: Qwen `\\p{N}` (one digit per piece), Llama-3 `\\p{N}{1,3}` (up to three).
  - GPT-2, SmolLM2 as exported from GGUF:  ByteLevel(use_regex=true) with GPT-2's built-in regex.
  - SmolLM2's own tokenizer.json:  Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)].
  - SentencePiece models converted by transformers:  Metaspace (spaces -> '\u2581', prefix one at the start).
Each step maps one piece to a list of pieces; ByteLevel also rewrites each piece into GPT-2 byte characters.
Splitting follows HF's `SplitDelimiterBehavior` rules exactly, including the merge variants.
"""
from __future__ import annotations

import re
from typing import Callable

from .byte_level import to_byte_chars
from .errors import SpecError
from .unicode_regex import compile_digits, compile_pattern

# The regex ByteLevel(use_regex=true) applies, written in tokenizers' source (taken from GPT-2's encoder.py).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
BEHAVIORS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")

# A step maps one piece to pieces. `at_start` says the piece begins at offset 0 of the caller's text, which only
# Metaspace(prepend_scheme="first") cares about.
Step = Callable[[str, bool], list[str]]


def _segments(text: str, regex: re.Pattern, invert: bool) -> list[tuple[int, int, bool]]:
    """(start, end, is_match) runs covering `text`: the matches and the gaps between them."""
    out, prev = [], 0
    for m in regex.finditer(text):
        start, end = m.span()
        if start > prev:
            out.append((prev, start, invert))
        out.append((start, end, not invert))
        prev = end
    if prev < len(text):
        out.append((prev, len(text), invert))
    return out


def _apply_behavior(segments: list[tuple[int, int, bool]], behavior: str) -> list[tuple[int, int]]:
    """What HF's NormalizedString::split keeps of the runs, per delimiter behavior (spans may be empty)."""
    if behavior == "Isolated":
        return [(s, e) for s, e, _ in segments]
    if behavior == "Removed":
        return [(s, e) for s, e, is_match in segments if not is_match]
    spans: list[list[int]] = []
    previous_match = False
    if behavior == "MergedWithPrevious":
        for s, e, is_match in segments:
            if is_match and not previous_match and spans:
                spans[-1][1] = e
            else:
                spans.append([s, e])
            previous_match = is_match
    elif behavior == "MergedWithNext":
        for s, e, is_match in reversed(segments):
            if is_match and not previous_match and spans:
                spans[-1][0] = s
            else:
                spans.append([s, e])
            previous_match = is_match
        spans.reverse()
    elif behavior == "Contiguous":
        for s, e, is_match in segments:
            if is_match == previous_match and spans:
                spans[-1][1] = e
            else:
                spans.append([s, e])
            previous_match = is_match
    else:
        raise ValueError(f"unknown split behavior {behavior!r}")
    return [(s, e) for s, e in spans]


def regex_split(regex: re.Pattern, behavior: str = "Isolated", invert: bool = False) -> Step:
    """A step that cuts each piece around the matches of `regex`."""
    if behavior == "Isolated" and not invert:  # the common case, without building span tuples
        def isolated(text: str, at_start: bool = False) -> list[str]:
            if regex.groups == 0:  # fast path: findall runs in C; fine when the matches tile the whole text
                pieces = regex.findall(text)
                if sum(map(len, pieces)) == len(text):
                    return pieces if "" not in pieces else [p for p in pieces if p]
            pieces, prev = [], 0
            for m in regex.finditer(text):
                start, end = m.span()
                if start > prev:
                    pieces.append(text[prev:start])
                if end > start:
                    pieces.append(text[start:end])
                prev = end
            if prev < len(text):
                pieces.append(text[prev:])
            return pieces
        return isolated

    def split(text: str, at_start: bool = False) -> list[str]:
        spans = _apply_behavior(_segments(text, regex, invert), behavior)
        return [text[s:e] for s, e in spans if e > s]
    return split


def byte_level(add_prefix_space: bool, use_regex: bool) -> Step:
    """HF ByteLevel: optional leading space, optional GPT-2 regex split, then bytes -> GPT-2 characters.
    The step carries `split_only`, the same without the byte mapping: when ByteLevel is the last step, the
    tokenizer maps a piece only when its BPE result is not cached yet."""
    splitter = regex_split(compile_pattern(GPT2_PATTERN)) if use_regex else (lambda text: [text])

    def split_only(text: str, at_start: bool = False) -> list[str]:
        if add_prefix_space and not text.startswith(" "):
            text = " " + text
        return splitter(text)

    def step(text: str, at_start: bool = False) -> list[str]:
        return [to_byte_chars(piece) for piece in split_only(text)]
    step.split_only = split_only
    return step


def metaspace(replacement: str, prepend_scheme: str, split: bool) -> Step:
    """SentencePiece-style: spaces become '▁', one is prepended (always / only at the start of the text /
    never) unless the piece already starts with one, then optionally split before each '▁'."""
    splitter = regex_split(re.compile(re.escape(replacement)), "MergedWithNext") if split else None

    def step(text: str, at_start: bool = False) -> list[str]:
        text = text.replace(" ", replacement)
        if not text.startswith(replacement) and (prepend_scheme == "always"
                                                 or (prepend_scheme == "first" and at_start)):
            text = replacement + text
        return splitter(text) if splitter else [text]
    return step


def build_pretokenizer(spec: dict | None, where: str = "pre_tokenizer") -> list[Step]:
    """Steps for a tokenizer.json pre_tokenizer spec. Raises SpecError naming `where` for what we lack."""
    if spec is None:
        return []
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(where, f"expected an object with a 'type', got {spec!r:.80}")
    kind = spec["type"]
    if kind == "Sequence":
        return [step for i, s in enumerate(spec["pretokenizers"])
                for step in build_pretokenizer(s, f"{where}.pretokenizers[{i}]")]
    if kind == "ByteLevel":
        return [byte_level(bool(spec.get("add_prefix_space", False)), bool(spec.get("use_regex", True)))]
    if kind == "Split":
        pattern, behavior = spec.get("pattern", {}), spec.get("behavior", "Isolated")
        if behavior not in BEHAVIORS:
            raise SpecError(f"{where}.behavior", f"unknown {behavior!r}, expected one of {BEHAVIORS}")
        if "Regex" in pattern:
            try:
                regex = compile_pattern(pattern["Regex"])
            except (ValueError, re.error) as e:
                raise SpecError(f"{where}.pattern.Regex", f"cannot compile {pattern['Regex']!r}: {e}") from e
        elif "String" in pattern:
            regex = re.compile(re.escape(pattern["String"]))
        else:
            raise SpecError(f"{where}.pattern", f"expected {{'Regex': ...}} or {{'String': ...}}, got {pattern!r}")
        return [regex_split(regex, behavior, bool(spec.get("invert", False)))]
    if kind == "Digits":
        # Rust's char::is_numeric: categories Nd, Nl, No. One match per digit, or runs of digits.
        return [regex_split(compile_digits(bool(spec.get("individual_digits", False))))]
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme", "always" if spec.get("add_prefix_space", True) else "never")
        if scheme not in ("always", "first", "never"):
            raise SpecError(f"{where}.prepend_scheme", f"expected always, first or never, got {scheme!r}")
        return [metaspace(spec.get("replacement", "\u2581"), scheme, bool(spec.get("split", True)))]
    raise SpecError(f"{where}.type", f"unsupported pre-tokenizer {kind!r} "
                     "(supported: ByteLevel, Split, Digits, Metaspace, Sequence)")


def run_pretokenizer(steps: list[Step], text: str, at_start: bool = False) -> list[str]:
    """Apply the steps in order; every step sees every piece the previous one produced."""
    pieces = [text]
    for step in steps:
        pieces = [out for i, piece in enumerate(pieces) for out in step(piece, at_start and i == 0)]
    return pieces
