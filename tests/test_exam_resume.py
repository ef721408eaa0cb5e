"""An interrupted exam resumes: answers already given are kept on disk and reused, only the rest are asked, and
the results equal an uninterrupted run's (the oracle: the same scripted model run straight through)."""
import json

import pytest

from minagent.agent.llm import ScriptedLLM
from minagent.microdomain import evaluate
from minagent.microdomain.evaluate import System, evaluate_system
from minagent.microdomain.partial_results import PartialResults

ITEMS = [{"id": f"q{i}", "question": f"What is the value of setting_{i}?", "answer": str(10 * i)} for i in range(5)]
ITEMS.append({"id": "mc", "question": "Which unit?", "choices": {"A": "ms", "B": "s", "C": "MB", "D": "%"},
              "correct": "C"})
SETTINGS = {"model": "/models/m", "mode": "closed-book", "k": 3}


def answering(asked: list, stop_after: int | None = None):
    def script(messages, n, prefix):
        question = messages[-1]["content"]
        if stop_after is not None and len(asked) == stop_after:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of the exam
        item = next(i for i in ITEMS if i["question"] in question)
        asked.append(item["id"])
        return [f"Answer: {item.get('correct') or item['answer']}"] * n
    return ScriptedLLM(script)


def run(tmp_path, llm, items=ITEMS, settings=SETTINGS, name="results.jsonl"):
    partial = PartialResults(tmp_path / name, settings)
    partial.load()
    return evaluate_system(System("s", "m", "closed-book"), llm, items, tmp_path / name, progress=False,
                           partial=partial)


def test_an_interrupted_exam_resumes_where_it_stopped(tmp_path):
    straight = run(tmp_path, answering([]), name="straight.jsonl")
    asked = []
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, answering(asked, stop_after=4))
    assert len(asked) == 4 and not (tmp_path / "results.jsonl").exists()
    assert len((tmp_path / "results.jsonl.partial").read_text().splitlines()) == 1 + 4  # settings + 4 answers
    asked_again = []
    resumed = run(tmp_path, answering(asked_again))
    assert len(asked_again) == 2 and resumed == straight  # only the two unanswered questions were asked
    assert (tmp_path / "results.jsonl").read_text() == (tmp_path / "straight.jsonl").read_text()
    assert not (tmp_path / "results.jsonl.partial").exists()


def test_an_edited_question_is_asked_again_and_a_torn_last_line_is_ignored(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, answering([], stop_after=3))
    path = tmp_path / "results.jsonl.partial"
    path.write_bytes(path.read_bytes() + b'{"item": {"id": "q3", "quest')  # killed while writing a line
    edited = [dict(ITEMS[0], answer="0 ms")] + ITEMS[1:]
    asked = []
    s = run(tmp_path, answering(asked), items=edited)
    assert s["n"] == 6 and sorted(asked) == ["mc", "q0", "q3", "q4"]  # q0 was edited, q3's line was torn


def test_answers_from_other_settings_are_never_mixed_in(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, answering([], stop_after=2))
    with pytest.raises(ValueError, match=r"results.jsonl.partial holds the answers of an interrupted run with other "
                                         r"settings \(model: '/models/m' there, '/models/other' now\)"):
        run(tmp_path, answering([]), settings={**SETTINGS, "model": "/models/other"})
    (tmp_path / "x.jsonl.partial").write_text("not json\n")
    with pytest.raises(ValueError, match=r"x.jsonl.partial: not a minagent exam's partial results"):
        PartialResults(tmp_path / "x.jsonl", SETTINGS).load()
    bad = tmp_path / "results.jsonl.partial"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl.partial:2: not a result line"):
        PartialResults(tmp_path / "results.jsonl", SETTINGS).load()


def test_the_exam_command_keys_its_answers_on_every_setting_that_changes_them(tmp_path, monkeypatch):
    """`infer.py exam` (exam_command) resumes through the same file; a setting the mode reads (max_len) is part of
    the key, one it never reads (closed-book's search k) is not: that resume was refused."""
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    asked = []
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering(asked, stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        evaluate.exam_command("m", exam, tmp_path / "r.jsonl", mode="closed-book", log=None)
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering(asked))
    with pytest.raises(ValueError, match=r"max_len: None there, 64 now"):
        evaluate.exam_command("m", exam, tmp_path / "r.jsonl", mode="closed-book", max_len=64, log=None)
    logged = []
    s = evaluate.exam_command("m", exam, tmp_path / "r.jsonl", mode="closed-book", k=5, extractor=True,
                              log=logged.append)
    assert s["accuracy"] == 1.0 and len(asked) == 6 and "3 questions already answered" in logged[0]


def test_out_in_a_directory_that_does_not_exist_yet(tmp_path):
    """--out new/dir/results.jsonl: the directory is made, as it was before the partial file (its first write)."""
    partial = PartialResults(tmp_path / "new" / "dir" / "results.jsonl", SETTINGS)
    assert partial.load() == 0
    out = tmp_path / "new" / "dir" / "results.jsonl"
    s = evaluate_system(System("s", "m", "closed-book"), answering([]), ITEMS, out, progress=False, partial=partial)
    assert s["n"] == 6 and out.is_file() and not partial.path.exists()


def test_a_model_retrained_at_the_same_path_is_not_resumed(tmp_path, monkeypatch):
    """The settings name the model and index by path; their files are part of the key too: answers of the model
    that was at that path before (the recipe rewrites runs/<tier>/sft/run/final/model) are not mixed in."""
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"old weights")
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering([], stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        evaluate.exam_command(str(model), exam, tmp_path / "r.jsonl", mode="closed-book", log=None)
    (model / "model.safetensors").write_bytes(b"new weights, retrained")
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering([]))
    with pytest.raises(ValueError, match=r"other settings \(model files: "):
        evaluate.exam_command(str(model), exam, tmp_path / "r.jsonl", mode="closed-book", log=None)


def test_ctrl_c_keeps_the_answers_and_says_how_to_resume(tiny_dir, tmp_path):
    """`infer.py exam` stopped with Ctrl-C: one line on stderr, exit 130, the answers so far in OUT.partial."""
    from cli_interrupt import interrupt_when

    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is setting_{i}?", "answer": "1"}) + "\n"
                            for i in range(2000)))
    out, partial = tmp_path / "results.jsonl", tmp_path / "results.jsonl.partial"
    code, err = interrupt_when("infer.py", ["exam", "--model", tiny_dir, "--exam", exam, "--out", out,
                                            "--mode", "closed-book"],
                               lambda: partial.is_file() and len(partial.read_text().splitlines()) >= 3)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "interrupted; run the same command again to resume")
    assert len(partial.read_text().splitlines()) >= 3 and not out.exists()


def test_a_second_run_on_the_same_out_is_refused_while_the_first_writes(tmp_path):
    first = PartialResults(tmp_path / "r.jsonl", SETTINGS)
    first.load()
    first.open()
    first.add(ITEMS[0], {"id": "q0"})
    with pytest.raises(ValueError, match=r"r\.jsonl\.partial: another exam run is writing these results now"):
        PartialResults(tmp_path / "r.jsonl", SETTINGS).load()
    first.close()  # interrupted: the lock goes with the process's file
    second = PartialResults(tmp_path / "r.jsonl", SETTINGS)
    assert second.load() == 1
    second.open()
    second.finish()
    assert not (tmp_path / "r.jsonl.partial").exists()


@pytest.mark.parametrize("model, label", [("runs/my-sft/final/model", "my-sft"),
                                          ("runs/tiny/sft/run/final/model", "sft"),
                                          ("models/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
                                          ("http://127.0.0.1:8000/v1", "v1")])
def test_the_table_names_the_model_not_the_run_layout(tmp_path, monkeypatch, model, label):
    """Every README path to a trained model ends in final/model, so each row was labelled "model agent"."""
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    monkeypatch.setattr("minagent.agent.commands.load_llm", lambda *a, **k: answering([]))
    logged = []
    evaluate.exam_command(model, exam, tmp_path / "r.jsonl", mode="closed-book", log=logged.append)
    assert f"| {label} closed-book " in logged[-1]


def test_an_unknown_split_lists_the_splits_the_file_has(tmp_path):
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps({**i, "split": "train" if n % 2 else "heldout"}) + "\n"
                            for n, i in enumerate(ITEMS)))
    with pytest.raises(ValueError, match=r"no questions with split 'test' \(the file's splits: heldout, train\)"):
        evaluate.exam_command("m", exam, tmp_path / "r.jsonl", mode="closed-book", split="test", log=None)
