"""Model backends. MinagentLLM's KV-cache reuse must give exactly the tokens a fresh prefill of the whole
conversation gives (oracle: minagent.generation.generate, itself checked against transformers); the HTTP client
is run against a stdlib http.server on 127.0.0.1 that fails in the ways real endpoints do."""
import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from minagent import load_model, load_tokenizer
from minagent.agent.llm import HTTPChatLLM, LLMError, MinagentLLM, ScriptedLLM
from minagent.generation import SamplingParams, generate
from training_tiny import tiny_checkpoint

STOP = ("<end_code>", "Observation:")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tiny_checkpoint(tmp_path_factory.mktemp("agent_llm") / "tiny")
    return load_model(d, dtype="float32").double(), load_tokenizer(d)  # float64: no near-tie can flip argmax


def test_kv_reuse_generates_what_a_full_prefill_generates(tiny):
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024)
    messages = [{"role": "system", "content": "Solve with code."}, {"role": "user", "content": "What is git log?"}]
    for turn in range(3):
        ids = llm.prompt_ids(messages)
        before = llm.prefilled_tokens
        got = llm.complete(messages, stop=STOP, max_tokens=12)[0]
        want = generate(model, [ids], SamplingParams(max_new_tokens=12, stop_ids=tok.stop_token_ids,
                                                      stop_strings=STOP), tokenizer=tok)[0].text
        assert got == want
        if turn:  # only what is new since the last call was prefilled
            assert llm.prefilled_tokens - before < len(ids)
        messages += [{"role": "assistant", "content": got + "<end_code>"},
                     {"role": "tool", "content": f"Observation:\nExecution logs:\nstep {turn} printed this\n"}]


def test_candidates_decoded_as_a_batch_equal_one_at_a_time(tiny):
    """n > 1 decodes the candidates as one batch over a copy of the cached prompt: greedy rows must each equal
    plain generation, rows stop on their own, and the session stays right for the next call."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024)
    messages = [{"role": "system", "content": "Solve with code."}, {"role": "user", "content": "What is git log?"}]
    for turn in range(2):
        want = generate(model, [llm.prompt_ids(messages)], SamplingParams(
            max_new_tokens=12, stop_ids=tok.stop_token_ids, stop_strings=STOP), tokenizer=tok)[0].text
        assert llm.complete(messages, stop=STOP, n=3, max_tokens=12) == [want] * 3
        assert llm.complete(messages, stop=STOP, n=1, max_tokens=12) == [want]
        messages += [{"role": "assistant", "content": want + "<end_code>"},
                     {"role": "tool", "content": f"Observation:\nExecution logs:\nturn {turn}\n"}]
    sampled = llm.complete(messages, stop=STOP, n=4, temperature=1.0, max_tokens=12, seed=2)
    assert len(set(sampled)) > 1  # rows draw their own tokens
    want = generate(model, [llm.prompt_ids(messages)], SamplingParams(
        max_new_tokens=12, stop_ids=tok.stop_token_ids, stop_strings=STOP), tokenizer=tok)[0].text
    assert llm.complete(messages, stop=STOP, max_tokens=12) == [want]  # the session survived the batch


def test_prefix_is_continued_and_sampling_is_seeded(tiny):
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024)
    messages = [{"role": "user", "content": "q"}]
    text = tok.apply_chat_template(messages + [{"role": "assistant", "content": "Thought: x"}],
                                   add_generation_prompt=False, continue_final_message=True)
    want = generate(model, [tok.encode(text)], SamplingParams(max_new_tokens=8, stop_ids=tok.stop_token_ids),
                    tokenizer=tok)[0].text
    assert llm.complete(messages, max_tokens=8, prefix="Thought: x")[0] == want
    a = llm.complete(messages, n=3, temperature=1.0, max_tokens=8, seed=5)
    b = MinagentLLM(model, tok, max_len=1024, reuse_cache=False).complete(messages, n=3, temperature=1.0,
                                                                          max_tokens=8, seed=5)
    assert a == b and len(set(a)) > 1


def test_context_overflow_is_a_clear_error(tiny):
    model, tok = tiny
    with pytest.raises(LLMError, match="does not fit the context"):
        MinagentLLM(model, tok, max_len=64).complete([{"role": "user", "content": "word " * 100}], max_tokens=8)


class Flaky(BaseHTTPRequestHandler):
    """Plays the failures listed in server.plan, one per request, then answers normally."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        action = self.server.plan.pop(0) if self.server.plan else "ok"
        if action == "drop":  # close the connection without any answer
            self.close_connection = True
            self.connection.close()
            return
        if action == "sleep":
            time.sleep(1.5)
        code, obj = {"500": (500, {"error": "boom"}), "400": (400, {"error": {"message": "bad model"}})}.get(
            action, (200, {"choices": [{"index": i, "message": {"role": "assistant",
                                                                "content": f"Thought: reply {i}<end_code>junk"}}
                                       for i in range(body.get("n", 1))]}))
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def flaky():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    srv.plan, srv.bodies, srv.daemon_threads = [], [], True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_http_retries_dropped_connections_and_5xx_then_succeeds(flaky):
    srv, url = flaky
    srv.plan = ["drop", "500"]
    llm = HTTPChatLLM(url, timeout=5, retries=3, backoff=0.05)
    msgs = [{"role": "user", "content": "q"}, {"role": "tool", "content": "Observation: 1"}]
    out = llm.complete(msgs, stop=("<end_code>",), n=2, temperature=0.4, top_p=0.8, seed=3)
    assert out == ["Thought: reply 0", "Thought: reply 1"] and llm.requests == 3
    body = srv.bodies[-1]
    assert body["messages"][1] == {"role": "user", "content": "Observation: 1"}  # observations as user turns
    assert (body["n"], body["temperature"], body["top_p"], body["seed"], body["stop"]) == (2, 0.4, 0.8, 3, ["<end_code>"])


def test_http_timeout_is_retried_and_gives_up_with_a_clear_error(flaky):
    srv, url = flaky
    srv.plan = ["sleep", "sleep", "sleep"]
    llm = HTTPChatLLM(url, timeout=0.3, retries=1, backoff=0.01)
    with pytest.raises(LLMError, match="no answer after 2 attempts"):
        llm.complete([{"role": "user", "content": "q"}])
    assert llm.requests == 2


def test_http_client_error_is_not_retried(flaky):
    srv, url = flaky
    srv.plan = ["400"]
    llm = HTTPChatLLM(url, retries=3, backoff=0.01)
    with pytest.raises(LLMError, match="HTTP 400.*bad model"):
        llm.complete([{"role": "user", "content": "q"}])
    assert llm.requests == 1


def test_http_prefix_uses_continue_final_message(flaky):
    srv, url = flaky
    HTTPChatLLM(url).complete([{"role": "user", "content": "q"}], prefix="Thought: first")
    body = srv.bodies[-1]
    assert body["messages"][-1] == {"role": "assistant", "content": "Thought: first"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


LOOPY = [{"role": "system", "content": "Solve with code."},
         {"role": "user", "content": "What is git log? git log git log"}]


def plain(model, tok, ids, max_new, stop=()):
    return generate(model, [ids], SamplingParams(max_new_tokens=max_new, stop_ids=tok.stop_token_ids,
                                                 stop_strings=stop), tokenizer=tok)[0].text


def test_prompt_lookup_drafts_generate_what_plain_greedy_generates(tiny):
    """Drafts only change how many tokens a forward checks, never which tokens come out: every budget from 1 to
    40 tokens gives plain greedy's text, fewer forwards than tokens are run (the tiny model loops, so drafts
    get accepted and rejected), and the session's cache stays right for the next turn."""
    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=4)
    messages = list(LOOPY)
    ids = llm.prompt_ids(messages)
    for max_new in list(range(1, 9)) + [17, 40]:
        assert llm.complete(messages, max_tokens=max_new)[0] == plain(model, tok, ids, max_new), max_new
    assert llm.decode_forwards < llm.decoded_tokens - 20
    for turn in range(2):
        got = llm.complete(messages, stop=STOP, max_tokens=30)[0]
        assert got == plain(model, tok, llm.prompt_ids(messages), 30, STOP)
        messages += [{"role": "assistant", "content": got + "<end_code>"},
                     {"role": "tool", "content": f"Observation:\nturn {turn} {got[:20]}\n"}]


def test_stop_string_inside_accepted_drafts_cuts_the_text_there(tiny):
    model, tok = tiny
    ids = MinagentLLM(model, tok).prompt_ids(LOOPY)
    full = plain(model, tok, ids, 40)
    for stop in (full[-9:-4], full[-20:-14], full[len(full) // 2:len(full) // 2 + 3]):
        llm = MinagentLLM(model, tok, max_len=1024, draft_tokens=6, draft_ngram=2)
        assert llm.complete(LOOPY, stop=(stop,), max_tokens=40)[0] == plain(model, tok, ids, 40, (stop,)), stop


def test_drafts_never_run_past_the_context(tiny):
    """With the context exactly prompt + budget, a draft must be cut to the slots left (else the KV cache
    overflows), and the text is still plain greedy's."""
    model, tok = tiny
    ids = MinagentLLM(model, tok).prompt_ids(LOOPY)
    for max_new in range(30, 41):
        llm = MinagentLLM(model, tok, max_len=len(ids) + max_new, draft_tokens=8, draft_ngram=1)
        assert llm.complete(LOOPY, max_tokens=max_new)[0] == plain(model, tok, ids, max_new), max_new
        assert llm.decode_forwards < llm.decoded_tokens


def test_stop_token_inside_accepted_drafts_ends_the_text_there(tiny):
    """The conversation already holds the model's looping first reply, so the second reply's drafts copy it;
    each token of the second reply, made a stop id in turn, must end the text where plain greedy's ends (also
    when it arrives inside an accepted draft), and a third turn on the same session (whose ids may hold accepted
    tokens past the stop) must equal a fresh model's."""
    model, tok = tiny
    first = plain(model, tok, MinagentLLM(model, tok).prompt_ids(LOOPY), 40)
    messages = LOOPY + [{"role": "assistant", "content": first}, {"role": "user", "content": "again"}]
    ids = MinagentLLM(model, tok).prompt_ids(messages)
    produced = generate(model, [ids], SamplingParams(max_new_tokens=40, stop_ids=tok.stop_token_ids))[0].token_ids
    for stop_id in sorted(set(produced)):
        stopping = copy.copy(tok)
        stopping.stop_token_ids = list(tok.stop_token_ids) + [stop_id]
        llm = MinagentLLM(model, stopping, max_len=1024, draft_tokens=6, draft_ngram=1)
        got = llm.complete(messages, max_tokens=40)[0]
        assert got == plain(model, stopping, ids, 40), stop_id
        more = messages + [{"role": "assistant", "content": got}, {"role": "user", "content": "more"}]
        fresh = MinagentLLM(model, stopping, max_len=1024, draft_tokens=0)
        assert llm.complete(more, max_tokens=20) == fresh.complete(more, max_tokens=20), stop_id


def test_a_zero_budget_gives_no_text_and_bad_draft_settings_are_refused(tiny):
    model, tok = tiny
    for temperature in (0.0, 1.0):
        assert MinagentLLM(model, tok).complete(LOOPY, max_tokens=0, temperature=temperature, seed=0) == [""]
    with pytest.raises(ValueError, match="draft_ngram"):
        MinagentLLM(model, tok, draft_ngram=0)


def test_a_bare_stop_string_is_one_stop_string_in_every_backend(tiny, flaky):
    """The OpenAI API's `stop` is "string or array": one string is one stop string. It used to be iterated as a
    set of one-character stops (a reply cut at its first 'o' for stop="Observation:", the HTTP body sent
    ["O", "b", "s", "e"]). Oracles: a hand-checked text; the body an OpenAI server receives; generate() with the
    string as its only stop string."""
    scripted = ScriptedLLM(["Thought: look it up\nObservation: 42"])
    assert scripted.complete([{"role": "user", "content": "q"}], stop="Observation:") == ["Thought: look it up\n"]

    srv, url = flaky
    http = HTTPChatLLM(url, timeout=5, retries=0)
    assert http.complete([{"role": "user", "content": "q"}], stop="<end_code>") == ["Thought: reply 0"]
    assert srv.bodies[-1]["stop"] == ["<end_code>"]

    model, tok = tiny
    llm = MinagentLLM(model, tok, max_len=1024)
    messages = [{"role": "user", "content": "What is git log? git log git log"}]
    ids = llm.prompt_ids(messages)
    full = generate(model, [ids], SamplingParams(max_new_tokens=16, stop_ids=tok.stop_token_ids), tokenizer=tok)[0]
    # a two-character stop string one of whose characters occurs earlier: the two readings cut at different places
    stop = next(full.text[k:k + 2] for k in range(1, len(full.text) - 1)
                if min(full.text.index(c) for c in full.text[k:k + 2]) < full.text.index(full.text[k:k + 2]))
    want = generate(model, [ids], SamplingParams(max_new_tokens=16, stop_ids=tok.stop_token_ids,
                                                 stop_strings=[stop]), tokenizer=tok)[0].text
    for drafts in (0, 4):
        llm.draft_tokens = drafts
        assert llm.complete(messages, stop=stop, max_tokens=16) == [want]
        assert llm.complete(messages, stop=stop, max_tokens=16, n=2) == [want, want]
