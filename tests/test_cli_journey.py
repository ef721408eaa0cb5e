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
