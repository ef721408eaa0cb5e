"""Bring your own domain: a hand-written manual, exam and trajectories (tests/data/own_domain, not made by the
generator) go through the documented commands — index, search, CPT, SFT, exam in every mode — and score right.
"""
import json
from pathlib import Path

import pytest

import infer
import train
from minagent.agent.llm import ScriptedLLM
from minagent.microdomain import formats
from minagent.microdomain.evaluate import System, evaluate_system
from minagent.agent.teacher import read_questions

OWN = Path(__file__).parent / "data" / "own_domain"


def _rows(path):
    """JSONL rows (split on \\n only: a random model's text may hold U+2028, which str.splitlines splits on)."""
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").split("\n") if x.strip()]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("own") / "index"
    assert infer.main(["index", "--corpus", str(OWN / "manual"), "--out", str(out)]) == 0
    return out


def test_search_finds_the_hand_written_pages(index_dir, capsys):
    infer.main(["search", "--index", str(index_dir), "--query", "upload_rate_limit", "--k", "1", "--json"])
    hit = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert hit["source"] == "settings.html" and "40" in hit["text"]
    infer.main(["search", "--index", str(index_dir), "--query", "WRN-305", "--k", "1", "--json"])
    hit = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert hit["source"] == "errors.txt" and "upload_rate_limit" in hit["text"]


def test_stage_commands_run_on_own_domain(index_dir, tiny_dir, tmp_path, capsys):
    common = ["--method", "full", "--max-steps", "1", "--batch-size", "1", "--eval-fraction", "0",
              "--progress", "false", "--save-every", "1"]
    cpt = tmp_path / "cpt"
    train.main(["cpt", "--model", str(tiny_dir), "--data", str(OWN / "manual"), "--out", str(cpt),
                "--max-length", "64", "--cache-dir", str(tmp_path / "cache"), *common])
    assert (cpt / "final" / "model" / "config.json").is_file()
    sft = tmp_path / "sft"
    train.main(["sft", "--model", str(cpt / "final" / "model"), "--data", str(OWN / "trajectories.jsonl"),
                "--out", str(sft), "--max-length", "1024", *common])
    model = sft / "final" / "model"
    assert (model / "model.safetensors").is_file()
    system_file = tmp_path / "system.txt"
    system_file.write_text(json.loads((OWN / "trajectories.jsonl").read_text().splitlines()[0])
                           ["messages"][0]["content"])
    for mode in ("closed-book", "rag", "cot", "agent"):
        out = tmp_path / f"{mode}.jsonl"
        infer.main(["exam", "--model", str(model), "--exam", str(OWN / "exam.jsonl"), "--out", str(out),
                    "--mode", mode, "--index", str(index_dir), "--k", "2", "--split", "heldout",
                    "--max-tokens", "8", "--max-steps", "1", "--system-file", str(system_file)])
        rows = _rows(out)
        assert [r["id"] for r in rows] == ["own-1", "own-2", "own-3", "own-4"]
        assert all(isinstance(r["correct"], bool) for r in rows)
    agent_rows = _rows(tmp_path / "agent.jsonl")
    # prompt-lookup drafts (on by default) change how many tokens a forward checks, never the greedy tokens
    infer.main(["exam", "--model", str(model), "--exam", str(OWN / "exam.jsonl"), "--out", str(tmp_path / "nd"),
                "--mode", "agent", "--index", str(index_dir), "--k", "2", "--split", "heldout", "--max-tokens", "8",
                "--max-steps", "1", "--system-file", str(system_file), "--draft-tokens", "0"])
    same = [(r["answer"], r["messages"]) for r in agent_rows]
    assert [(r["answer"], r["messages"]) for r in _rows(tmp_path / "nd")] == same
    assert agent_rows[0]["messages"][0]["content"].startswith("You answer questions about Wren Backup Agent")
    assert agent_rows[1]["messages"][0]["content"].endswith(formats.MULTIPLE_CHOICE_LINE)  # multiple choice
    assert "accuracy" in capsys.readouterr().out


def test_own_exam_scoring(tmp_path):
    """A model that replies with the gold answers (letters for multiple choice, an alias for own-6) scores
    100%; one that replies with the option text scores the multiple-choice items too."""
    items = read_questions(OWN / "exam.jsonl")
    replies = {"own-1": "40 MB/s", "own-2": "C", "own-3": "--to", "own-4": "upload_rate_limit",
               "own-5": "01:30", "own-6": "agent.ini"}
    by_question = {i["question"]: replies[i["id"]] for i in items}

    def script(messages, n, prefix):
        q = messages[-1]["content"].split("\n\nOptions:")[0]
        return [by_question[q]] * n

    s = evaluate_system(System("gold", "m", "closed-book"), ScriptedLLM(script), items, tmp_path / "r.jsonl",
                        progress=False)
    assert s["accuracy"] == 1.0 and s["n"] == 6 and s["multiple_choice"] == 1.0
    wrong = {**replies, "own-2": "A", "own-3": "--as-of"}
    by_question = {i["question"]: wrong[i["id"]] for i in items}
    s = evaluate_system(System("some wrong", "m", "closed-book"), ScriptedLLM(script), items,
                        tmp_path / "w.jsonl", progress=False)
    assert s["accuracy"] == pytest.approx(4 / 6)
