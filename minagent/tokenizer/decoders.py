"""The `decoder` section of tokenizer.json: token strings -> text.

Byte-level BPE needs only ByteLevel: map every character of every token back to its byte, join, and decode
UTF-8 with errors='replace' (a token boundary may cut a multi-byte character; Python replaces each maximal
invalid subsequence with one U+FFFD, as Rust's from_utf8_lossy does). The SentencePiece-style steps
(Replace, ByteFallback, Fuse, Strip, Metaspace) are here too because each is a few lines. Like HF, every step
maps a list of token strings to a new list, and the final list is concatenated.
"""
from __future__ import annotations

import re
from typing import Callable

from .byte_level import token_bytes
from .errors import SpecError

Decoder = Callable[[list[str]], list[str]]
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level(tokens: list[str]) -> list[str]:
    return [b"".join(map(token_bytes, tokens)).decode("utf-8", errors="replace")]


def _byte_fallback(tokens: list[str]) -> list[str]:
    out, pending = [], bytearray()
    for tok in tokens + [None]:
        m = _BYTE_TOKEN.fullmatch(tok) if tok is not None else None
        if m:
            pending.append(int(m.group(1), 16))
            continue
        if pending:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:  # HF: one replacement character per byte of an invalid run
                out.extend("\ufffd" * len(pending))
            pending = bytearray()
        if tok is not None:
            out.append(tok)
    return out


def _strip(content: str, start: int, stop: int) -> Decoder:
    def run(tokens: list[str]) -> list[str]:
        out = []
        for tok in tokens:
            left = 0
            while left < start and tok[left:left + 1] == content:
                left += 1
            right = len(tok)
            while len(tok) - right < stop and right > left and tok[right - 1] == content:
                right -= 1
            out.append(tok[left:right])
        return out
    return run


def _metaspace(replacement: str, prepend_scheme: str) -> Decoder:
    """HF's Metaspace decoder: '▁' -> ' ', except in the first token, where (unless prepend_scheme is "never")
    every '▁' is dropped, not only a leading one ("▁▁", "▁x" -> " x"); spaces already in a token stay."""
    def run(tokens: list[str]) -> list[str]:
        return [tok.replace(replacement, "" if i == 0 and prepend_scheme != "never" else " ")
                for i, tok in enumerate(tokens)]
    return run


def build_decoder(spec: dict | None, where: str = "decoder") -> Decoder:
    """Decoder function for a tokenizer.json decoder spec; SpecError naming `where` for unsupported types."""
    if spec is None:  # HF joins tokens with spaces when there is no decoder
        return lambda tokens: [" ".join(tokens)]
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(where, f"expected an object with a 'type', got {spec!r:.80}")
    kind = spec["type"]
    if kind == "ByteLevel":
        return _byte_level
    if kind == "Sequence":
        steps = [build_decoder(s, f"{where}.decoders[{i}]") for i, s in enumerate(spec["decoders"])]

        def run_all(tokens: list[str]) -> list[str]:
            for step in steps:
                tokens = step(tokens)
            return tokens
        return run_all
    if kind == "Replace":
        pattern, content = spec["pattern"], spec["content"]
        if "String" not in pattern:
            raise SpecError(f"{where}.pattern", f"only String patterns are supported, got {pattern!r}")
        old = pattern["String"]
        return lambda tokens: [t.replace(old, content) for t in tokens]
    if kind == "ByteFallback":
        return _byte_fallback
    if kind == "Fuse":
        return lambda tokens: ["".join(tokens)]
    if kind == "Strip":
        return _strip(spec["content"], int(spec.get("start", 0)), int(spec.get("stop", 0)))
    if kind == "Metaspace":
        return _metaspace(spec.get("replacement", "\u2581"), spec.get("prepend_scheme", "always"))
    raise SpecError(f"{where}.type", f"unsupported decoder {kind!r} "
                     "(supported: ByteLevel, Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace)")


def run_decoder(decoder: Decoder, tokens: list[str]) -> str:
    return "".join(decoder(tokens))
