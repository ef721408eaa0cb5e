"""The Lowercase normalizer against HF tokenizers' own, over every code point.

HF lowercases with Rust's char::to_lowercase (Unicode 17.0 tables in tokenizers 0.23); Python 3.11's str.lower()
is Unicode 14.0 and leaves the capitals assigned since (Cyrillic TJE U+1C89, Latin U+A7CB..., Garay U+10D50...)
as they are, so a Lowercase tokenizer gave other pieces, hence other ids, than tokenizers for them."""
from __future__ import annotations

from tokenizers import normalizers

from minagent.tokenizer.normalizers import build_normalizer

SEPARATOR = "\x00"  # lowercases to itself in both


def _every_code_point():
    return [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000]


def test_lowercase_matches_tokenizers_on_every_code_point():
    ours, theirs = build_normalizer({"type": "Lowercase"}), normalizers.Lowercase()
    chars = _every_code_point()
    differ = []
    for i in range(0, len(chars), 8192):
        batch = chars[i:i + 8192]
        expected = theirs.normalize_str(SEPARATOR.join(batch)).split(SEPARATOR)
        assert len(expected) == len(batch)
        differ += [hex(ord(c)) for c, want in zip(batch, expected) if ours(c) != want]
    assert differ == []


def test_lowercase_of_new_capitals_in_running_text():
    text = "Tje \u1c89 and Rams horn \ua7cb, Garay \U00010d50 \u03a3"
    ours = build_normalizer({"type": "Sequence", "normalizers": [{"type": "Lowercase"}]})
    assert ours(text) == normalizers.Lowercase().normalize_str(text)
