"""An OpenAI-compatible chat-completions endpoint over any backend of llm.py (what `infer.py serve` runs).

    server = make_server(MinagentLLM(model, tok), "127.0.0.1", 8000)   # POST /v1/chat/completions, GET /v1/models
    server.serve_forever()

So a minagent model can be the teacher of another (HTTPChatLLM on the other side), and other tools can call it.
Honoured request fields: messages, n, temperature, top_p, max_tokens, stop, seed, and vLLM's
continue_final_message (with add_generation_prompt false: the last assistant message is continued). Requests are
served one at a time (one model, one KV cache); streaming is not offered. Binds where told: keep it on 127.0.0.1
unless the network is trusted — there is no authentication.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_server(llm, host: str = "127.0.0.1", port: int = 8000, model_name: str = "minagent", log=None):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            if log:
                log(fmt % args)

        def _reply(self, code: int, obj: dict):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                return self._reply(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            self._reply(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._reply(404, {"error": {"message": f"no route {self.path}"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                messages = list(body["messages"])
                if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
                    raise ValueError("messages must be a non-empty list of {role, content}")
            except (ValueError, KeyError, TypeError) as e:
                return self._reply(400, {"error": {"message": f"bad request: {e}"}})
            prefix = ""
            if body.get("continue_final_message") and messages[-1]["role"] == "assistant":
                prefix = messages.pop()["content"]
            stop = body.get("stop") or ()
            stop = [stop] if isinstance(stop, str) else list(stop)
            try:
                with lock:
                    texts = llm.complete(messages, stop=stop, n=int(body.get("n", 1)),
                                         temperature=float(body.get("temperature", 1.0)),
                                         top_p=float(body.get("top_p", 1.0)),
                                         max_tokens=int(body.get("max_tokens") or 512), seed=body.get("seed"),
                                         prefix=prefix)
            except Exception as e:
                return self._reply(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            self._reply(200, {
                "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)],
                "usage": {}})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(llm, host: str = "127.0.0.1", port: int = 0, **kwargs):
    """Start a server on a background thread; returns (server, base_url). server.shutdown() stops it."""
    server = make_server(llm, host, port, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/v1"
