"""User JSONL files (trajectories, CPT documents, exam questions): every kind of bad line is reported as
`file:line: what is wrong` and can be skipped; what editors and other tools really write is read.

Oracle: hand-written files whose bad line and expected message are known; the good lines around each bad one
must come through unchanged in skip mode.
"""
import json

import pytest

from minagent.agent.teacher import read_questions
from minagent.training.cpt_data import read_cpt_documents
from minagent.training.errors import TrainingDataError
from minagent.training.trajectories import read_trajectories

TURNS = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def write_lines(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def messages(**first):
    return json.dumps({"messages": [{**TURNS[0], **first}, TURNS[1]]})


BAD_LINES = [
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', r"not UTF-8 \(byte 0xe9 at column 47\)"),
    (messages(role={"name": "user"}), r"messages\[0\].role is \{'name': 'user'\}; expected one of"),
    (messages(role=["user"]), r"messages\[0\].role is \['user'\]; expected one of"),
    ("[" * 100_000 + "]" * 100_000, r"not usable JSON \(nested too deeply\)"),
    (messages(content="\ud800"), r"a string holds a lone surrogate"),
]


@pytest.mark.parametrize("line,message", BAD_LINES, ids=["latin-1", "dict-role", "list-role", "deep", "surrogate"])
def test_bad_trajectory_line_is_named_and_skippable(tmp_path, line, message):
    good = json.dumps({"messages": TURNS})
    path = write_lines(tmp_path / "t.jsonl", [good, line, good])
    with pytest.raises(TrainingDataError, match=rf"t\.jsonl:2: {message}"):
        read_trajectories(path)
    logged = []
    got = read_trajectories(path, on_bad_line="skip", log=logged.append)
    assert [t.where for t in got] == [f"{path}:1", f"{path}:3"]
    assert len(logged) == 2 and f"{path}:2" in logged[0]  # the line, then the count
    assert "1 malformed line skipped" in logged[1]


def test_byte_order_mark_and_escaped_text_are_read(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [b"\xef\xbb\xbf" + json.dumps({"messages": TURNS}).encode(),
                                              messages(content="\ud83d\ude00 caf\u00e9")])
    got = read_trajectories(path)
    assert [t.messages[0]["content"] for t in got] == ["q", "\U0001F600 caf\u00e9"]  # a surrogate *pair* is text
    docs = write_lines(tmp_path / "d.jsonl", [b'\xef\xbb\xbf{"text": "one"}', '{"text": "\\u00e9t\\u00e9"}'])
    assert [d.text for d in read_cpt_documents(docs)] == ["one", "\u00e9t\u00e9"]


def test_bad_cpt_line_is_named_and_skippable(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "one"}', b'{"text": "\xff"}', '{"text": "\\udfff"}',
                                              '{"text": "two"}'])
    with pytest.raises(TrainingDataError, match=r"d\.jsonl:2: not UTF-8 \(byte 0xff"):
        read_cpt_documents(path)
    logged = []
    assert [d.text for d in read_cpt_documents(path, "skip", logged.append)] == ["one", "two"]
    assert [m.split(": ")[0] for m in logged[:2]] == [f"skipped {path}:2", f"skipped {path}:3"]
    assert len(logged) == 3 and "2 malformed lines skipped" in logged[2], logged


def test_bad_question_line_is_named(tmp_path):
    path = write_lines(tmp_path / "exam.jsonl", ['{"question": "a?", "answer": "x"}', b'{"question": "\xe9?"}'])
    with pytest.raises(ValueError, match=r"exam\.jsonl:2: not UTF-8"):
        read_questions(path)
    path = write_lines(tmp_path / "exam.jsonl", [b'\xef\xbb\xbf{"question": "a?", "answer": 1}', "",
                                                 '{"question": "b?", "choices": {"A": "x", "B": "y"}, "correct": "b"}'])
    assert [(q["id"], q["question"]) for q in read_questions(path)] == [("1", "a?"), ("3", "b?")]
    with pytest.raises(FileNotFoundError, match="a directory, not a JSONL file"):
        read_questions(tmp_path)
    # numbers where text is expected (a spreadsheet export), and old-Mac line ends (a lone CR)
    path.write_bytes(b'{"question": "a?", "answer": 40, "aliases": [40.0, "forty"]}\r'
                     b'{"question": "b?", "choices": {"A": 30, "B": 45}, "correct": "B"}\r')
    assert [(q["id"], q["question"]) for q in read_questions(path)] == [("1", "a?"), ("2", "b?")]


@pytest.mark.parametrize("line,message", [
    ('{"question": "a?", "choices": ["x", "y"], "correct": "A"}', r'"choices" must be an object'),
    # one string of aliases would be read as its characters: "0" would then match "40 MB/s"
    ('{"question": "a?", "answer": "40", "aliases": "40 MB/s"}', r'"aliases" must be a list of strings, like \["40 MB/s"\]'),
    ('{"question": "a?", "choices": {"A": "x", "B": "y"}, "correct": "E"}', r'"correct" is \'E\', which is not one of'),
    ('{"question": "a?", "correct": "A"}', r'"correct" is \'A\', which is not one of the choices \(none given\)'),
    ('{"question": "a?"}', r'no gold answer'),
    # multiple choice scored by the letter its answer names: "60" names none of these options, so every reply,
    # the right one included, would score wrong (hand-checked)
    ('{"question": "a?", "choices": {"A": "15 s", "B": "30 s"}, "answer": "60"}',
     r'"answer" .60. is neither an option letter nor the text of one of the choices \[.A., .B.\]'),
    ('{"question": "  ", "answer": "x"}', r'expected an object with a non-empty "question"'),
])
def test_question_fields_that_would_score_silently_wrong_are_refused(tmp_path, line, message):
    path = write_lines(tmp_path / "exam.jsonl", ['{"question": "ok?", "answer": "x"}', line])
    with pytest.raises(ValueError, match=rf"exam\.jsonl:2: {message}"):
        read_questions(path)
    if "gold" in message or "neither" in message:
        assert [q["question"] for q in read_questions(path, gold=False)] == ["ok?", "a?"]


def test_lower_case_option_letters_are_read_as_the_letters_replies_name(tmp_path):
    """Hand-checked: with choices {"a": ..., "b": ...} and "correct": "b", the replies "b", "B" and "(b)" all scored
    wrong (to_letter reads letters in upper case and found no such key). The keys are read in upper case."""
    from minagent.agent.multiple_choice import to_letter
    path = write_lines(tmp_path / "exam.jsonl", ['{"question": "unit?", "choices": {"a": "minutes", "b": "seconds"}, '
                                                 '"correct": "b"}'])
    q = read_questions(path)[0]
    assert q["choices"] == {"A": "minutes", "B": "seconds"} and q["correct"] == "B"
    assert [to_letter(r, q["choices"]) for r in ("b", "B", "(b)", "seconds")] == ["B"] * 4
    clash = write_lines(tmp_path / "clash.jsonl",
                        ['{"question": "q?", "choices": {"a": "x", "A": "y"}, "correct": "a"}'])
    with pytest.raises(ValueError, match="differ only in case"):
        read_questions(clash)
