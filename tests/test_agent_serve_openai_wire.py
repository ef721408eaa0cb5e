"""`infer.py serve` against what the official `openai` client sends and what the tokenizer counts.

Oracles: the openai client's own request format (content as a list of {"type": "text"} parts, role "developer",
BadRequestError for a 4xx), and transformers' AutoTokenizer.apply_chat_template for the prompt token count.
"""
import threading

import openai
import pytest
import torch
import transformers

from minagent import load_model, load_tokenizer
from minagent.agent.llm import MinagentLLM
from minagent.agent.server import make_server

QUESTION = "Tell me a long story about a cat."


@pytest.fixture(scope="module")
def client(tiny_dir):
    torch.set_num_threads(1)
    llm = MinagentLLM(load_model(tiny_dir, dtype="float32"), load_tokenizer(tiny_dir), max_len=256, draft_tokens=0)
    srv = make_server(llm, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key="x", max_retries=0)
    srv.shutdown()
    srv.server_close()


def _ask(client, messages):
    return client.chat.completions.create(model="minagent", messages=messages, max_tokens=4, temperature=0)


def _hf_prompt_tokens(tiny_dir, messages):
    hf = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    return len(hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
               ["input_ids"])


def test_content_as_a_list_of_text_parts_is_read_like_the_joined_string(client, tiny_dir):
    """The openai client's typed form of a message (ChatCompletionContentPartTextParam) was refused with a 400."""
    parts = [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "a long story about a cat."}]
    reply = _ask(client, [{"role": "user", "content": parts}])
    joined = [{"role": "user", "content": "Tell me\na long story about a cat."}]
    assert reply.usage.prompt_tokens == _hf_prompt_tokens(tiny_dir, joined)
    assert reply.choices[0].message.content == _ask(client, joined).choices[0].message.content


def test_role_developer_is_the_system_role(client, tiny_dir):
    """OpenAI's newer name for system; it was a 500 (the chat template has no "developer" turn)."""
    system = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]
    developer = [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]
    reply = _ask(client, developer)
    assert reply.usage.prompt_tokens == _hf_prompt_tokens(tiny_dir, system)
    assert reply.choices[0].message.content == _ask(client, system).choices[0].message.content


@pytest.mark.parametrize("message, field", [
    ({"role": "wizard", "content": "hi"}, "messages[0].role"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}, "messages[0].content[0]"),
    ({"role": "user", "content": 7}, "messages[0].content"),
    ({"role": "user"}, "messages[0].content"),
])
def test_a_malformed_message_is_a_400_naming_it(client, message, field):
    with pytest.raises(openai.BadRequestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        _ask(client, [message])


def test_head_on_the_models_route_is_get_without_the_body():
    """RFC 9110 §9.1 (GET and HEAD are the methods every general-purpose server supports); http.client is the
    oracle: a HEAD reply's headers are GET's, Content-Length included, and no body follows."""
    import http.client

    from minagent.agent import ScriptedLLM

    srv = make_server(ScriptedLLM(lambda messages, n, prefix: ["ok"] * n), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("GET", "/v1/models")
        get = conn.getresponse()
        body = get.read()
        conn.request("HEAD", "/v1/models")  # same keep-alive connection: a stray body would corrupt the next reply
        head = conn.getresponse()
        assert head.status == get.status == 200 and head.read() == b""
        assert head.getheader("Content-Length") == str(len(body))
        conn.request("GET", "/v1/models")
        again = conn.getresponse()
        assert again.status == 200 and again.read() == body
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_body_that_never_comes_frees_its_connection():
    """A client that sends headers with a Content-Length and then nothing held a handler thread for ever (no read
    timeout). Oracle: the socket itself — the server closes it within the read timeout — and a second client
    is still served."""
    import socket
    import time
    srv = make_server(None, "127.0.0.1", 0, read_timeout=0.5)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        stalled = socket.create_connection(srv.server_address, timeout=10)
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        t0 = time.monotonic()
        assert stalled.recv(100) == b""  # closed by the server, no reply to a request it never got
        assert time.monotonic() - t0 < 5
        stalled.close()
        other = socket.create_connection(srv.server_address, timeout=10)
        other.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.recv(100).startswith(b"HTTP/1.1 200")
        other.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_messages_the_models_template_refuses_are_a_400_not_a_500():
    """A conversation the model's chat template cannot render (here Mistral's: two user turns in a row, which its
    Jinja raises on) came back as a 500, which the openai client retries as a server fault. It is the request's
    fault: a 400 (openai.BadRequestError) that says what the template needs."""
    from minagent.tokenizer.chat_templates import MistralInst, render_chat

    class RefusingLLM:
        def complete(self, messages, **kw):
            render_chat(MistralInst("v1", "<s>", "</s>"), messages)  # the real renderer's refusal
            return ["unreachable"]
    srv = make_server(RefusingLLM(), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="turns must alternate"):
            client.chat.completions.create(model="minagent", messages=[{"role": "user", "content": "a"},
                                                                       {"role": "user", "content": "b"}])
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_refused_field_reaches_the_openai_client_as_param_and_type(client):
    """OpenAI's error object is {message, type, param, code}; the openai client copies type, param and code onto
    BadRequestError. Ours sent {message} alone, so e.param was None and tools that branch on it could not."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="minagent", messages=[{"role": "user", "content": "hi"}],
                                       temperature=5)
    assert caught.value.param == "temperature" and caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, [{"role": "wizard", "content": "hi"}])
    assert caught.value.param == "messages[0].role"


def test_an_unknown_model_name_is_a_404_model_not_found(client):
    """vLLM and OpenAI answer a model they do not serve with 404 / code "model_not_found"; ours served it, so a typo
    in a teacher's model name went unnoticed. The openai client's NotFoundError is the oracle."""
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "gpt-4o" in str(caught.value)


def _scripted_server():
    from minagent.agent import ScriptedLLM
    srv = make_server(ScriptedLLM(lambda messages, n, prefix: ["ok"] * n), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_options_lists_the_methods_and_other_methods_are_a_json_405():
    """RFC 9110: OPTIONS answers with Allow (§9.3.7); a method the resource does not support is a 405 carrying
    Allow (§15.5.6). Both were http.server's 501 HTML page. http.client is the oracle."""
    import http.client
    import json
    srv = _scripted_server()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("OPTIONS", "/v1/chat/completions")
        reply = conn.getresponse()
        assert reply.status == 204 and reply.read() == b""
        assert {"GET", "POST"} <= {m.strip() for m in reply.getheader("Allow").split(",")}
        assert reply.getheader("Access-Control-Allow-Origin") is None  # no web page may call it
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("DELETE", "/v1/models")
        reply = conn.getresponse()
        assert reply.status == 405 and "POST" in reply.getheader("Allow")
        assert "DELETE" in json.loads(reply.read())["error"]["message"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_text_plain_post_is_refused_and_json_is_served():
    """A web page may POST text/plain to 127.0.0.1 without a CORS preflight (a "simple request"), and ours parsed
    any body as JSON: any site the user visited could make it generate. Only application/json (what the openai
    client, curl -H and vLLM's clients send) or no Content-Type is read; the rest is a 415."""
    import http.client
    import json
    srv = _scripted_server()
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    try:
        for media, status in (("text/plain", 415), ("application/x-www-form-urlencoded", 415),
                              ("application/json; charset=utf-8", 200), ("Application/JSON", 200)):
            conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
            conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": media})
            reply = conn.getresponse()
            assert reply.status == status, media
            if status == 415:
                assert "application/json" in json.loads(reply.read())["error"]["message"]
    finally:
        srv.shutdown()
        srv.server_close()
