"""A deterministic mixed-script text for tokenizer tests (generated, so no file can be mangled by line-ending
conversion): English prose with contractions, Python source with indentation, Japanese, other scripts, emoji
(skin tones, ZWJ families, flags, keycaps), long numbers and non-ASCII digits, whitespace runs (spaces, tabs,
\\n\\n\\n, \\r\\n, NBSP, U+2028, U+001C), decomposed characters that NFC composes, and, when given, special
tokens embedded in the text (glued to words, doubled, half-written)."""
from __future__ import annotations

import random
import unicodedata

PROSE = [
    "The quick brown fox jumps over the lazy dog. It's not the fox's fault; they'd been told it'd be fine.",
    "DON'T PANIC. I'M sure YOU'RE right, but WE'LL see; THEY'VE said I'D be late, and SHE'S never wrong.",
    "Agent distillation trains a small model to act, not just to answer: it writes a Thought, then Code, "
    "then reads the Observation.  Twice-spaced sentences  happen, as do trailing spaces   \n",
    "“Smart quotes” — em dashes — and ellipses… appear in real manuals (see §4.2, ¶3). Prices: $1,299.99 or "
    "€1.299,99; temperatures −40 °C; ratios 3:2; percentages 12.5%.",
    "Dr. O'Neil's well-known e-mail (o.neil@example.com) links to https://example.org/a/b?c=d&e=f#frag.",
    "In 1969, 600,000,000 people watched; by 2024-05-17T12:34:56Z the count was 3141592653589793238462643.",
    "She said: 'it''s fine' and 'tis the season; rock 'n' roll isn't dead, y'all.",
]

CODE = '''
import os
from typing import Iterable


class Tokenizer:
    """Toy tokenizer."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab  # token -> id
        self._cache = {}

    def encode(self, text: str) -> list[int]:
        out = []
        for word in text.split():
            if word in self._cache:
                out.extend(self._cache[word])
            else:
\t\t\t\tids = [self.vocab.get(ch, 0) for ch in word]   # tabs, then spaces
                self._cache[word] = ids
                out += ids
        return out


def main(argv: Iterable[str] = ()) -> int:
    total = sum(i ** 2 for i in range(1_000_000) if i % 7 == 3)
    print(f"total={total:,} path={os.getcwd()!r}\\n", end="")
    return 0 if total > 0x7FFF_FFFF else -1
'''

JAPANESE = [
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。",
    "コンピューターのプログラムを書くのは楽しいです。ｶﾀｶﾅの半角と全角の数字１２３４５も混ざります。",
    "東京都渋谷区　２０２４年５月１７日（金）午前１０時３０分",
]

OTHER_SCRIPTS = [
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "نص عربي مع أرقام ١٢٣٤٥ وعلامات ترقيم، أليس كذلك؟",
    "עברית עם ניקוד: שָׁלוֹם",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "한국어 텍스트와 中文文本混合在一起。",
    "Ⅻ ½ ² ³ ¼ ⅞ 𝟙𝟚𝟛 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ſ x'ſt x'St",
]

EMOJI = [
    "😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇫🇷 1️⃣2️⃣ ❤️‍🔥 🧑🏿‍💻 🫠",
    "emoji glued to text:done✅ next➡️ ok👌🏻end",
]

NUMBERS = [
    "31415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679",
    "1,234,567.890 -0.000001 6.022e23 0xDEADBEEF 0b1010_1010 1e-9 +44 20 7946 0958",
    "١٢٣٤٥٦٧٨٩٠ ۱۲۳ १२३४ ๑๒๓ ０１２３",
]

WHITESPACE = [
    "    ", "\t", "\t\t  \t", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "  \n\n  ", "\u00a0", "\u3000", "\u2028",
    "\x0b\x0c", "\x1c\x1d\x1e\x1f", " \x1c ", "\u0085", "\u200b", "\ufeff", "   \t\n",
]

NFC_BAIT = [
    "cafe\u0301 re\u0301sume\u0301 n\u0303", unicodedata.normalize("NFD", "한국어 정규화"), "\u212b\u2126",
    " \u0301 combining after a space", "A\u030a\u0323",
]

MARKUP = [
    '{"name": "search", "arguments": {"query": "wiki-18 e5", "k": 3}}',
    "| col | value |\n|-----|------:|\n| a   |   1.5 |\n",
    "<table><tr><td>JP1/AJS3</td><td>11-50</td></tr></table>",
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "```py\nprint(final_answer(42))\n```<end_code>\nObservation:\nExecution logs:\n",
]


def mixed_text(specials: list[str] = (), *, seed: int = 0, min_chars: int = 20_000) -> str:
    """At least `min_chars` characters drawn deterministically from all the pools above."""
    rng = random.Random(seed)
    pools = [PROSE, [CODE, CODE.replace("\n", "\r\n")], JAPANESE, OTHER_SCRIPTS, EMOJI, NUMBERS, NFC_BAIT, MARKUP]
    glue = ["", " ", "\n", "\n\n", "\t", "  ", "\r\n", "\n\n\n"]
    parts: list[str] = []
    for pool in pools:  # everything appears at least once
        parts.extend(pool)
    while sum(map(len, parts)) < min_chars:
        pick = rng.random()
        if pick < 0.12 and specials:
            tok = rng.choice(specials)
            parts.append(rng.choice([tok, "x" + tok + "y", tok + tok, " " + tok + " ", tok[:-2], "\n" + tok + "\n"]))
        elif pick < 0.22:
            parts.append(rng.choice(WHITESPACE))
        elif pick < 0.27:  # a long run of one script: one big pre-tokenizer piece
            parts.append("".join(rng.choice(JAPANESE) for _ in range(3)).replace("。", ""))
        else:
            parts.append(rng.choice(rng.choice(pools)))
        parts.append(rng.choice(glue))
    return "".join(parts)
