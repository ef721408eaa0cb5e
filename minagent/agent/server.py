"""An OpenAI-compatible chat-completions endpoint over any backend of llm.py (what `infer.py serve` runs).

    server = make_server(MinagentLLM(model, tok), "127.0.0.1", 8000)   # POST /v1/chat/completions, GET /v1/models
    server.serve_forever()

So a minagent model can be the teacher of another (HTTPChatLLM on the other side), and other tools can call it.
Honoured request fields: messages (content a string or a list of {"type": "text"} parts; role "developer" is
read as "system"), n, temperature, top_p, max_tokens (or max_completion_tokens, the openai
client's current name), stop, seed, and vLLM's continue_final_message (the last assistant message is continued;
add_generation_prompt is not read); each is checked first (a 400 names the field; n <= 64; a body over 32 MB is a
413), so a malformed request never reaches the model. Fields asking for what is not offered (stream, logprobs, tools,
response_format, penalties) are refused with a 400 naming them, not ignored: an ignored `stream: true` leaves
the openai client with zero chunks and no error. A conversation that does not fit the context is a 400 with code
"context_length_exceeded" (as vLLM answers), which HTTPChatLLM turns back into ContextOverflow. Replies carry
finish_reason ("stop" or "length") and, from a model backend (not the oracle's scripted one), token usage.
Errors come in OpenAI's shape, {"error": {message, type, param, code}}: a model name other than the served one
is a 404 "model_not_found" (as vLLM answers), a body that is not Content-Type application/json a 415 (a web page
can send text/plain to 127.0.0.1 without a CORS preflight), OPTIONS lists the methods (no CORS headers), and
other methods are a 405. Requests are served one at a time (one model, one KV cache); a request that waited its turn and whose client has
gone meanwhile is dropped, so retries of a timed-out request do not queue behind each other. Binds where told:
keep it on 127.0.0.1 unless the network is trusted — there is no authentication.
"""
from __future__ import annotations

import json
import math
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..tokenizer.errors import ConversationError
from .llm import ContextOverflow


MAX_BODY_BYTES = 32 << 20   # a request bigger than this is refused (413) before it is read
MAX_N = 64                  # completions per request (SAG uses 4-8)
# what is not offered: refused when asked for (a value other than the listed "off" ones), never silently ignored
UNSUPPORTED = {"stream": (None, False), "logprobs": (None, False), "top_logprobs": (None, 0),
               "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None,),
               "response_format": (None, {"type": "text"}), "presence_penalty": (None, 0),
               "frequency_penalty": (None, 0), "logit_bias": (None, {}), "best_of": (None, 1), "echo": (None, False)}

# the roles a request may use, and the role each is rendered as
ALLOWED = "GET, HEAD, POST, OPTIONS"  # the methods served (the Allow header of OPTIONS and of a 405)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _same(value, off) -> bool:
    """value is the "off" setting `off`: None is None, False is False (not 0), a number equals it (0 and 0.0)."""
    if off is None or isinstance(off, bool):
        return value is off
    if isinstance(off, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == off
    return value == off


class RequestError(ValueError):
    """A request the server refuses, with the field at fault: the reply's error object carries it as `param`
    (what OpenAI's API and the openai client's BadRequestError.param call it)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def message_text(content, where: str) -> str:
    """A message's content as one string: a string as is, or the OpenAI list form [{"type": "text", "text": ...}]
    (what the openai client and many tools send) with its text parts joined by newlines, as vLLM joins them.
    Other parts (images, audio) cannot be shown to a text model: refused, naming the part."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of text parts, got "
                           f"{type(content).__name__}", f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RequestError(f"{where}.content[{j}] must be {{\"type\": \"text\", \"text\": string}}, got type "
                               f"{kind!r:.40} (this server reads text only)", f"{where}.content[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def checked_message(message, i: int) -> dict:
    """messages[i] as {role, content} with string content, or ValueError naming it. "developer" is OpenAI's newer
    name for the system role (its clients send it to reasoning models): rendered as "system". Any other role
    outside the API's set is refused here, not left to fail in the chat template as a 500."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise RequestError(f"{where} must be an object with role and content, got {type(message).__name__}", where)
    role = message.get("role")
    if role not in ROLES:
        raise RequestError(f"{where}.role must be one of {sorted(ROLES)}, got {role!r:.40}", f"{where}.role")
    if "content" not in message or message["content"] is None:
        raise RequestError(f"{where}.content is missing", f"{where}.content")
    return {"role": ROLES[role], "content": message_text(message["content"], where)}


def parse_request(body) -> dict:
    """The completion arguments of a chat-completions request body, or ValueError naming the field at fault
    (answered 400: a malformed request must not reach the model and come back as a 500, or ask for a
    million completions)."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    for name, off in UNSUPPORTED.items():
        if name in ("tool_choice", "function_call") and body.get(name) in ("auto", "none") \
                and not body.get("tools") and not body.get("functions"):
            continue  # "auto" with no tools to choose from asks for nothing
        if name in body and not any(_same(body[name], o) for o in off):
            raise RequestError(f"{name}={body[name]!r:.60} is not supported by this server", name)
    messages = body.get("messages")
    if not (isinstance(messages, list) and messages):
        raise RequestError("messages must be a non-empty list of {role, content}", "messages")
    messages = [checked_message(m, i) for i, m in enumerate(messages)]

    def number(name, kind, default, low, high, low_open=False):
        value = body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (kind is int and value != int(value)):
            raise RequestError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}", name)
        if (value <= low if low_open else value < low) or value > high:
            raise RequestError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value!r}", name)
        return kind(value)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not (isinstance(stop, list) and all(isinstance(x, str) and x for x in stop)):
        raise RequestError("stop must be a string or a list of non-empty strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"seed must be an integer, got {seed!r}", "seed")
    prefix = ""
    if body.get("continue_final_message") and messages[-1]["role"] == "assistant":
        prefix = messages.pop()["content"]
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is not None \
            and body["max_completion_tokens"] != body["max_tokens"]:  # (null: not given, as pydantic clients send)
        raise RequestError("max_tokens and max_completion_tokens disagree; give one", "max_completion_tokens")
    limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return dict(messages=messages, stop=stop, n=number("n", int, 1, 1, MAX_N),
                temperature=number("temperature", float, 1.0, 0, 2),
                top_p=number("top_p", float, 1.0, 0, 1, low_open=True),
                max_tokens=number(limit, int, 512, 1, 1 << 20), seed=seed, prefix=prefix)


def client_gone(sock) -> bool:
    """True when the client has closed its end (it timed out and went away): the socket reads as EOF. A client
    still waiting sends nothing, so there is nothing to read and it stays."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def make_server(llm, host: str = "127.0.0.1", port: int = 8000, model_name: str = "minagent", log=None,
                read_timeout: float = 60.0):
    """read_timeout: seconds a connection may leave the server waiting for the next bytes of a request (or for
    the next request on a kept-alive connection); a client that sends headers and never its body held a
    handler thread for ever. Computing the reply is not limited."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = read_timeout  # (StreamRequestHandler puts it on the socket)

        def log_message(self, fmt, *args):
            if log:
                log(fmt % args)

        def _reply(self, code: int, obj: dict, close: bool = False):
            if close:  # a body left unread (or half read) must not be parsed as the next request
                self.close_connection = True
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code == 405:
                self.send_header("Allow", ALLOWED)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":  # the headers GET would send (Content-Length included), no body
                return
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client left before its answer: nothing to do
                self.close_connection = True

        def _error(self, code: int, message: str, param: str | None = None, error_code: str | None = None,
                   close: bool = False):
            """An error in OpenAI's shape, every field present (the openai client reads type, param and code
            into its exception; clients that index them crash on a bare {"message"})."""
            kind = "server_error" if code >= 500 else "invalid_request_error"
            self._reply(code, {"error": {"message": message, "type": kind, "param": param, "code": error_code}},
                        close=close)

        def _not_allowed(self):
            """Methods other than GET, HEAD, POST and OPTIONS: a JSON 405 with Allow (RFC 9110 §15.5.6), not
            http.server's 501 HTML page."""
            self._error(405, f"method {self.command} is not allowed here; use {ALLOWED}", close=True)

        do_PUT = do_DELETE = do_PATCH = _not_allowed

        def do_OPTIONS(self):
            """What the server accepts (RFC 9110 §9.3.7). No Access-Control-Allow-* headers: a web page's
            cross-origin preflight is answered, and its browser then refuses to send the request."""
            self.send_response(204)
            self.send_header("Allow", ALLOWED)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                return self._reply(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            self._error(404, f"no route GET {self.path}")

        def do_HEAD(self):
            """RFC 9110 §9.1: a general-purpose server must support HEAD wherever it supports GET (health checks
            and proxies probe with it); it was a 501 with an HTML page."""
            self.do_GET()

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._error(404, f"no route POST {self.path}")
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._error(411, "send the body with a Content-Length (chunked uploads are not read)",
                                   close=True)
            media = self.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
            if media != "application/json":  # a web page can POST text/plain here without asking (no preflight)
                return self._error(415, f"Content-Type must be application/json, got {media!r:.60}", close=True)
            try:
                size = int(self.headers.get("Content-Length", 0))
            except ValueError:
                return self._error(400, "bad request: Content-Length is not a number", close=True)
            if size < 0:
                return self._error(400, "bad request: negative Content-Length", close=True)
            if size > MAX_BODY_BYTES:
                return self._error(413, f"request body of {size} bytes; at most {MAX_BODY_BYTES}", close=True)
            try:
                body = json.loads(self.rfile.read(size) or b"{}")
                asked = body.get("model") if isinstance(body, dict) else None
                if asked is not None and asked != model_name:  # (vLLM's answer; a typo must not be served)
                    return self._error(404, f"the model {asked!r:.80} does not exist; this server serves "
                                            f"{model_name!r}", "model", "model_not_found")
                request = parse_request(body)
            except TimeoutError:  # the body did not come within read_timeout: drop the connection
                self.close_connection = True
                return
            except (ValueError, RecursionError) as e:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
                return self._error(400, f"bad request: {e}", getattr(e, "param", None))
            try:
                waited = not lock.acquire(blocking=False)
                if waited:
                    lock.acquire()
                try:
                    # it queued behind another request and gave up meanwhile: skip the work (only then: a client
                    # that half-closes its side after sending, as `nc -N` does, reads the same, and is served)
                    if waited and client_gone(self.connection):
                        self.close_connection = True
                        return
                    texts = llm.complete(**request)
                    info = getattr(llm, "last", None)
                finally:
                    lock.release()
            except ContextOverflow as e:
                return self._error(400, f"bad request: {e}", "messages", "context_length_exceeded")
            except ConversationError as e:  # the model's chat template refuses these messages: the request's fault
                return self._error(400, f"bad request: {e}", "messages")
            except Exception as e:
                return self._error(500, f"{type(e).__name__}: {e}")
            reasons = info.finish_reasons if info else ["stop"] * len(texts)
            usage = {}
            if info:
                done = sum(info.completion_tokens)
                usage = {"prompt_tokens": info.prompt_tokens, "completion_tokens": done,
                         "total_tokens": info.prompt_tokens + done}
            self._reply(200, {
                "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r}
                            for i, (t, r) in enumerate(zip(texts, reasons))],
                "usage": usage})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(llm, host: str = "127.0.0.1", port: int = 0, **kwargs):
    """Start a server on a background thread; returns (server, base_url). server.shutdown() stops it."""
    server = make_server(llm, host, port, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/v1"
