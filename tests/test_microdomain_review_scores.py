"""The evaluation table's columns, recomputed by hand from a results file (the oracle: counts written out in
the test from the exam lines, not taken from scores())."""
import json

import pytest

from minagent.agent.llm import ScriptedLLM
from minagent.microdomain.evaluate import System, evaluate_system, format_table, scores

# a hand-written exam: the hop counts come as an exam author may write them (a JSON string, a third hop)
EXAM = [
    {"id": "a", "question": "Default of alpha_timeout?", "answer": "30", "aliases": ["30 seconds"], "hops": 1},
    {"id": "b", "question": "Default behind message X-1?", "answer": "64", "hops": "2"},
    {"id": "c", "question": "Default behind message X-2, via its component?", "answer": "8", "hops": 3},
    {"id": "d", "question": "Unit of alpha_timeout?", "hops": 1,
     "choices": {"A": "KB", "B": "seconds", "C": "MB", "D": "threads"}, "correct": "B"},
    {"id": "e", "question": "Default behind message X-3?", "hops": 2,
     "choices": {"A": "16", "B": "32", "C": "48", "D": "64"}, "correct": "D"},
]
REPLIES = {"a": "30 seconds", "b": "64", "c": "9", "d": "seconds", "e": "A"}  # a, b, d right; c, e wrong


def _model():
    def reply(messages, n, prefix):
        item = next(i for i in EXAM if messages[-1]["content"].startswith(i["question"]))
        return [REPLIES[item["id"]]] * n
    return ScriptedLLM(reply)


def test_every_row_counts_in_one_hop_column_and_one_kind_column(tmp_path):
    s = evaluate_system(System("s", "m", "closed-book"), _model(), EXAM, tmp_path / "r.jsonl", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False, True, False]
    # by hand: 1-hop = a, d (2 of 2); multi-hop = b, c, e (1 of 3); choice = d, e (1 of 2); short = a, b, c (2 of 3)
    assert s == {"accuracy": 3 / 5, "n": 5, "single_hop": 1.0, "two_hop": 1 / 3,
                 "multiple_choice": 1 / 2, "short_answer": 2 / 3}
    assert scores(rows) == s  # the same from the file as written
    line = format_table([("s", s)]).splitlines()[-1]
    assert [c.strip() for c in line.strip("|").split("|")] == ["s", "60.0", "100.0", "33.3", "50.0", "66.7", "5"]


def test_a_hop_count_that_is_no_number_is_refused_naming_the_question():
    with pytest.raises(ValueError, match=r"question 'q7'.*\"hops\" is 'two'"):
        scores([{"id": "q7", "hops": "two", "choices": False, "correct": True}])


def test_a_bad_hop_count_is_refused_before_any_question_is_asked(tmp_path):
    asked = []
    llm = ScriptedLLM(lambda messages, n, prefix: asked.append(1) or ["30"] * n)
    exam = EXAM[:1] + [dict(EXAM[1], hops=None)]
    with pytest.raises(ValueError, match=r"question 'b'.*\"hops\" is None"):
        evaluate_system(System("s", "m", "closed-book"), llm, exam, tmp_path / "r.jsonl", progress=False)
    assert asked == [] and not (tmp_path / "r.jsonl").exists()
