"""Multiple-choice mode: normalise whatever the agent answered to an option letter, and score answers.

Small models answer "B", "(b)", "B) git log", "The answer is B.", or the option's text itself; all of these are
the same choice. Free-text questions are scored by normalised exact match against the answer and its aliases
(lower case, punctuation, articles and extra spaces removed — the SQuAD/HotpotQA convention).
"""
from __future__ import annotations

import re
import string

LETTERS = "ABCD"


_PUNCTUATION = set(string.punctuation)
_NUMBER_MARKS = re.compile(r"(?<=\d)\.(?=\d)|(?<![\w.])-(?=\d)")  # 1.5 and -30 keep their point and sign


# a decimal number standing alone (not a piece of a version like 2.4.10), with its fraction's trailing zeros
_TRAILING_ZEROS = re.compile(r"(?<![\d.])(\d+)\.(\d*?)0+(?![\d.])")


def normalize_text(s: str) -> str:
    """SQuAD's normalisation (lower case, punctuation and articles dropped, spaces collapsed), except that a
    number keeps its decimal point and minus sign: "1.5" is not "15", nor "-30" "30"; and a decimal's trailing
    zeros go ("30.0 seconds" is "30 seconds", "1.50 s" is "1.5 s"; leading zeros stay: "007" is an id)."""
    s = _keeping_zeros(s)
    return " ".join(_TRAILING_ZEROS.sub(lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), s).split())


def _keeping_zeros(s: str) -> str:
    """normalize_text without dropping a decimal's trailing zeros: what tells apart options that only those
    zeros tell apart ("Python 3.10" and "Python 3.1", two releases)."""
    s = str(s).lower().replace("\u2212", "-").replace("\u2013", "-")  # the minus sign and the en dash
    s = _NUMBER_MARKS.sub(lambda m: "\0" if m.group() == "." else "\1", s)
    s = "".join(c for c in s if c not in _PUNCTUATION).replace("\0", ".").replace("\1", "-")
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _options_where(choices: dict, test) -> list:
    """The letters of the options for which test(normalise, option text) holds under normalize_text; where
    several do, those for which it also holds keeping trailing zeros, if any. Dropping the zeros must not make
    options that differ ("3.1", "3.10") one option: an answer that names one of them exactly is that one."""
    found = [k for k, v in choices.items() if test(normalize_text, v)]
    if len(found) > 1:
        finer = [k for k in found if test(_keeping_zeros, choices[k])]
        found = finer or found
    return found


def _number(s) -> float | None:
    """The value of an answer that is just a number ("30", "30.0", "1,500"), else None."""
    try:
        return float(str(s).strip().replace(",", ""))
    except ValueError:
        return None


def _holds(text: str, option: str) -> bool:
    """Whether the normalised option occurs in the normalised text as whole words ("45" is not inside "145",
    "seconds" not inside "milliseconds")."""
    return bool(option) and re.search(rf"(?<![\w.-]){re.escape(option)}(?![\w.])", text) is not None


# another option letter joined right after the named one: "A or B", "(A) and (C)", "Answer: A, B", "A/B",
# "Option B or option C"; "B, or maybe A" and "B (or A)" hedge too (the letter's own closing bracket or emphasis
# first)
_JOINED_LETTER = re.compile(r"[\)\]*_]*\s*[\(\[]?\s*(?:,?\s*\b(?i:or|and)\b|[,/&])\s*"
                            r"(?:(?i:maybe|perhaps|possibly|probably)\s+)?(?:(?i:option|choice)\s+)?"
                            r"(?:[\(\[]([A-Za-z])[\)\]]|[*_]*([A-Z])(?![\w'-]))")
# another option given as "Y) text" after a joiner, in an answer that starts "X) text": "A) git log, B) git add"
_LISTED_OPTION = re.compile(r"(?:\b(?i:or|and)\b|[,/&])\s*(?:(?i:maybe|perhaps|possibly|probably)\s+)?"
                            r"[\(\[]?([A-Z])[\)\]]\s+\S")


# A reply that opens with a letter and goes on to explain it: "B, because A is wrong", "C; option A lists commits",
# "B (A only logs)", "B - A is wrong", "**B**, because ...", "B is correct", "B is the answer". The letter must be
# followed by one of these (not by a plain word: "A timeout occurs" opens with the article), and letters named in
# the explanation are mentions, not answers; a letter joined to it ("A, B", "B, or maybe A") still hedges.
_LEADING_LETTER = re.compile(r"[\(\[]?([A-Za-z])[\)\]]?[*_]*(?=[ \t]*[,;(]|\s+[-\u2013\u2014]\s|"
                             r"\s+(?i:because|since|as)\b|\s+is\s+(?i:the\s+)?(?i:correct|right|best|answer)\b)")


_ASIDE = re.compile(r"[ \t]*\([^()]*\)")


def _after_aside(text: str, end: int) -> int:
    """Where text goes on after the parenthesised aside that follows a leading letter ("A (git log) or B (git
    add)": the "or B" after the aside still joins a second option), or `end` when no aside follows."""
    m = _ASIDE.match(text, end)
    return m.end() if m else end


def _hedged(text: str, end: int, letter: str, letters, listed: bool = False) -> bool:
    """Whether text joins another option letter to the `letter` that ends at `end` ("The answer is A or B"): that
    names no one option. Letters mentioned elsewhere ("B (not A or C)", "B. A and C are too small") do not count;
    with listed, neither does another option listed as "Y) text" ("A) git log, B) git add")."""
    m = _JOINED_LETTER.match(text, end)
    if m and (m.group(1) or m.group(2)).upper() in letters and (m.group(1) or m.group(2)).upper() != letter:
        return True
    return listed and any(y in letters and y != letter for y in _LISTED_OPTION.findall(text, end))


_NAMED = r"\s*(?:is\s*:?|:)?\s*\**\s*([\(\[]?)([A-Za-z])\b[\)\]]?"
_ANSWER_IS = re.compile(r"\banswer" + _NAMED, re.I)
_OPTION_NAMED = re.compile(r"\b(?:option|choice|choose|chose|pick|select)" + _NAMED, re.I)


def _named_letter(pattern, text: str, letters):
    """The first match of pattern whose letter is an option ("the answer is a timeout": the article "a" before a
    word is no letter; "answer is b because" is)."""
    for m in pattern.finditer(text):
        article = m.group(2) == "a" and not m.group(1) and re.match(r"\s+[A-Za-z]", text[m.end():])
        if m.group(2).upper() in letters and not article:
            return m
    return None


def _unquoted(text: str) -> str:
    """text without the quotes or backticks that wrap all of it ('"B"', "`B`": the letter B)."""
    while len(text) > 1 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip().strip("*_").strip()
    return text


def _exact_option(text: str, choices: dict | None) -> str | None:
    """The letter of the one option whose text the answer is (after normalize_text), or None."""
    if not choices:
        return None
    exact = _options_where(choices, lambda normalise, option: normalise(option) == normalise(text))
    return exact[0].upper() if len(exact) == 1 else None


def to_letter(answer, choices: dict | None = None) -> str | None:
    """The option letter an answer means, or None. choices maps letters to option texts (optional)."""
    if answer is None:
        return None
    text = _unquoted(str(answer).strip().strip("*_").strip())  # markdown emphasis: "**B**"; quotes: "`B`"
    letters = sorted(choices) if choices else list(LETTERS)
    m = re.fullmatch(r"[\(\[]?\s*([A-Za-z])\s*[\)\]\.:]?", text)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.match(r"^[\(\[]?([A-Za-z])[\)\]\.:]\s+\S", text)  # "B) git log", "b. git log"
    if m and m.group(1).upper() in letters:
        return None if _hedged(text, m.start(1) + 1, m.group(1).upper(), letters, listed=True) else m.group(1).upper()
    exact = _exact_option(text, choices)  # an option's own text ("B (bytes)") names that option, not letter B
    if exact is not None:
        return exact
    m = _LEADING_LETTER.match(text)  # "B, because A is wrong": the reply commits to B, then explains
    if m and m.group(1).upper() in letters:
        letter = m.group(1).upper()
        hedged = any(_hedged(text, end, letter, letters) for end in (m.end(), _after_aside(text, m.end())))
        return None if hedged else letter
    # "answer is C", "The correct answer is: **C**"; then "Option: D", "I choose B": an option named in passing
    # ("Option A is wrong, the answer is B") gives way to the one called the answer
    for named in (_ANSWER_IS, _OPTION_NAMED):
        m = _named_letter(named, text, letters)
        if m:
            return None if _hedged(text, m.start(2) + 1, m.group(2).upper(), letters) else m.group(2).upper()
    found = {x.upper() for x in re.findall(r"[\(\[]([A-Za-z])[\)\]]", text)} & set(letters)
    if len(found) == 1:  # "I pick (c)"
        return found.pop()
    if choices:
        value = _number(text)  # final_answer(10.0) for the option "10": numbers compare by value, as is_correct does
        same = [k for k, v in choices.items() if value is not None and _number(v) == value]
        if len(same) == 1:
            return same[0].upper()
        inside = _options_where(choices, lambda normalise, option: _holds(normalise(text), normalise(option)))
        if len(inside) == 1:
            return inside[0].upper()
    return None


def is_correct(answer, item: dict) -> bool:
    """item: an exam line {"answer"?, "aliases"?, "choices"?, "correct"?}."""
    if item.get("choices"):
        want = item.get("correct") or to_letter(item.get("answer"), item["choices"])
        return want is not None and to_letter(answer, item["choices"]) == str(want).upper()
    gold = [item.get("answer")] + list(item.get("aliases") or [])
    got = normalize_text(answer if answer is not None else "")
    value = _number(answer) if answer is not None else None
    return any(g is not None and (got == normalize_text(g) or (value is not None and value == _number(g)))
               for g in gold)


def accuracy(results: list[dict]) -> float:
    """results: dicts with a boolean "correct"; an empty list scores 0."""
    return sum(bool(r["correct"]) for r in results) / len(results) if results else 0.0
