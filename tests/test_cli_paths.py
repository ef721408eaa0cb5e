"""An output path below a file (`--out runs/x/results.jsonl` where runs/x is a file) is refused up front by
every command that writes, in one line naming the flag and the file in the way.

Oracle: the OS itself refuses to create anything under a regular file (os.makedirs raises), which is what the
CLIs used to surface as a FileExistsError / NotADirectoryError traceback from inside mkdir, after the work.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import infer
import train
from minagent.cli_paths import file_in_the_way

ROOT = Path(__file__).resolve().parents[1]
OWN = ROOT / "tests" / "data" / "own_domain"


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "results"
    path.write_text("not a directory\n")
    with pytest.raises(OSError):  # the oracle: nothing can be made under it
        os.makedirs(path / "sub")
    return path


def test_the_file_in_the_way_is_the_nearest_existing_ancestor(tmp_path, a_file):
    assert file_in_the_way(a_file / "a" / "b.jsonl") == a_file
    assert file_in_the_way(tmp_path / "new" / "b.jsonl") is None  # missing directories are made by writers
    assert file_in_the_way(a_file) is None  # the path itself: each command says what it wants there


@pytest.mark.parametrize("argv", [
    ["exam", "--model", "m", "--no-search", "--exam", str(OWN / "exam.jsonl"), "--out", "{f}/r.jsonl"],
    ["distill", "--teacher", "m", "--no-search", "--questions", str(OWN / "exam.jsonl"), "--out", "{f}/t.jsonl"],
    ["index", "--corpus", str(OWN / "manual"), "--out", "{f}/index"],
    ["fetch", "--models-dir", "{f}/models"],
])
def test_infer_refuses_an_output_below_a_file(capsys, a_file, argv):
    argv = [a.replace("{f}", str(a_file)) for a in argv]
    with pytest.raises(SystemExit) as stop:
        infer.main(argv)
    assert stop.value.code == 2
    flag = argv[-2]
    err = capsys.readouterr().err
    assert f"{argv[0]} {flag} {a_file}/" in err and f"{a_file} is a file, not a directory" in err


@pytest.mark.parametrize("argv", [
    ["sft", "--model", "{model}", "--data", str(OWN / "trajectories.jsonl"), "--out", "{f}/run"],
    ["recipe", "--tier", "ci", "--work", "{f}/work"],
])
def test_train_refuses_an_output_below_a_file(a_file, tiny_dir, argv):
    argv = [a.replace("{f}", str(a_file)).replace("{model}", str(tiny_dir)) for a in argv]
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    assert str(stop.value.code).startswith(f"train.py: {argv[-2]} {a_file}/")
    assert f"{a_file} is a file, not a directory" in str(stop.value.code)


def test_no_traceback_from_the_command_line(a_file):
    done = subprocess.run([sys.executable, str(ROOT / "infer.py"), "exam", "--model", "m", "--no-search",
                           "--exam", str(OWN / "exam.jsonl"), "--out", str(a_file / "r.jsonl")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("nothing can be written under it")
