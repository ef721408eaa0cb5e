"""Trajectory JSONL as users really write it, line by line: each malformed line stops the run with
`file:line: what is wrong` (--on-bad-line fail) or is skipped, named and counted (skip), as trajectories.py's
docstring says; the harmless variations (BOM, CRLF, blank lines, no final newline, extra fields) read as the clean
file does. Expected line numbers and messages are hand-checked against the files written here."""
import json

import pytest

from minagent.training.cpt_data import read_cpt_documents
from minagent.training.errors import TrainingDataError
from minagent.training.trajectories import read_trajectories

GOOD = {"messages": [{"role": "user", "content": "Which command lists branches?"},
                     {"role": "assistant", "content": "Thought: git branch.\nCode:\n```py\nfinal_answer('git branch')"
                                                      "\n```<end_code>"}]}
GOOD_LINE = json.dumps(GOOD)


def _msgs(*pairs):
    return json.dumps({"messages": [dict(zip(("role", "content"), p)) for p in pairs]})


BAD = {
    "not JSON": ('{"messages": [', r"not valid JSON \(Expecting value at column 15\)"),
    "ShareGPT": (json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
                 r'ShareGPT-style \{"conversations": .* is not read; expected \{"messages": \[\{"role"'),
    "wrong role": (_msgs(("user", "q"), ("gpt", "a")), r"messages\[1\]\.role is 'gpt'; expected one of assistant, "
                                                       r"observation, system, tool, user"),
    "missing role": (json.dumps({"messages": [{"content": "q"}]}), r"messages\[0\]\.role is None; expected one of"),
    "missing content": (json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}),
                        r'messages\[0\] has no "content" \(expected a string\)'),
    "non-string content": (json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant",
                                       "content": [{"type": "text", "text": "a"}]}]}),
                           r"messages\[1\]\.content must be a string, got list"),
    "empty conversation": ('{"messages": []}', "the messages list is empty"),
    "empty list": ("[]", "the messages list is empty"),
    "no assistant turn": (_msgs(("system", "s"), ("user", "q"), ("tool", "obs")),
                          "no assistant turn with content: nothing to train on"),
    "blank assistant turn": (_msgs(("user", "q"), ("assistant", "  \n")), "no assistant turn with content"),
    "late system message": (_msgs(("user", "q"), ("system", "s"), ("assistant", "a")),
                            "a system message may only come first"),
    "OpenAI tool call": (json.dumps({"messages": [{"role": "user", "content": "q"}, {
        "role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "search", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "1", "content": "r"}]}),
                         r"messages\[1\]\.tool_calls: tool calls are not supported"),
    "a message that is a string": ('["hi"]', r"messages\[0\] is str, expected an object with role and content"),
    "a number": ("7", r'expected \{"messages": \[\.\.\.\]\} or a JSON list of messages'),
    "not UTF-8": (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', r"not UTF-8 \(byte 0xe9 at column 47\)"),
    "lone surrogate": ('{"messages": [{"role": "user", "content": "\\ud800"}]}',
                       "a string holds a lone surrogate escape"),
}


def _write(path, lines, newline=b"\n", bom=False, final_newline=True):
    raw = newline.join(line if isinstance(line, bytes) else line.encode() for line in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw + (newline if final_newline else b""))
    return path


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_malformed_line_is_named_or_skipped_and_counted(tmp_path, name, newline):
    line, message = BAD[name]
    # line 1 good, 2 blank, 3 bad, 4 good (no final newline): the bad one is line 3 whatever the line ends
    path = _write(tmp_path / "t.jsonl", [GOOD_LINE, b"", line, GOOD_LINE], newline, bom=True, final_newline=False)
    with pytest.raises(TrainingDataError, match=rf"t\.jsonl:3: {message}") as error:
        read_trajectories(path)
    assert str(error.value).endswith(" (use --on-bad-line skip to skip such lines)")
    logged = []
    got = read_trajectories(path, on_bad_line="skip", log=logged.append)
    assert [t.where for t in got] == [f"{path}:1", f"{path}:4"]
    assert [t.messages for t in got] == [GOOD["messages"]] * 2
    assert logged[0].startswith(f"skipped {path}:3: ") and len(logged) == 2
    assert logged[1] == f"WARNING: {path}: 1 malformed line skipped (--on-bad-line skip), 2 trajectories read"


def test_harmless_variations_read_as_the_clean_file(tmp_path):
    """BOM, CRLF, a lone CR (old Mac exports), blank and whitespace-only lines, no final newline, extra fields
    (id, answer, name) and empty tool_calls: the same trajectories, at the lines where they are."""
    clean = read_trajectories(_write(tmp_path / "clean.jsonl", [GOOD_LINE, GOOD_LINE]))
    extra = json.dumps({"id": 7, "answer": "git branch", "messages": [
        {"role": "user", "content": GOOD["messages"][0]["content"], "name": "u"},
        {**GOOD["messages"][1], "tool_calls": []}]})
    messy = _write(tmp_path / "messy.jsonl", [GOOD_LINE, b"   ", b"", extra.encode()], b"\r\n", bom=True,
                   final_newline=False)
    got = read_trajectories(messy)
    assert [t.where for t in got] == [f"{messy}:1", f"{messy}:4"]
    assert [t.messages for t in got] == [t.messages for t in clean]
    mac = _write(tmp_path / "mac.jsonl", [GOOD_LINE, b"", GOOD_LINE], b"\r")
    assert [t.where for t in read_trajectories(mac)] == [f"{mac}:1", f"{mac}:3"]


def test_files_with_nothing_to_train_on(tmp_path):
    for content in (b"", b"\n\n", b"\xef\xbb\xbf\r\n"):
        path = tmp_path / "e.jsonl"
        path.write_bytes(content)
        with pytest.raises(TrainingDataError, match=r"e\.jsonl: no usable trajectory$"):
            read_trajectories(path)
    path = _write(tmp_path / "bad.jsonl", [BAD["wrong role"][0], BAD["not JSON"][0]])
    logged = []
    with pytest.raises(TrainingDataError, match=r"bad\.jsonl: no usable trajectory \(2 malformed lines skipped\)"):
        read_trajectories(path, on_bad_line="skip", log=logged.append)
    assert [m.split(": ")[0] for m in logged] == [f"skipped {path}:1", f"skipped {path}:2"]


def test_cpt_jsonl_skips_are_counted_too(tmp_path):
    path = _write(tmp_path / "c.jsonl", [b'{"text": "a"}', b'{"txt": "b"}', b"nope", b'{"text": "c"}'])
    logged = []
    docs = read_cpt_documents(path, "skip", logged.append)
    assert [d.source for d in docs] == [f"{path}:1", f"{path}:4"]
    assert logged[-1] == f"WARNING: {path}: 2 malformed lines skipped (--on-bad-line skip), 2 documents read"
    assert [m.split(": ")[0] for m in logged[:-1]] == [f"skipped {path}:2", f"skipped {path}:3"]
