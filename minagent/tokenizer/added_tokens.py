"""Added tokens (`added_tokens` in tokenizer.json): strings matched in the raw text before anything else.

Special tokens such as <|im_start|> must never be split by the pre-tokenizer or BPE, so HF cuts them out of the
text first and encodes only the text between them. We do the same, with HF's rules:
  - leftmost match wins, and among matches at the same position the longest (aho-corasick LeftmostLongest);
    a regex alternation of the tokens sorted longest-first gives exactly that;
  - `lstrip` / `rstrip` tokens swallow the whitespace before / after them;
  - `single_word` tokens only match when not glued to a word character on either side;
  - tokens with `normalized: false` (all special tokens in practice) match in the raw text, tokens with
    `normalized: true` in the text after the normalizer (NFC) ran.
`parse_special=False` skips tokens marked special, so untrusted text (a retrieved passage containing
"<|im_end|>") is encoded as plain text instead of injecting a control token (HF: split_special_tokens).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SpecError
from .unicode_additions import category
from .unicode_regex import ALPHABETIC_SYMBOLS, is_whitespace


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False

    @classmethod
    def from_json(cls, item: dict, where: str) -> "AddedToken":
        try:
            return cls(id=int(item["id"]), content=str(item["content"]), special=bool(item.get("special", False)),
                       lstrip=bool(item.get("lstrip", False)), rstrip=bool(item.get("rstrip", False)),
                       single_word=bool(item.get("single_word", False)),
                       normalized=bool(item.get("normalized", not item.get("special", False))))
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(where, f"expected {{'id': int, 'content': str, ...}}, got {item!r:.80} ({e})") from e


def _is_word_char(ch: str) -> bool:
    """What the tokenizers library's single_word rule counts as a word character: the Unicode `\\w` of Rust's
    regex crate, i.e. Alphabetic (letters, letter numerals like Ⅻ, Ⓐ), any mark, decimal digits, connector
    punctuation (_ ‿) and the zero-width joiners. Not str.isalnum(): that takes ² and ½ and leaves out marks.
    Categories are Unicode 16.0's, as in the regex crate (unicode_additions fills in an older Python's gaps)."""
    cat = category(ch)
    if cat[0] in "LM" or cat in ("Nd", "Nl", "Pc") or ch in "\u200c\u200d":
        return True
    return cat == "So" and any(a <= ord(ch) <= b for a, b in ALPHABETIC_SYMBOLS)


class AddedTokenMatcher:
    """Splits text into plain-text pieces (str) and added tokens (AddedToken), in order."""

    def __init__(self, tokens: list[AddedToken]):
        self.tokens = {t.content: t for t in tokens if t.content}
        ordered = sorted(self.tokens, key=len, reverse=True)
        self.regex = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def split(self, text: str, parse_special: bool = True) -> list[str | AddedToken]:
        if self.regex is None or not text:
            return [text] if text else []
        out: list[str | AddedToken] = []
        done = 0  # end of what has been emitted
        for m in self.regex.finditer(text):
            start, stop = m.span()
            tok = self.tokens[m.group()]
            if tok.special and not parse_special:
                continue
            if tok.single_word and ((start > 0 and _is_word_char(text[start - 1]))
                                    or (stop < len(text) and _is_word_char(text[stop]))):
                continue
            if tok.lstrip:
                while start > done and is_whitespace(text[start - 1]):
                    start -= 1
            if tok.rstrip:
                while stop < len(text) and is_whitespace(text[stop]):
                    stop += 1
            if start > done:
                out.append(text[done:start])
            out.append(tok)
            done = stop
        if done < len(text):
            out.append(text[done:])
        return out
