"""A finished teacher stage whose inputs change (a typo'd --teacher URL) keeps its output as teacher.previous/.

Oracle: the files written by the first run, read back byte for byte after a second run that fails at once.
"""
import pytest

from minagent.microdomain.pipeline import Stages


def _write(text):
    def build(d, resume):
        (d / "trajectories.jsonl").write_text(text)
    return build


def _fail(d, resume):
    raise ConnectionError("http://127.0.0.1:1/v1: connection refused")


def test_changed_inputs_keep_the_finished_output_one_generation(tmp_path):
    log = []
    Stages(tmp_path, log=log.append).run("teacher", {"teacher": "http://a/v1"}, _write("paid for\n"),
                                         resumable=True, keep_previous=True)
    with pytest.raises(ConnectionError):
        Stages(tmp_path, log=log.append).run("teacher", {"teacher": "http://typo/v1"}, _fail,
                                             resumable=True, keep_previous=True)
    assert (tmp_path / "teacher.previous" / "trajectories.jsonl").read_text() == "paid for\n"
    assert any("teacher.previous" in line for line in log)
    # the unfinished run's directory is no finished output: a third input replaces it, the kept one stays
    Stages(tmp_path, log=log.append).run("teacher", {"teacher": "http://b/v1"}, _write("second\n"),
                                         resumable=True, keep_previous=True)
    assert (tmp_path / "teacher.previous" / "trajectories.jsonl").read_text() == "paid for\n"
    assert (tmp_path / "teacher" / "trajectories.jsonl").read_text() == "second\n"
    # another finished output moves in, replacing the older generation
    Stages(tmp_path, log=log.append).run("teacher", {"teacher": "http://c/v1"}, _write("third\n"),
                                         resumable=True, keep_previous=True)
    assert (tmp_path / "teacher.previous" / "trajectories.jsonl").read_text() == "second\n"


def test_other_stages_are_replaced_as_before(tmp_path):
    Stages(tmp_path, log=lambda *a: None).run("cpt", {"x": 1}, _write("a\n"))
    Stages(tmp_path, log=lambda *a: None).run("cpt", {"x": 2}, _write("b\n"))
    assert not (tmp_path / "cpt.previous").exists()
    assert (tmp_path / "cpt" / "trajectories.jsonl").read_text() == "b\n"
