"""Run the pre-tokenizer regexes of HF tokenizer.json files with Python's built-in `re`.

HF `tokenizers` compiles those patterns with Oniguruma, where `\\p{L}` is any letter, `\\p{N}` any number and
`\\s` the Unicode White_Space set. Python's `re` has no `\\p{..}` at all, and its `\\s` also matches
U+001C..U+001F (which Oniguruma treats as punctuation-like symbols), so the Qwen/Llama-3 pattern cannot be
used as is. The third-party `regex` package is not allowed at runtime, and a hand-written scanner would loop
over characters in Python. Instead we rewrite the pattern once: every `\\p{X}`, `\\s`, `\\d` and `\\w` becomes an
explicit character class built from `unicodedata` general categories, and every [...] class is resolved to
its set of code points. The rewritten pattern then runs in re's C engine (see _emit_set for the one trick that
keeps big classes fast). Building the category table takes ~0.2 s, once, on first use.

Everything else (alternation order, greedy/lazy quantifiers, lookaheads, scoped `(?i:...)`) has the same
backtracking semantics in both engines. Oniguruma's tables are Unicode 16.0; code points that an older Python's
unicodedata calls unassigned get their 16.0 category from unicode_additions.py.
"""
from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from itertools import groupby

from .unicode_additions import added_ranges, rust_numbers_added_in_unicode_17

Ranges = list[tuple[int, int]]  # sorted, non-overlapping, inclusive

# Long property names that appear in the wild; everything else must be a general category like L, Lu, N, Nd.
_ALIASES = {"Letter": "L", "Number": "N", "Mark": "M", "Punctuation": "P", "Symbol": "S",
            "Separator": "Z", "Other": "C"}


@lru_cache(maxsize=1)
def _ranges_by_category() -> dict[str, Ranges]:
    """Two-letter general category (Lu, Nd, ...) -> its code point ranges, from one pass over all of Unicode,
    plus the code points Oniguruma knows from Unicode 15.0-16.0 that this Python's unicodedata calls Cn."""
    table: dict[str, Ranges] = {}
    start = 0
    for category, run in groupby(map(unicodedata.category, map(chr, range(sys.maxunicode + 1)))):
        n = sum(1 for _ in run)
        table.setdefault(category, []).append((start, start + n - 1))
        start += n
    unassigned = table.get("Cn", [])
    for category, ranges in added_ranges().items():
        newly = _intersect(ranges, unassigned)
        table[category] = _union(table.get(category, []), newly)
        table["Cn"] = _intersect(table["Cn"], _complement(newly))
    return table


def _union(*parts: Ranges) -> Ranges:
    merged: Ranges = []
    for lo, hi in sorted(r for part in parts for r in part):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    return _complement(_union(_complement(a), _complement(b)))


def _complement(ranges: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= sys.maxunicode:
        out.append((nxt, sys.maxunicode))
    return out


@lru_cache(maxsize=None)
def property_ranges(name: str) -> tuple[tuple[int, int], ...]:
    """Ranges of a Unicode general category given as `L`, `Lu`, `Letter`, ... (what `\\p{name}` matches)."""
    name = _ALIASES.get(name, name)
    table = _ranges_by_category()
    if len(name) == 1:
        parts = [r for cat, r in table.items() if cat[0] == name]
    else:
        parts = [table[name]] if name in table else []
    if not parts:
        raise ValueError(f"unsupported Unicode property \\p{{{name}}} (only general categories like L, N, Lu)")
    return tuple(_union(*parts))


@lru_cache(maxsize=1)
def whitespace_ranges() -> tuple[tuple[int, int], ...]:
    """Oniguruma's Unicode `\\s` (and Rust's char::is_whitespace): U+0009..U+000D, U+0085, and categories Z*."""
    return tuple(_union([(0x09, 0x0D), (0x85, 0x85)], list(property_ranges("Z"))))


def is_whitespace(ch: str) -> bool:
    """Unicode White_Space; unlike str.isspace() it is False for U+001C..U+001F, like Rust and Oniguruma."""
    return ch.isspace() and not ("\x1c" <= ch <= "\x1f")


# Oniguruma's Unicode \\w, measured code point by code point against HF tokenizers: letters, marks, Nd, Nl, Pc
# and the circled/squared Latin letters, which Unicode files as symbols but calls Alphabetic (Ⓐ, 🄰, 🅐, 🅰); no
# other numbers (௰ ৴ ⑴), except that a bare \\w (not one inside [...]) also takes the Latin-1 ones ² ³ ¹ ¼ ½ ¾.
_WORD_EXTRA = [(0xB2, 0xB3), (0xB9, 0xB9), (0xBC, 0xBE)]
ALPHABETIC_SYMBOLS = [(0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189)]


# Escapes Oniguruma defines over Unicode that Python either lacks or defines differently.
def _escape_class(letter: str, in_class: bool = False) -> Ranges | None:
    """Code point ranges of \\s \\S \\d \\D \\w \\W (`in_class`: written inside [...]), or None for any other
    letter."""
    base = {"s": lambda: list(whitespace_ranges()),
            "d": lambda: list(property_ranges("Nd")),
            "w": lambda: _union(*(list(property_ranges(c)) for c in ("L", "M", "Nd", "Nl", "Pc")),
                                ALPHABETIC_SYMBOLS, [] if in_class else _WORD_EXTRA)}
    if letter.lower() not in base:
        return None
    ranges = base[letter.lower()]()
    return _complement(ranges) if letter.isupper() else ranges


_CHAR_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b", "0": "\0"}


def _class_body(ranges: Ranges) -> str:
    def esc(cp: int) -> str:
        return chr(cp) if cp < 0x80 and chr(cp).isalnum() else f"\\U{cp:08x}"
    return "".join(esc(lo) if lo == hi else f"{esc(lo)}-{esc(hi)}" for lo, hi in ranges)


def _emit_set(ranges: Ranges) -> str:
    """A Python pattern matching one character of `ranges`, fast in sre.

    sre keeps the BMP part of a class as a bitmap but tests the ranges above U+FFFF one by one, for every
    character that is not in the bitmap: with \\p{L}'s ~270 such ranges that made the Qwen regex 4x slower.
    So the supplementary part becomes a second alternative behind a one-range lookahead."""
    bmp = [(lo, min(hi, 0xFFFF)) for lo, hi in ranges if lo <= 0xFFFF]
    astral = [(max(lo, 0x10000), hi) for lo, hi in ranges if hi > 0xFFFF]
    parts = ([f"[{_class_body(bmp)}]"] if bmp else []) + \
        ([f"(?=[\\U00010000-\\U0010ffff])[{_class_body(astral)}]"] if astral else [])
    if not parts:
        return "(?!)"  # the empty set matches nothing
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _property(pattern: str, i: int) -> tuple[Ranges, int]:
    """`\\p{X}` / `\\P{X}` / `\\pX` / `\\p{^X}` starting at pattern[i] -> (ranges, index after it)."""
    negated = pattern[i + 1] == "P"
    if i + 2 < len(pattern) and pattern[i + 2] == "{":
        close = pattern.find("}", i + 3)
        if close < 0:
            raise ValueError(f"unterminated \\{pattern[i + 1]}{{ at offset {i}")
        name, after = pattern[i + 3:close], close + 1
    else:
        name, after = pattern[i + 2:i + 3], i + 3
    if name.startswith("^"):
        name, negated = name[1:], not negated
    ranges = list(property_ranges(name))
    return (_complement(ranges) if negated else ranges), after


def _class_item(pattern: str, i: int) -> tuple[Ranges | str, int]:
    """One element inside [...] at pattern[i]: a set (ranges) or a single character (str)."""
    ch = pattern[i]
    if ch != "\\":
        return ch, i + 1
    if i + 1 >= len(pattern):
        raise ValueError("pattern ends with a lone backslash")
    letter = pattern[i + 1]
    if letter in "pP":
        return _property(pattern, i)
    ranges = _escape_class(letter, in_class=True)
    if ranges is not None:
        return ranges, i + 2
    if letter in _CHAR_ESCAPES:
        return _CHAR_ESCAPES[letter], i + 2
    for prefix, width in (("x", 2), ("u", 4), ("U", 8)):
        if letter == prefix:
            return chr(int(pattern[i + 2:i + 2 + width], 16)), i + 2 + width
    return letter, i + 2  # \] \\ \- \[ \. ... stand for the character itself


def _parse_class(pattern: str, i: int) -> tuple[Ranges, int]:
    """The set of a character class whose '[' is at pattern[i] -> (ranges, index after its ']')."""
    i += 1
    negated = pattern.startswith("^", i)
    i += negated
    parts: list[Ranges] = []
    first = True
    while True:
        if i >= len(pattern):
            raise ValueError("unterminated character class")
        if pattern[i] == "]" and not first:
            i += 1
            break
        if pattern[i] == "[" or pattern.startswith("&&", i):
            raise ValueError(f"nested classes and && inside [...] are not supported (offset {i})")
        first = False
        item, i = _class_item(pattern, i)
        if isinstance(item, str) and pattern.startswith("-", i) and i + 1 < len(pattern) and pattern[i + 1] != "]":
            high, i = _class_item(pattern, i + 1)
            if not isinstance(high, str) or ord(high) < ord(item):
                raise ValueError(f"bad range in character class (offset {i})")
            parts.append([(ord(item), ord(high))])
        else:
            parts.append([(ord(item), ord(item))] if isinstance(item, str) else item)
    ranges = _union(*parts)
    return (_complement(ranges) if negated else ranges), i


def translate(pattern: str) -> str:
    """Rewrite an Oniguruma pattern as an equivalent Python `re` pattern (see module docstring)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "[":
            ranges, i = _parse_class(pattern, i)
            out.append(_emit_set(ranges))
        elif ch == "\\":
            if i + 1 >= n:
                raise ValueError("pattern ends with a lone backslash")
            letter = pattern[i + 1]
            if letter in "pP":
                ranges, i = _property(pattern, i)
                out.append(_emit_set(ranges))
            elif _escape_class(letter) is not None:
                out.append(_emit_set(_escape_class(letter)))
                i += 2
            else:
                out.append(pattern[i:i + 2])  # \n \r \\ \. ... mean the same in Python
                i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def one_char_of(ranges: Ranges) -> str:
    """A Python pattern matching one character of `ranges` (inclusive code point pairs), fast in sre."""
    return _emit_set(_union(ranges))


@lru_cache(maxsize=2)
def compile_digits(individual: bool) -> re.Pattern:
    """What HF's Digits pre-tokenizer cuts out: one character (individual) or a run of Rust's char::is_numeric,
    which is \\p{N} on Rust's Unicode 17.0 tables (a few more numbers than Oniguruma's \\p{N}, on 16.0)."""
    numeric = _union(list(property_ranges("N")), rust_numbers_added_in_unicode_17())
    return re.compile(_emit_set(numeric) + ("" if individual else "+"))


@lru_cache(maxsize=64)
def compile_pattern(pattern: str) -> re.Pattern:
    """Compile an Oniguruma-style pattern (as found in tokenizer.json) with Python's `re`."""
    return re.compile(translate(pattern))
