"""A new user's path through the README's commands: what `infer.py` says about its own defaults, which flag
combinations it refuses instead of silently dropping one, and the bring-your-own-domain flow's distill step
keeping held-out questions out of the trajectories.

Oracles are hand-checked: the defaults declared in infer.py's parsers, and the split of each question in
tests/data/own_domain/exam.jsonl (own-5 and own-6 are "train", own-1..own-4 "heldout").
"""
import pytest

import infer


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        infer.main(argv + ["--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare on single spaces


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        infer.main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


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
    err = _usage_error(capsys, command + ["--index", "idx", "--no-search"])
    assert f"{command[0]}: --index and --no-search are alternatives" in err


def test_serve_without_a_model_names_the_flags(capsys):
    err = _usage_error(capsys, ["serve", "--port", "0"])
    assert "serve: nothing to serve; pass --model DIR (a checkpoint) or --oracle QUESTIONS.jsonl" in err
