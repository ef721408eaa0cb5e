"""`infer.py exam --exam E.jsonl --out E.jsonl` replaced the exam with its own results (choices and gold answers
gone), and `distill --questions Q.jsonl --out Q.jsonl` appended trajectories to the questions. Both are now
refused before any model loads. Oracle: the exam file's bytes, and json of its lines, are unchanged.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from minagent.agent import commands
from cli_errors import infer_usage_error

OWN = Path(__file__).parent / "data" / "own_domain"


@pytest.fixture
def exam(tmp_path):
    path = tmp_path / "exam.jsonl"
    shutil.copyfile(OWN / "exam.jsonl", path)
    return path


@pytest.mark.parametrize("argv, flag", [
    (["exam", "--model", "m", "--no-search", "--exam", "{e}", "--out", "{o}"], "--exam"),
    (["exam", "--model", "m", "--no-search", "--exam", str(OWN / "exam.jsonl"), "--system-file", "{e}",
      "--out", "{o}"], "--system-file"),
    (["distill", "--teacher", "m", "--no-search", "--questions", "{e}", "--out", "{o}"], "--questions"),
])
def test_out_over_an_input_is_refused(monkeypatch, capsys, tmp_path, exam, argv, flag):
    def no_model(*a, **k):
        raise AssertionError("the model must not load")
    monkeypatch.setattr(commands, "load_llm", no_model)
    before = exam.read_bytes()
    other_spelling = os.path.join(str(tmp_path), ".", "exam.jsonl")   # the same file, written another way
    argv = [a.replace("{e}", str(exam)).replace("{o}", other_spelling) for a in argv]
    err = infer_usage_error(capsys, argv)
    assert f"{argv[0]} --out {other_spelling} is the {flag} file" in err
    assert exam.read_bytes() == before
    assert [json.loads(line) for line in exam.read_text().splitlines()] == \
        [json.loads(line) for line in (OWN / "exam.jsonl").read_text().splitlines()]
