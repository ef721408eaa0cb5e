"""Where HF tokenizers' Unicode tables and Python's `unicodedata` disagree, as data.

1. General categories of the code points assigned in Unicode 15.0, 15.1 and 16.0 (ADDED_SINCE_UNICODE_14).

HF tokenizers matches its pre-tokenizer regexes with Oniguruma's Unicode 16.0 tables and its single_word rule with
the regex crate's, also 16.0; Python's `unicodedata` is older before Python 3.14 (14.0 on 3.11, 15.1 on 3.13)
and calls these ~10,300 code points unassigned (Cn). Left at that, `\\p{L}` misses an Egyptian hieroglyph of
Extension A or a CJK Extension H ideograph, so "\\U000138ef'R" splits differently from HF ("'R" is one piece
there) and the ids differ. The table fills the gap: one entry per category, hex ranges separated by spaces. It
was read off tokenizers 0.23 itself (`\\p{Lu}`, `\\p{Ll}`, ... matched against every code point Python 3.11 calls
Cn; tests/test_tokenizer_review_unicode.py repeats that measurement). It is only consulted for code points the
running Python reports as Cn, so a newer Python's own data always wins.

2. The numbers Unicode 17.0 added, which Rust's char::is_numeric already knows (RUST_NUMBERS_ADDED_IN_UNICODE_17).

3. The other way round: HF normalizes (NFC, ...) with Unicode 9.0 tables, so code points that later releases gave a
combining class or a decomposition are left alone there (UNKNOWN_TO_HF_NORMALIZERS).
"""
from __future__ import annotations

import unicodedata
from bisect import bisect_right
from functools import lru_cache

ADDED_SINCE_UNICODE_14 = {
    "Lu": "1C89 A7CB-A7CC A7DA A7DC 10D50-10D65",
    "Ll": "1C8A A7CD A7DB 10D70-10D85 1DF25-1DF2A",
    "Lm": "10D4E 10D6F 16D40-16D42 16D6B-16D6C 1E030-1E06D 1E4EB",
    "Lo": "105C0-105F3 10D4A-10D4D 10D4F 10EC2-10EC4 1123F-11240 11380-11389 1138B 1138E 11390-113B5 113B7 "
        "113D1 113D3 11BC0-11BE0 11F02 11F04-11F10 11F12-11F33 1342F 13441-13446 13460-143FA 16100-1611D "
        "16D43-16D6A 18CFF 1B132 1B155 1E4D0-1E4EA 1E5D0-1E5ED 1E5F0 2B739 2EBF0-2EE5D 31350-323AF",
    "Mn": "897 ECE 10D69-10D6D 10EFC-10EFF 11241 113BB-113C0 113CE 113D0 113D2 113E1-113E2 11F00-11F01 "
        "11F36-11F3A 11F40 11F42 11F5A 13440 13447-13455 1611E-16129 1612D-1612F 1E08F 1E4EC-1E4EF "
        "1E5EE-1E5EF",
    "Mc": "CF3 113B8-113BA 113C2 113C5 113C7-113CA 113CC-113CD 113CF 11F03 11F34-11F35 11F3E-11F3F 11F41 "
        "1612A-1612C",
    "Nd": "10D40-10D49 116D0-116E3 11BF0-11BF9 11F50-11F59 16130-16139 16D70-16D79 1CCF0-1CCF9 1E4F0-1E4F9 "
        "1E5F1-1E5FA",
    "No": "1D2C0-1D2D3",
    "Pd": "10D6E",
    "Po": "1B4E-1B4F 1B7F 113D4-113D5 113D7-113D8 11B00-11B09 11BE1 11F43-11F4F 16D6D-16D6F 1E5FF",
    "Sm": "10D8E-10D8F",
    "So": "2427-2429 2FFC-2FFF 31E4-31E5 31EF 1CC00-1CCEF 1CD00-1CEB3 1F6DC 1F774-1F776 1F77B-1F77F 1F7D9 "
        "1F8B2-1F8BB 1F8C0-1F8C1 1FA75-1FA77 1FA87-1FA89 1FA8F 1FAAD-1FAAF 1FABB-1FABF 1FAC6 1FACE-1FACF "
        "1FADA-1FADC 1FADF 1FAE8-1FAE9 1FAF7-1FAF8 1FBCB-1FBEF",
    "Cf": "13439-1343F",
}

# Rust's char::is_numeric (the Digits pre-tokenizer) is one release ahead, on Unicode 17.0, which added these
# numbers (Sharada digits, Yangqin numerals); measured the same way, with pre_tokenizers.Digits.
RUST_NUMBERS_ADDED_IN_UNICODE_17 = "11DE0-11DE9 16FF4-16FF6"

# HF's normalizers (NFC, NFD, NFKC, NFKD) run on older tables (Unicode 9.0): these code points, assigned later with a
# canonical combining class or a decomposition (or parts of a later composition, like Dives Akuru's 11935 + 11930
# = 11938), are unassigned to them, so they are left as they are and never reordered, decomposed or composed,
# where Python would reorder U+1DFC U+1ACD. Measured against tokenizers 0.23: every code point Python 3.11 gives a
# combining class or a decomposition, alone, after "a" and before U+0334, and as its decomposition recomposed.
UNKNOWN_TO_HF_NORMALIZERS = (
    "7FD 898-89F 8CA-8D3 9FE C3C D3B-D3C EBA 1715 1ABF-1ACE 1DF6-1DFA 32FF A7F2-A7F4 A82C AB69 "
    "10781-10785 10787-107B0 107B2-107BA 10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11070 1133B "
    "1145E 11839-1183A 11930 11935 11938 1193D-1193E 11943 119E0 11A34 11A47 11A99 11D42 11D44-11D45 "
    "11D97 16FF0-16FF1 1E130-1E136 1E2AE 1E2EC-1E2EF 1F16C 1FBF0-1FBF9")


def _parse(spec: str) -> list[tuple[int, int]]:
    ranges = []
    for item in spec.split():
        lo, _, hi = item.partition("-")
        ranges.append((int(lo, 16), int(hi or lo, 16)))
    return ranges


@lru_cache(maxsize=1)
def added_ranges() -> dict[str, list[tuple[int, int]]]:
    """Category -> sorted inclusive ranges of the newly assigned code points."""
    return {category: _parse(spec) for category, spec in ADDED_SINCE_UNICODE_14.items()}


def unknown_to_hf_normalizers() -> list[tuple[int, int]]:
    return _parse(UNKNOWN_TO_HF_NORMALIZERS)


def rust_numbers_added_in_unicode_17() -> list[tuple[int, int]]:
    """Those of RUST_NUMBERS_ADDED_IN_UNICODE_17 that the running Python calls Cn."""
    return [(lo, hi) for lo, hi in _parse(RUST_NUMBERS_ADDED_IN_UNICODE_17)
            if unicodedata.category(chr(lo)) == "Cn"]


@lru_cache(maxsize=1)
def _lookup() -> tuple[list[int], list[tuple[int, str]]]:
    """Range starts (for bisect) and (range end, category), all categories merged in code point order."""
    merged = sorted((lo, hi, cat) for cat, ranges in added_ranges().items() for lo, hi in ranges)
    return [lo for lo, _, _ in merged], [(hi, cat) for _, hi, cat in merged]


def category(ch: str) -> str:
    """unicodedata.category, with the Unicode 15.0-16.0 categories for what the running Python calls Cn."""
    cat = unicodedata.category(ch)
    if cat != "Cn":
        return cat
    starts, ends = _lookup()
    i = bisect_right(starts, ord(ch)) - 1
    if i >= 0 and ord(ch) <= ends[i][0]:
        return ends[i][1]
    return cat


# 4. HF's Lowercase normalizer is Rust's char::to_lowercase, on Unicode 17.0 tables: capitals assigned in 15.0-17.0
# (Cyrillic TJE, Latin letters of A7Cx-A7Dx, Garay, Beria Erfe) lowercase there, while an older Python's str.lower()
# leaves them. "lo-hi>target": lo..hi lowercase to target, target+1, ... Measured with tokenizers 0.23's
# normalizers.Lowercase over every code point (tests/test_tokenizer_review_lowercase.py repeats it).
LOWERCASE_ADDED = ("1C89>1C8A A7CB>264 A7CC>A7CD A7CE>A7CF A7D2>A7D3 A7D4>A7D5 A7DA>A7DB A7DC>19B "
                   "10D50-10D65>10D70 16EA0-16EB8>16EBB")


@lru_cache(maxsize=1)
def lowercase_added() -> dict[int, int]:
    """Code point -> its lowercase, for the capitals of LOWERCASE_ADDED the running Python does not lowercase."""
    table = {}
    for item in LOWERCASE_ADDED.split():
        source, _, target = item.partition(">")
        (lo, hi), = _parse(source)
        for offset in range(hi - lo + 1):
            if chr(lo + offset).lower() == chr(lo + offset):   # a newer Python knows it: its own data wins
                table[lo + offset] = int(target, 16) + offset
    return table
