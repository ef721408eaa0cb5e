"""The library functions behind `infer.py exam`: results JSONL and accuracy, checked by hand on a scripted
model over a real (tiny) BM25 index directory."""
import json

from minagent.agent import AgentConfig, HTTPChatLLM, ScriptedLLM
from minagent.agent.commands import load_llm, run_exam
from minagent.retrieval import build_index

CHOICES = {"A": "git log", "B": "git add", "C": "git stash", "D": "git blame"}


def test_exam_scores_letters_and_texts_and_writes_every_trajectory(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "git-stash.txt").write_text("git stash\n\nUse git stash to record the current state and go back "
                                          "to a clean working directory.\n")
    build_index(corpus, tmp_path / "index", progress=False)
    exam = tmp_path / "exam.jsonl"
    exam.write_text("\n".join(json.dumps(x) for x in [
        {"id": "1", "question": "Put work aside?", "choices": CHOICES, "correct": "C"},
        {"id": "2", "question": "Show history?", "choices": CHOICES, "correct": "A"},
        {"id": "3", "question": "Stage changes?", "answer": "git add", "aliases": ["add"]},
    ]) + "\n")
    llm = ScriptedLLM([
        "Thought: search\nCode:\n```py\nprint(search('clean working directory'))\n```",
        "Thought: it is stash\nCode:\n```py\nfinal_answer('git stash')\n```",   # option text -> C: correct
        "Thought: guess\nCode:\n```py\nfinal_answer('B')\n```",                 # wrong letter
        "Thought: known\nCode:\n```py\nfinal_answer('Add')\n```",               # alias, normalised: correct
    ])
    out = tmp_path / "results.jsonl"
    summary = run_exam(llm, tmp_path / "index", exam, out, AgentConfig(max_steps=3), log=None)
    assert summary == {"accuracy": 2 / 3, "n": 3, "correct": 2}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["letter"], r["correct"]) for r in rows] == [("1", "C", True), ("2", "B", False),
                                                                    ("3", None, True)]
    assert "Use git stash to record the current state" in rows[0]["messages"][3]["content"]
    assert not (tmp_path / "results.jsonl.tmp").exists()


def test_a_url_selects_the_http_backend():
    assert isinstance(load_llm("http://127.0.0.1:9/v1"), HTTPChatLLM)
