"""Multiple-choice mode: normalise whatever the agent answered to an option letter, and score answers.

Small models answer "B", "(b)", "B) git log", "The answer is B.", or the option's text itself; all of these are
the same choice. Free-text questions are scored by normalised exact match against the answer and its aliases
(lower case, punctuation, articles and extra spaces removed — the SQuAD/HotpotQA convention).
"""
from __future__ import annotations

import re
import string

LETTERS = "ABCD"


def normalize_text(s: str) -> str:
    s = str(s).lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def to_letter(answer, choices: dict | None = None) -> str | None:
    """The option letter an answer means, or None. choices maps letters to option texts (optional)."""
    if answer is None:
        return None
    text = str(answer).strip().strip("*_").strip()  # markdown emphasis: "**B**"
    letters = sorted(choices) if choices else list(LETTERS)
    m = re.fullmatch(r"[\(\[]?\s*([A-Za-z])\s*[\)\]\.:]?", text)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.match(r"^[\(\[]?([A-Za-z])[\)\]\.:]\s+\S", text)  # "B) git log", "b. git log"
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.search(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[\(\[]?([A-Za-z])\b[\)\]]?", text, re.I)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    found = {x.upper() for x in re.findall(r"[\(\[]([A-Za-z])[\)\]]", text)} & set(letters)
    if len(found) == 1:  # "I pick (c)"
        return found.pop()
    if choices:
        norm = normalize_text(text)
        exact = [k for k, v in choices.items() if normalize_text(v) == norm]
        if len(exact) == 1:
            return exact[0].upper()
        inside = [k for k, v in choices.items() if normalize_text(v) and normalize_text(v) in norm]
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
    return any(g is not None and got == normalize_text(g) for g in gold)


def accuracy(results: list[dict]) -> float:
    """results: dicts with a boolean "correct"; an empty list scores 0."""
    return sum(bool(r["correct"]) for r in results) / len(results) if results else 0.0
