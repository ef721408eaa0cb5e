"""An exam interrupted before 065dd8e (whose partial file keys every setting, read by the mode or not) still
resumes with the same command line. Oracle: the partial file's first line as e9d1614's exam_command wrote it
(hand-written here from that commit's settings dict: model, mode, index, k, system, extractor, agent, max_len,
model files, index files) and the scripted model's answers."""
import json

import pytest

from minagent.agent.executor import AgentConfig
from minagent.microdomain import evaluate
from minagent.microdomain.partial_results import FORMAT

from test_exam_resume import ITEMS, answering


def _old_partial(path, exam_items, k=3):
    settings = {"model": "m", "mode": "closed-book", "index": None, "k": k, "system": None, "extractor": False,
                "agent": AgentConfig().__dict__, "max_len": None, "model files": None, "index files": None}
    rows = [{"item": item, "row": {"id": item["id"], "question": item["question"], "gold": "", "hops": 1,
                                   "choices": bool(item.get("choices")), "reply": "", "messages": [],
                                   "answer": item.get("correct") or item["answer"], "letter": item.get("correct"),
                                   "correct": True}}
            for item in exam_items]
    path.write_text(json.dumps({"format": FORMAT, "settings": settings}) + "\n"
                    + "".join(json.dumps(r) + "\n" for r in rows))


def test_a_partial_file_keyed_the_old_way_resumes(tmp_path, monkeypatch):
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    _old_partial(tmp_path / "r.jsonl.partial", ITEMS[:3])
    asked, logged = [], []
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering(asked))
    s = evaluate.exam_command("m", exam, tmp_path / "r.jsonl", mode="closed-book", log=logged.append)
    assert sorted(asked) == sorted(i["id"] for i in ITEMS[3:]) and s["n"] == len(ITEMS)
    assert "3 questions already answered" in logged[0]


def test_an_old_partial_file_of_other_settings_is_still_refused(tmp_path, monkeypatch):
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    _old_partial(tmp_path / "r.jsonl.partial", ITEMS[:3])
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering([]))
    with pytest.raises(ValueError, match="other settings"):
        evaluate.exam_command("m", exam, tmp_path / "r.jsonl", mode="closed-book", max_len=64, log=None)
