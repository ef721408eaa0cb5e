"""The HTTP teacher (HTTPChatLLM) red-teamed with fake OpenAI-compatible servers on 127.0.0.1, and distill()
driven through one that fails on purpose.

Oracles: the official `openai` client (the request it sends for the same messages and parameters), RFC 9110
(Retry-After as seconds or an HTTP-date; 4xx other than 408/425/429 are not worth retrying), the OpenAI
chat-completion schema (choices[].message.content is a string or null), and an in-process run of the same
teacher without HTTP (what distill must write when every fault has been retried away).
"""
import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from minagent.agent import Agent, AgentConfig, HTTPChatLLM, LLMError, distill, oracle_teacher
from minagent.training.trajectories import read_trajectories
from test_agent_http_api import _reply as reply  # a handler step answering code + JSON body
from test_agent_http_api import _status_then_reset as status_then_reset

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Café? ünïcode"},
        {"role": "tool", "content": "Observation: 1"}]
OK = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}


class Fake:
    """A server answering POST /v1/chat/completions with plan[i] for the i-th request (the last one repeats)."""

    def __init__(self, plan):
        self.plan, self.hits = plan, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.hits.append((time.monotonic(), dict(self.headers), self.body))
                fake.plan[min(len(fake.hits), len(fake.plan)) - 1](self)
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def reset_after(head: bytes):
    """A 200 whose body stops after `head` with a TCP reset (the server process died mid-reply)."""
    return status_then_reset(200, head)


def call(plan, **kw):
    """(what complete() returned or raised, the server's hits)."""
    fake = Fake(plan)
    try:
        llm = HTTPChatLLM(fake.url, **{"model": "m", "retries": 3, "backoff": 0.02, "timeout": 2, **kw})
        try:
            return llm.complete(MSGS), fake.hits
        except Exception as e:  # noqa: BLE001 (the type is what the tests check)
            return e, fake.hits
    finally:
        fake.close()


def test_the_request_is_what_the_openai_client_sends():
    openai = pytest.importorskip("openai")
    fake = Fake([reply(200, OK)])
    params = dict(temperature=0.3, top_p=0.9, max_tokens=100, seed=4, stop=["<end_code>"], n=1)
    try:
        HTTPChatLLM(fake.url, model="m", api_key="sk-test").complete(MSGS, **params)
        client = openai.OpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)
        as_user = [{**m, "role": "user"} if m["role"] == "tool" else m for m in MSGS]  # observations are user turns
        client.chat.completions.create(model="m", messages=as_user, **params)
    finally:
        fake.close()
    (_, ours_h, ours), (_, theirs_h, theirs) = fake.hits
    assert json.loads(ours) == json.loads(theirs)
    lower = lambda h: {k.lower(): v for k, v in h.items()}  # noqa: E731
    for header in ("authorization", "content-type"):
        assert lower(ours_h)[header] == lower(theirs_h)[header]


def test_retry_after_as_an_http_date_is_honoured():
    def rate_limited(h):  # the date is made when the 429 is sent: a date made earlier may already be past
        reply(429, {"error": {"message": "slow down"}},
              [("Retry-After", email.utils.formatdate(time.time() + 2, usegmt=True))])(h)
    out, hits = call([rate_limited, reply(200, OK)])
    assert out == ["hello"]
    assert hits[1][0] - hits[0][0] >= 1.0  # an HTTP-date has whole seconds: at least 1 s of the 2 remain


def test_500_502_503_are_retried_with_growing_backoff():
    out, hits = call([reply(500, b"boom"), reply(502, b"<html>bad gateway</html>"), reply(503, b""),
                      reply(200, OK)], backoff=0.1)
    assert out == ["hello"] and len(hits) == 4
    gaps = [b[0] - a[0] for a, b in zip(hits, hits[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps


@pytest.mark.parametrize("fault", [reset_after(b'{"choices": [{"ind'), reply(200, b"<html>proxy error</html>")],
                         ids=["reset-mid-body", "not-json"])
def test_a_reply_cut_or_unreadable_once_is_retried(fault):
    out, hits = call([fault, reply(200, OK)])
    assert out == ["hello"] and len(hits) == 2


def test_a_reply_that_is_never_json_ends_in_a_clear_error_after_the_retries():
    out, hits = call([reply(200, b"<html>proxy error</html>")], retries=2)
    assert isinstance(out, LLMError) and "no answer after 3 attempts" in str(out) and "JSONDecodeError" in str(out)
    assert len(hits) == 3


@pytest.mark.parametrize("body", [{"object": "chat.completion"}, {"error": {"message": "overloaded"}},
                                  {"choices": [{"index": 0, "message": None}]}, {"choices": []}, [1, 2]],
                         ids=["no-choices", "error-object-with-200", "message-null", "choices-empty", "a-list"])
def test_a_json_reply_that_is_not_a_chat_completion_is_an_llm_error_at_once(body):
    out, hits = call([reply(200, body)])
    assert isinstance(out, LLMError) and len(hits) == 1, repr(out)


def test_content_null_is_empty_text_and_finish_reason_length_keeps_the_text():
    null = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]}
    cut = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Thought: I will"},
                        "finish_reason": "length"}]}
    assert call([reply(200, null)])[0] == [""]
    assert call([reply(200, cut)])[0] == ["Thought: I will"]


def test_content_as_a_list_of_parts_is_text_or_a_clear_error():
    """Some servers (Mistral's reasoning models) send content as [{"type": "text", "text": ...}, ...]; the list
    went to the agent as if it were the text (and with a prefix: AttributeError 'list' has no 'startswith')."""
    parts = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}}]}
    out, _ = call([reply(200, parts)])
    assert out == ["hello"], repr(out)
    thinking = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "B"}]}}]}
    assert call([reply(200, thinking)])[0] == ["B"]
    number = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": 7}}]}
    out, _ = call([reply(200, number)])
    assert isinstance(out, LLMError) and "message.content is int" in str(out), repr(out)


def test_a_server_that_stalls_is_timed_out_and_retried():
    def stall_before_headers(h):
        time.sleep(1.5)

    def stall_after_headers(h):
        h.send_response(200)
        h.send_header("Content-Length", "500")
        h.end_headers()
        h.wfile.flush()
        time.sleep(1.5)
    for stall in (stall_before_headers, stall_after_headers):
        t0 = time.monotonic()
        out, hits = call([stall, reply(200, OK)], timeout=0.3)
        assert out == ["hello"] and len(hits) == 2 and time.monotonic() - t0 < 1.4


def test_a_server_that_trickles_its_reply_is_timed_out_too():
    """A reply that comes a few bytes at a time (a stuck server behind a proxy, keep-alive bytes) never trips a
    per-read timeout: one call can then take any time at all. Here: 1.5 s at timeout=0.3, no retries."""
    def trickle(h):
        data = json.dumps(OK).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for i in range(10):
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
            time.sleep(0.15)
        h.wfile.write(data[10:])
    t0 = time.monotonic()
    out, _ = call([trickle], timeout=0.3, retries=0)
    assert isinstance(out, LLMError) and time.monotonic() - t0 < 1.0, (out, time.monotonic() - t0)


def test_a_chunked_reply_is_read():
    def chunked(h):
        data = json.dumps(OK).encode()
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), 7):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data[i:i + 7]), data[i:i + 7]))
        h.wfile.write(b"0\r\n\r\n")
    assert call([chunked])[0] == ["hello"]


def test_the_client_asks_for_an_uncompressed_reply():
    """urllib cannot undo gzip; it asks for none (a server that gzips anyway is retried, then named)."""
    _, hits = call([reply(200, OK)])
    assert hits[0][1].get("Accept-Encoding", "identity") == "identity"


def test_401_is_not_retried_and_400_surfaces_the_servers_message():
    key = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                     "code": "invalid_api_key"}}
    out, hits = call([reply(401, key)])
    assert isinstance(out, LLMError) and "HTTP 401" in str(out) and "Incorrect API key" in str(out)
    assert len(hits) == 1
    bad = {"error": {"message": "Unsupported parameter: 'seed'", "type": "invalid_request_error", "param": "seed"}}
    out, hits = call([reply(400, bad)])
    assert isinstance(out, LLMError) and "Unsupported parameter: 'seed'" in str(out) and len(hits) == 1


def test_distill_through_a_failing_server_writes_what_a_direct_run_writes(tmp_path):
    """Every other request fails (503, reset mid-body, not JSON, a stall past the timeout); distill with FTP over
    HTTP must keep the same trajectories as the same teacher called in-process, and the loader must read them."""
    facts = {f"Which command does task {i}?": {"answer": f"git cmd{i}"} for i in range(3)}
    questions = [{"id": f"q{i}", "question": q, "answer": f["answer"]} for i, (q, f) in enumerate(facts.items())]
    teacher = oracle_teacher(facts)

    def answer(h):
        body = json.loads(h.body)
        messages, prefix = body["messages"], ""
        if body.get("continue_final_message"):
            messages, prefix = messages[:-1], messages[-1]["content"]
        texts = teacher.complete(messages, stop=body.get("stop", ()), n=body["n"], prefix=prefix)
        reply(200, {"choices": [{"index": i, "message": {"role": "assistant", "content": t},
                                 "finish_reason": "stop"} for i, t in enumerate(texts)]})(h)
    faults = [reply(503, b""), reset_after(b'{"cho'), reply(200, b"oops"), lambda h: time.sleep(0.6)]
    plan = []
    for i in range(40):
        plan += [faults[i % len(faults)], answer]
    fake = Fake(plan)
    try:
        llm = HTTPChatLLM(fake.url, model="m", retries=4, backoff=0.01, timeout=0.3)
        out = tmp_path / "http.jsonl"
        assert distill(questions, Agent(llm, {}, AgentConfig(max_steps=3)), out, ftp_llm=llm, log=None)["kept"] == 3
    finally:
        fake.close()
    direct = tmp_path / "direct.jsonl"
    distill(questions, Agent(oracle_teacher(facts), {}, AgentConfig(max_steps=3)), direct,
            ftp_llm=oracle_teacher(facts), log=None)
    assert [t.messages for t in read_trajectories(out)] == [t.messages for t in read_trajectories(direct)]
    assert len(fake.hits) >= 2 * 9  # 3 questions x (FTP + 2 steps), each after a fault
