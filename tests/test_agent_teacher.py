"""Teacher trajectories end to end over HTTP: the oracle teacher served by minagent.agent.server on 127.0.0.1,
called by HTTPChatLLM, driven by distill(); the output must be read by the training loader (the oracle for the
format), and a server killed mid-run must lose nothing and duplicate nothing."""
import json
import threading
from pathlib import Path

import pytest

from minagent.agent import Agent, AgentConfig, HTTPChatLLM, LLMError, ScriptedLLM, distill, oracle_teacher
from minagent.agent.server import make_server
from minagent.agent.teacher import first_thought
from minagent.agent.tools import make_search
from minagent.retrieval import Passage, Retriever
from minagent.training.trajectories import encode_trajectories, read_trajectories
from training_tiny import tiny_checkpoint

FACTS = {f"Which command does task {i}?": {"answer": f"git cmd{i}", "query": f"task {i}"} for i in range(6)}
QUESTIONS = [{"id": f"q{i}", "question": q, "answer": f["answer"]} for i, (q, f) in enumerate(FACTS.items())]


@pytest.fixture(scope="module")
def search():
    passages = [Passage(f"To do task {i}, run git cmd{i}.", f"git-cmd{i}.txt", f"git-cmd{i}", "", 0, 30)
                for i in range(6)]
    return make_search(Retriever.from_passages(passages))


class Server:
    def __init__(self, llm, port=0):
        self.llm = llm
        self.start(port)

    def start(self, port=None):
        self.srv = make_server(self.llm, "127.0.0.1", self.port if port is None else port)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def kill(self):
        self.srv.shutdown()
        self.srv.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"


def read_ids(path):
    return [json.loads(line)["id"] for line in Path(path).read_text().splitlines() if line.strip()]


def test_distill_over_http_writes_trajectories_the_training_loader_reads(tmp_path, search):
    server = Server(oracle_teacher(FACTS))
    try:
        teacher = HTTPChatLLM(server.url, retries=1, backoff=0.01)
        out = tmp_path / "traj.jsonl"
        counts = distill(QUESTIONS[:3], Agent(teacher, {"search": search}), out, ftp_llm=teacher, log=None)
    finally:
        server.kill()
    assert counts == {"kept": 3, "rejected": 0, "skipped": 0}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    first = rows[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "tool", "assistant"]
    assert first[2]["content"].startswith("Thought: The manual should say this directly. I will search")  # FTP
    assert "To do task 0, run git cmd0." in first[3]["content"]
    assert first[4]["content"] == "Thought: The passages answer it.\nCode:\n```py\nfinal_answer('git cmd0')\n```<end_code>"
    tok_dir = tiny_checkpoint(tmp_path / "tiny")
    from minagent import load_tokenizer
    trajectories = read_trajectories(out)
    assert len(trajectories) == 3
    encoded = encode_trajectories(trajectories, load_tokenizer(tok_dir), max_length=4096, log=lambda *_: None)
    assert all(any(e.trainable) for e in encoded)


def test_a_server_killed_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, search):
    server = Server(oracle_teacher(FACTS))
    out = tmp_path / "traj.jsonl"
    seen = []

    def kill_after_two(item, result, reason):
        seen.append(item["id"])
        if len(seen) == 2:
            server.kill()
    teacher = HTTPChatLLM(server.url, retries=1, backoff=0.01)
    with pytest.raises(LLMError):
        distill(QUESTIONS, Agent(teacher, {"search": search}), out, log=None, on_result=kill_after_two)
    assert read_ids(out) == ["q0", "q1"]
    # restarted on the same port; this time it also dies once mid-run and comes back during the client's backoff
    server.start()
    restarts = []

    def blip(item, result, reason):
        if item["id"] == "q3":
            server.kill()
            t = threading.Timer(0.3, server.start)
            restarts.append(t)
            t.start()
    teacher = HTTPChatLLM(server.url, retries=6, backoff=0.1)
    counts = distill(QUESTIONS, Agent(teacher, {"search": search}), out, log=None, on_result=blip)
    server.kill()
    assert counts == {"kept": 4, "rejected": 0, "skipped": 2}
    assert read_ids(out) == [q["id"] for q in QUESTIONS]


def test_rejection_filter_and_torn_line_repair(tmp_path):
    good = "Thought: t\nCode:\n```py\nprint(1 / 0)\n```"  # an execution error the agent recovers from: kept
    scripts = {
        "kept": [good, "Thought: t\nCode:\n```py\nfinal_answer('yes')\n```"],
        "wrong": ["Thought: t\nCode:\n```py\nfinal_answer('no')\n```"],
        "unparsed": ["just words", "Thought: t\nCode:\n```py\nfinal_answer('yes')\n```"],
        "maxed": [good, good, "Final answer: yes"],
    }
    items = [{"id": k, "question": k, "answer": "yes"} for k in scripts]
    out = tmp_path / "t.jsonl"
    out.write_text('{"id": "old", "messages": []}\n{"id": "torn", "mess')  # a crash mid-write
    for item in items:
        distill([item], Agent(ScriptedLLM(scripts[item["id"]]), {}, AgentConfig(max_steps=2)), out, log=None)
    assert read_ids(out) == ["old", "kept"]
    rejected = {json.loads(x)["id"]: json.loads(x)["rejected"] for x in
                (tmp_path / "t.jsonl.rejected.jsonl").read_text().splitlines()}
    assert rejected == {"wrong": "wrong answer 'no'", "unparsed": "1 step(s) did not parse",
                        "maxed": "ran out of steps"}


def test_first_thought_is_the_first_paragraph_of_plain_reasoning():
    llm = ScriptedLLM(["Thought: The stash page covers this.\nIt saves work.\n\nSo the answer is git stash."])
    assert first_thought(llm, "How to put work aside?") == "Thought: The stash page covers this.\nIt saves work."
    assert llm.calls[0][1]["session"] == "ftp"


def test_the_server_answers_malformed_requests_with_400_and_the_field(tmp_path):
    """Checked over a real socket with http.client (the oracle is the HTTP status and the named field); the model
    behind it (a scripted one) must never be reached by a bad request."""
    import http.client

    calls = []
    server = Server(ScriptedLLM(lambda messages, n, prefix: calls.append(n) or ["ok"] * n))
    ok = {"messages": [{"role": "user", "content": "hi"}]}
    cases = [
        (b"{not json", "bad request: Expecting property name"),
        (json.dumps({**ok, "n": 1_000_000}).encode(), "n must be in [1, 64]"),
        (json.dumps({**ok, "n": "3"}).encode(), "n must be an integer"),
        (json.dumps({**ok, "temperature": -1}).encode(), "temperature must be in [0, 2]"),
        (json.dumps({**ok, "top_p": 0}).encode(), "top_p must be in (0, 1]"),
        (json.dumps({**ok, "max_tokens": 0}).encode(), "max_tokens must be in [1, "),
        (json.dumps({**ok, "stop": [1]}).encode(), "stop must be a string or a list"),
        (json.dumps({"messages": [{"role": "user", "content": ["x"]}]}).encode(), "messages[0].content[0] must be"),
        (json.dumps({"messages": []}).encode(), "messages must be a non-empty"),
        (json.dumps([ok]).encode(), "the body must be a JSON object"),
        (json.dumps(ok)[:-1].encode() + b', "n": Infinity}', "n must be an integer, got inf"),
    ]
    try:
        for body, message in cases:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            text = reply.read().decode()
            assert reply.status == 400 and message in text, (body[:60], reply.status, text)
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Length", str(1 << 40))  # refused from the header, before any byte is read
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        good = HTTPChatLLM(server.url, retries=0).complete(ok["messages"], n=2, temperature=0.5)
        assert good == ["ok", "ok"] and calls == [2]
    finally:
        server.kill()
