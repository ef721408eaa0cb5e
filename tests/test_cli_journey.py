"""A new user's path through the README's commands: what `infer.py` says about its own defaults, which flag
combinations it refuses instead of silently dropping one, and the bring-your-own-domain flow's distill step
keeping held-out questions out of the trajectories, and train.py's --seed refused up front when numpy would
refuse it later.

Oracles are hand-checked: the defaults declared in infer.py's parsers, and the split of each question in
tests/data/own_domain/exam.jsonl (own-5 and own-6 are "train", own-1..own-4 "heldout"); numpy for the seed.
"""
import json
from pathlib import Path

import pytest

import infer
from minagent.agent import commands
from minagent.agent.teacher import oracle_teacher, read_questions
from cli_errors import infer_usage_error

OWN = Path(__file__).resolve().parent / "data" / "own_domain"


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        infer.main(argv + ["--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare on single spaces


def test_help_states_defaults_of_zero(capsys):
    """0 == False in Python, so `default in (None, False, ...)` hid every default of 0: `chat --help` did not say
    that decoding is greedy unless --temperature is given, nor that --top-k and --sag are off."""
    chat = _help(capsys, ["chat"])
    assert "--temperature TEMPERATURE 0 = greedy decoding (default: 0.0)" in chat
    assert "(0 = off) (default: 0)" in chat
    exam = _help(capsys, ["exam"])
    assert "at most 64, as serve allows) (default: 0)" in exam
    assert "--extractor condense long search results first --timeout" in exam  # an off switch states nothing


@pytest.mark.parametrize("command", [
    ["exam", "--model", "m", "--exam", "e.jsonl", "--out", "o.jsonl"],
    ["ask", "--model", "m", "--question", "q?"],
    ["distill", "--teacher", "m", "--questions", "q.jsonl", "--out", "o.jsonl"],
])
def test_an_index_and_no_search_together_are_refused(capsys, command):
    """--no-search set the index aside without a word: the run went on without the search tool asked for."""
    err = infer_usage_error(capsys, command + ["--index", "idx", "--no-search"])
    assert f"{command[0]}: --index and --no-search are alternatives" in err


def test_serve_without_a_model_names_the_flags(capsys):
    err = infer_usage_error(capsys, ["serve", "--port", "0"])
    assert "serve: nothing to serve; pass --model DIR (a checkpoint) or --oracle QUESTIONS.jsonl" in err


@pytest.fixture
def own_index(tmp_path):
    out = tmp_path / "index"
    assert infer.main(["index", "--corpus", str(OWN / "manual"), "--out", str(out)]) == 0
    return out


def _oracle_for(path):
    known = {q["question"]: {"answer": q.get("correct") or q["answer"]} for q in read_questions(path)}
    return lambda *a, **kw: oracle_teacher(known)


def test_distill_split_keeps_held_out_questions_out_of_the_trajectories(tmp_path, own_index, monkeypatch):
    """The README's own-domain flow distills the exam, trains on the trajectories and then scores --split
    heldout: without a split on distill, the held-out questions' answers were in the training data."""
    monkeypatch.setattr(commands, "load_llm", _oracle_for(OWN / "exam.jsonl"))
    out = tmp_path / "traj.jsonl"
    infer.main(["distill", "--teacher", "oracle", "--index", str(own_index), "--questions",
                str(OWN / "exam.jsonl"), "--out", str(out), "--split", "train", "--max-steps", "3"])
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert kept == ["own-5", "own-6"]


def test_distill_split_that_matches_nothing_names_the_file(tmp_path, monkeypatch):
    def no_model(*a, **kw):
        raise AssertionError("the questions are checked before a model is loaded")
    monkeypatch.setattr(commands, "load_llm", no_model)
    exam = OWN / "exam.jsonl"
    with pytest.raises(ValueError, match=f"{exam}: no questions with split 'dev'"):
        infer.main(["distill", "--teacher", "m", "--no-search", "--questions", str(exam),
                    "--out", str(tmp_path / "t.jsonl"), "--split", "dev"])


@pytest.mark.parametrize("stage", ["recipe", "cpt", "sft"])
def test_a_negative_seed_is_a_usage_error_naming_the_flag(capsys, tmp_path, stage):
    """numpy's generators refuse a negative seed (the oracle below), but only once a stage that shuffles ran:
    `train.py recipe --seed -1` built the domain, tokenizer and general stages, started pretraining and then
    stopped with 'expected non-negative integer', naming no flag."""
    import numpy as np

    import train
    with pytest.raises(ValueError):
        np.random.default_rng(-1)
    with pytest.raises(SystemExit) as stop:
        train.main([stage, "--seed", "-1", "--work" if stage == "recipe" else "--out", str(tmp_path / "w")])
    assert stop.value.code == 2
    assert "argument --seed: -1 is negative; expected an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    assert train.build_parser().parse_args([stage, "--seed", "0"]).seed == 0
