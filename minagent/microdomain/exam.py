"""The certification exam of a synthetic domain: short-answer and multiple-choice (A-D) questions, single-fact
and two-hop, split into train (teacher trajectories are made on these) and held-out (the evaluation).

The split is by entity, not by question: a held-out parameter, message or command is never the subject of a
train question, so no fact a held-out question asks for is in any trajectory (pipeline.py also checks the
trajectories' text for held-out names and drops any that contain one). The facts are in the manual, so CPT
sees them: that is the seed paper's setting (the manual is known, the exam is not).

One JSON object per line — the exam format `infer.py exam` reads:
  {"id", "question", "answer", "aliases"?, "choices"?: {"A": ...}, "correct"?: "B",
   "type", "hops", "split", "evidence": [entry names whose passages hold the answer, in hop order]}
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from .domain import Domain

LETTERS = "ABCD"


def _choices(rng: random.Random, right, pool: list) -> tuple[dict, str]:
    wrong = rng.sample(sorted({str(x) for x in pool} - {str(right)}), 3)
    options = wrong + [str(right)]
    rng.shuffle(options)
    return dict(zip(LETTERS, options)), LETTERS[options.index(str(right))]


def _item(qid, question, answer, kind, hops, evidence, rng=None, pool=None, aliases=()):
    item = {"id": qid, "question": question, "answer": str(answer), "type": kind, "hops": hops,
            "evidence": list(evidence)}
    if aliases:
        item["aliases"] = [str(a) for a in aliases]
    if pool is not None:
        item["choices"], item["correct"] = _choices(rng, answer, pool)
    return item


def possible_defaults(attribute: str) -> list:
    """The values a default can take: make_domain puts each range's ends on either side of the default, so the
    smallest and largest candidate are never one. A default question's options are drawn from these only: an
    option that can never be right would let a model that never read the manual beat 25% by elimination."""
    from .domain import ATTRIBUTES
    return ATTRIBUTES[attribute][2][1:-1]


def parameter_questions(d: Domain, p, rng) -> list[dict]:
    from .domain import ATTRIBUTES
    values = possible_defaults(p.attribute)
    units = sorted({u for u, _, _ in ATTRIBUTES.values()})
    return [
        _item(f"{p.name}/default", f"What is the default value of {p.name}?", p.default, "param_default", 1,
              [p.name], aliases=[f"{p.default} {p.unit}"]),
        _item(f"{p.name}/default-mc", f"What is the default value of {p.name}?", p.default, "param_default", 1,
              [p.name], rng, values),
        _item(f"{p.name}/max", f"What is the largest value that {p.name} accepts?", p.high, "param_max", 1,
              [p.name], aliases=[f"{p.high} {p.unit}"]),
        _item(f"{p.name}/unit-mc", f"In which unit is {p.name} given?", p.unit, "param_unit", 1, [p.name], rng,
              units),
    ]


def message_questions(d: Domain, m, rng, names: list[str] | None = None) -> list[dict]:
    """names: the parameters the "which parameter" options are drawn from, uniformly (default: all of them).
    make_exam passes those of the message's own split: the options of a train question then never name a
    held-out parameter (the leak filter dropped most of those runs), and no option stands out. The former pool,
    the answer's component first, let the component most of the options share (the answer's) beat 25%."""
    p = d.parameter(m.parameter)
    values = possible_defaults(p.attribute)
    pool = names if names is not None and len(set(names) - {p.name}) >= 3 else [q.name for q in d.parameters]
    return [
        _item(f"{m.id}/parameter", f"Which parameter does the corrective action for message {m.id} tell you to "
              f"increase?", p.name, "message_parameter", 1, [m.id]),
        _item(f"{m.id}/parameter-mc", f"Which parameter does the corrective action for message {m.id} tell you "
              f"to increase?", p.name, "message_parameter", 1, [m.id], rng, pool),
        _item(f"{m.id}/default", f"Message {m.id} was logged. What is the default value of the parameter that "
              f"its corrective action tells you to increase?", p.default, "message_default", 2, [m.id, p.name],
              aliases=[f"{p.default} {p.unit}"]),
        _item(f"{m.id}/default-mc", f"Message {m.id} was logged. What is the default value of the parameter "
              f"that its corrective action tells you to increase?", p.default, "message_default", 2,
              [m.id, p.name], rng, values),
    ]


def command_questions(d: Domain, c, rng) -> list[dict]:
    from .domain import FLAGS
    out = []
    for i, (flag, meaning) in enumerate(c.options.items()):
        q = f"Which option of {c.name} makes it {meaning}?"
        if i % 2:
            out.append(_item(f"{c.name}/{flag}-mc", q, flag, "command_option", 1, [c.name], rng, FLAGS))
        else:
            out.append(_item(f"{c.name}/{flag}", q, flag, "command_option", 1, [c.name]))
    return out


def make_exam(d: Domain, heldout_fraction: float = 0.25, seed: int = 0) -> list[dict]:
    """Every question of the domain, each tagged split "train" or "heldout" (by entity)."""
    rng = random.Random(seed * 7919 + d.seed)
    params = list(d.parameters)
    rng.shuffle(params)
    held_params = {p.name for p in params[:round(len(params) * heldout_fraction)]}
    cmds = list(d.commands)
    rng.shuffle(cmds)
    held_cmds = {c.name for c in cmds[:round(len(cmds) * heldout_fraction)]}
    items = []
    for p in d.parameters:
        for it in parameter_questions(d, p, rng):
            items.append({**it, "split": "heldout" if p.name in held_params else "train"})
    names = {split: [p.name for p in d.parameters if (p.name in held_params) == (split == "heldout")]
             for split in ("train", "heldout")}
    for m in d.messages:  # a message goes with the parameter it names: its two-hop answer is that parameter's
        split = "heldout" if m.parameter in held_params else "train"
        for it in message_questions(d, m, rng, names[split]):
            items.append({**it, "split": split})
    for c in d.commands:
        for it in command_questions(d, c, rng):
            items.append({**it, "split": "heldout" if c.name in held_cmds else "train"})
    balance_letters(items, random.Random(seed * 7919 + d.seed + 1))
    return items


def balance_letters(items: list[dict], rng: random.Random) -> None:
    """Give each split's multiple-choice questions every letter as the answer equally often (counts differ by
    at most one), in random order. Shuffling each question's options alone left the letters unbalanced by
    chance (always answering "D" scored 29.8% on one held-out split): a model with a favourite letter then
    reads as knowing something. The right option moves to its letter; the others keep their order."""
    for split in sorted({it["split"] for it in items}):
        mc = [it for it in items if it["split"] == split and it.get("choices")]
        letters = [LETTERS[i % len(LETTERS)] for i in range(len(mc))]
        rng.shuffle(letters)
        for it, letter in zip(mc, letters):
            wrong = [v for k, v in sorted(it["choices"].items()) if k != it["correct"]]
            wrong.insert(LETTERS.index(letter), it["choices"][it["correct"]])
            it["choices"], it["correct"] = dict(zip(LETTERS, wrong)), letter


def heldout_names(d: Domain, items: list[dict]) -> set[str]:
    """Entry names only held-out questions are about (a trajectory mentioning one would leak its facts)."""
    train = {e for it in items if it["split"] == "train" for e in it["evidence"]}
    return {e for it in items if it["split"] == "heldout" for e in it["evidence"]} - train


def write_jsonl(items, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False, default=str) + "\n")  # answers may be any object
    tmp.replace(path)
    return path
