"""distill()'s resumable output, red-teamed: a run stopped after N questions, a last line cut mid-write, lines
distill did not write, an output directory that does not exist yet, and text that line-splitting readers see
as a line break.

Oracles: hand-checked files (what must be in them, byte for byte, after a resume), Python's documented
`str.splitlines()` line boundaries (U+0085, U+2028, U+2029 end a line there), and the training loader
(minagent.training.trajectories) for "the output is trajectory JSONL".
"""
import json

import pytest

from minagent.agent import Agent, AgentConfig, ScriptedLLM, distill, oracle_teacher
from minagent.agent.teacher import first_thought
from minagent.training.trajectories import read_trajectories

FACTS = {f"Which command does task {i}?": {"answer": f"git cmd{i}"} for i in range(5)}
QUESTIONS = [{"id": f"q{i}", "question": q, "answer": f["answer"]} for i, (q, f) in enumerate(FACTS.items())]


def oracle_agent(facts=FACTS):
    return Agent(oracle_teacher(facts), {}, AgentConfig(max_steps=3))


def ids_in(path):
    return [json.loads(line)["id"] for line in path.read_bytes().decode().split("\n") if line.strip()]


class Stop(Exception):
    pass


def test_a_run_stopped_after_n_questions_resumes_without_duplicates_or_losses(tmp_path):
    out = tmp_path / "t.jsonl"
    done = []

    def stop_after_two(item, result, reason):
        done.append(item["id"])
        if len(done) == 2:
            raise Stop  # the process dies right after the second question was written
    with pytest.raises(Stop):
        distill(QUESTIONS, oracle_agent(), out, log=None, on_result=stop_after_two)
    assert ids_in(out) == ["q0", "q1"]
    counts = distill(QUESTIONS, oracle_agent(), out, log=None)
    assert counts == {"kept": 3, "rejected": 0, "skipped": 2}
    assert ids_in(out) == [q["id"] for q in QUESTIONS]
    assert [t.messages[-1]["content"] for t in read_trajectories(out)][-1].startswith("Thought: The passages")


def test_a_last_line_cut_mid_write_is_removed_with_a_message_naming_it(tmp_path):
    out = tmp_path / "t.jsonl"
    distill(QUESTIONS[:2], oracle_agent(), out, log=None)
    whole = out.read_bytes()
    lines = whole.split(b"\n")
    out.write_bytes(whole[:len(lines[0]) + 1 + len(lines[1]) // 2])  # q1's line cut halfway: a crash mid-write
    said = []
    counts = distill(QUESTIONS, oracle_agent(), out, log=said.append)
    assert counts == {"kept": 4, "rejected": 0, "skipped": 1}  # q1 asked again
    assert ids_in(out) == ["q0", "q1", "q2", "q3", "q4"]
    assert out.read_bytes().startswith(lines[0] + b"\n{")  # q0's line as it was, q1's written anew after it
    note = [m for m in said if "cut off" in m]
    assert len(note) == 1 and f"{out}:2" in note[0], said
    assert len(read_trajectories(out)) == 5


def test_a_cut_line_is_reported_even_when_the_caller_silences_per_question_logs(tmp_path, capsys):
    """The recipe calls distill(..., log=None): a repair of its file must still be visible."""
    out = tmp_path / "t.jsonl"
    out.write_text('{"id": "q0", "messages": []}\n{"id": "q1", "mess')
    distill(QUESTIONS[:1], oracle_agent(), out, log=None)
    assert f"{out}:2" in capsys.readouterr().err


@pytest.mark.parametrize("bad_line", [
    b'{"messages": [{"role": "user", "content": "a line from another tool"}]}',  # valid JSON, no id
    b'{"id": "x", "question": "caf\xe9"}',                                      # a Latin-1 byte from an editor
    b'[1, 2]',                                                                    # not an object
])
def test_a_bad_line_before_the_last_is_named_and_the_file_left_untouched(tmp_path, bad_line):
    """Only the last line can be cut by a crash (every line is one append). Any other unreadable line was
    put there by something else, and may hold a paid-for trajectory: it was silently deleted (or the run died
    with a bare TypeError)."""
    out = tmp_path / "t.jsonl"
    data = b'{"id": "q0", "messages": []}\n' + bad_line + b'\n{"id": "q1", "messages": []}\n'
    out.write_bytes(data)
    agent = Agent(ScriptedLLM(lambda *a: pytest.fail("no question may run before the file is checked")), {})
    with pytest.raises(ValueError, match=f"{out}:2: "):
        distill(QUESTIONS, agent, out, log=None)
    assert out.read_bytes() == data


def test_a_file_with_old_mac_line_ends_is_not_emptied(tmp_path):
    """The repair split lines on \\n only: a file whose lines end in \\r read as one torn line and was
    rewritten empty. The project's JSONL reader (and text mode) end lines at \\r as well."""
    out = tmp_path / "t.jsonl"
    out.write_bytes(b'{"id": "q0", "messages": []}\r{"id": "q1", "messages": []}\r')
    counts = distill(QUESTIONS[:3], oracle_agent(), out, log=None)
    assert counts == {"kept": 1, "rejected": 0, "skipped": 2}
    assert out.read_bytes().startswith(b'{"id": "q0", "messages": []}\r{"id": "q1", "messages": []}\r')


def test_the_output_directory_is_created_before_the_first_question(tmp_path):
    """The CLI's path check (minagent/cli_paths.py) lets a missing directory through because "missing
    ancestors are created by the writers"; distill did not create it and died after paying for question 1."""
    out = tmp_path / "runs" / "new" / "t.jsonl"
    assert distill(QUESTIONS[:2], oracle_agent(), out, log=None)["kept"] == 2
    assert ids_in(out) == ["q0", "q1"]


def test_an_output_path_that_is_a_directory_is_refused_before_any_question_runs(tmp_path):
    agent = Agent(ScriptedLLM(lambda *a: pytest.fail("no question may run")), {})
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        distill(QUESTIONS, agent, tmp_path, log=None)


def test_line_separators_inside_text_stay_inside_their_line(tmp_path):
    """ensure_ascii=False leaves U+0085 (what a cp1252 "..." becomes when a manual is read as Latin-1),
    U+2028 and U+2029 raw; str.splitlines() (and the recipe's own reader of this file) ends a line at each."""
    text = "Manual says\x85see page 2\u2028and\u2029more"
    facts = {f"Which command does task {i}?": {"answer": f"git cmd{i}", "query": text} for i in range(2)}
    qs = [{"id": f"q{i}", "question": q, "answer": f["answer"]} for i, (q, f) in enumerate(facts.items())]
    agent = Agent(oracle_teacher(facts), {"search": lambda query, k=3: query}, AgentConfig(max_steps=3))
    out = tmp_path / "t.jsonl"
    distill(qs, agent, out, log=None)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1"]
    assert text in rows[0]["messages"][3]["content"]  # the observation, unchanged once decoded
    assert len(read_trajectories(out)) == 2


def test_the_oracle_teachers_first_thought_on_an_unknown_question_is_not_a_crash():
    """Its agent turns answer an unknown question with 'unknown'; its chain of thought raised KeyError
    (served by `infer.py serve --oracle`, that is an HTTP 500 retried until the client gives up)."""
    prefix = first_thought(oracle_teacher(FACTS), "A question the oracle was not given?")
    assert prefix.startswith("Thought: ")


def test_a_reply_with_a_lone_surrogate_is_rejected_not_a_crash_that_every_resume_repeats(tmp_path):
    """JSON can carry a lone "\\ud800" escape (a server splitting an emoji's surrogate pair); UTF-8 cannot
    encode it (RFC 3629), so writing the row raised UnicodeEncodeError, the run stopped, and every resume asked
    the same question and stopped there again."""
    step = "Thought: the emoji \ud83d was cut\nCode:\n```py\nfinal_answer('git cmd0')\n```"
    out = tmp_path / "t.jsonl"
    for _ in range(2):
        counts = distill(QUESTIONS[:2], Agent(ScriptedLLM(lambda m, n, p: [step] * n), {}), out, log=None)
    assert counts == {"kept": 0, "rejected": 0, "skipped": 2}
    rejected = tmp_path / "t.jsonl.rejected.jsonl"
    rows = [json.loads(line) for line in rejected.read_bytes().decode("utf-8").splitlines()]  # strict UTF-8
    assert rows[0]["id"] == "q0" and "surrogate" in rows[0]["rejected"]
    assert not out.exists() or out.read_bytes() == b""


def test_a_first_thought_that_overflows_the_context_does_not_stop_every_resume_at_that_question(tmp_path):
    """The agent ends a question whose conversation outgrows the context and the run goes on (executor.py);
    the first-thought call ran outside the agent, so its ContextOverflow stopped distill, and each resume
    stopped again at the same question."""
    from minagent.agent.llm import ContextOverflow

    class NoRoomForThoughts:
        def complete(self, messages, session="agent", **kw):
            if session == "ftp":
                raise ContextOverflow("prompt of 9000 tokens does not fit the context of 4096")
            return oracle_teacher(FACTS).complete(messages, **kw)
    llm = NoRoomForThoughts()
    out = tmp_path / "t.jsonl"
    counts = distill(QUESTIONS[:2], Agent(llm, {}, AgentConfig(max_steps=3)), out, ftp_llm=llm, log=None)
    assert counts == {"kept": 2, "rejected": 0, "skipped": 0}
    assert [t.messages[2]["content"].startswith("Thought: I will search") for t in read_trajectories(out)] == [True] * 2
