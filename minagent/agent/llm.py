"""The one small model interface the agent talks to, and its three backends.

    llm.complete(messages, stop=(), n=1, temperature=0.0, top_p=1.0, max_tokens=512, seed=None, prefix="")
        -> list of n completion texts

`messages` is the chat so far ([{"role", "content"}]); role "tool" (an observation) is shown to the model with
the backend's `observation_role`: a user turn by default, the way the training loader renders it, or the tool
turn a model trained with --observation-role tool records in its export (minagent.chat.agent_settings).
`prefix` is text the assistant turn is forced to start with (the first-thought prefix); the returned text is what
comes AFTER it. Every backend cuts its text before the first stop string, so the agent sees the same thing
whichever backend runs. `stop` is a sequence of strings, or one string (one stop string, as in the OpenAI API).

Backends:
  ScriptedLLM   returns given strings (tests: the unit under test is the agent, not a model)
  MinagentLLM   a minagent checkpoint; keeps the conversation in the KV cache between calls, so a step only
                prefills what is new since the last call (the observation), not the whole conversation;
                greedy completions check prompt-lookup drafts, several tokens per forward
  HTTPChatLLM   any OpenAI-compatible /v1/chat/completions endpoint (vLLM, llama.cpp server, Ollama, or
                `infer.py serve`), stdlib urllib, timeouts and retries with exponential backoff
"""
from __future__ import annotations

import email.utils
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from numbers import Integral
from typing import Callable, Sequence

import torch

from ..chat import checked_observation_role
from ..generation import SamplingParams, sample_next, stop_string_list
from ..inference import inference_forward
from ..prompt_lookup import NgramIndex


class LLMError(RuntimeError):
    """A backend could not produce a completion (bad request, endpoint down after every retry, ...)."""


class ContextOverflow(LLMError):
    """The conversation no longer fits the model's context: the run ends, the next question can go on."""


def cut_at_stop(text: str, stop: str | Sequence[str]) -> str:
    """`text` before the first stop string (one bare string is one stop string, as in the OpenAI API)."""
    hits = [text.find(s) for s in stop_string_list(stop, "stop") if s and s in text]
    return text[:min(hits)] if hits else text


def render_messages(messages: list[dict], observation_role: str = "user") -> list[dict]:
    """Observations (role tool/observation) get `observation_role`: "user" turns, as the training loader shows them
    by default, or "tool" for a model trained with --observation-role tool (its export records that:
    `agent_settings`)."""
    checked_observation_role(observation_role)
    return [{"role": observation_role if m["role"] in ("tool", "observation") else m["role"],
             "content": m["content"]} for m in messages]




class ScriptedLLM:
    """Replies with the given strings in order (or `script(messages, n, prefix)` -> list of strings).

    Stop strings are honoured like a real backend unless honor_stop=False, which plays a backend that ignores
    them (a known local-model complaint): the parser must then cope with e.g. a self-written `Observation:`.
    `calls` records (messages, kwargs) of each call for assertions.
    """

    def __init__(self, script: Sequence[str] | Callable, honor_stop: bool = True):
        self.script = script if callable(script) else list(script)
        self.honor_stop, self.calls, self.next = honor_stop, [], 0

    def complete(self, messages, stop=(), n=1, temperature=0.0, top_p=1.0, max_tokens=512, seed=None,
                 prefix="", session="agent") -> list[str]:
        self.calls.append(([dict(m) for m in messages], dict(stop=stop, n=n, temperature=temperature,
                                                              prefix=prefix, session=session)))
        stop = stop_string_list(stop, "stop")
        if callable(self.script):
            out = list(self.script(messages, n, prefix))
        else:
            if self.next + n > len(self.script):
                raise LLMError(f"ScriptedLLM ran out of replies (asked for #{self.next + 1}..{self.next + n}, "
                               f"script has {len(self.script)})")
            out = self.script[self.next:self.next + n]
            self.next += n
        return [cut_at_stop(t, stop) if self.honor_stop else t for t in out]


class _Session:
    """One conversation's KV cache and the token ids it holds (slot i holds ids[i])."""

    def __init__(self, cache):
        self.cache, self.ids = cache, []


@dataclass
class CompletionInfo:
    """What the last `complete` call did, per row: why it ended ("stop": an end-of-turn token or a stop string;
    "length": max_tokens or the context ran out) and how many tokens it generated (the server's finish_reason and
    usage)."""
    prompt_tokens: int
    completion_tokens: list[int]
    finish_reasons: list[str]


class MinagentLLM:
    """A minagent model with KV-cache reuse across calls.

    Each call renders the whole conversation with the chat template, finds the longest prefix of its token ids
    already in the cache, rolls the cache back to it (setting cache.length: later slots are just overwritten)
    and prefills only the rest. Between agent steps that rest is the end of the last step plus the observation.
    Separate conversations (the agent and its extractor) use separate sessions so they do not evict each other.
    reuse_cache=False re-prefills everything each call (the baseline the bench compares against).
    n > 1 completions (SAG's candidates) are decoded as one batch of n rows over a copy of the cached prompt.
    draft_tokens > 0 (default 4): a greedy completion checks up to that many prompt-lookup draft tokens per
    forward (see minagent/prompt_lookup.py; the last `draft_ngram` tokens are looked up in the conversation);
    the agent bench decodes 2.2-2.9 tokens per forward that way, same answers. 0: one token per forward.
    Sampled completions always decode one token per forward.
    Cached K/V are dropped when a parameter's storage or version counter has changed since they were computed (an
    optimizer step, a LoRA merge, load_state_dict, `p.data = new`). Writes torch does not count are not seen: an
    in-place write through `.data` (`p.data.copy_(w)`: `.data` is a view with its own, fresh version counter) or a
    fused optimizer's step (`AdamW(fused=True)` leaves the counters as they were), or an in-place write to a
    model loaded under torch.inference_mode() (its parameters are inference tensors, without version counters).
    Call `llm.sessions.clear()` after one. Not detected on purpose: the only check that sees such a write reads
    every weight, as much memory traffic per call as a whole decoding step, to guard against a write that
    minagent's own code never makes (its trainer steps a non-fused optimizer, LoRA merges under no_grad).
    """

    def __init__(self, model, tokenizer, max_len: int = 4096, reuse_cache: bool = True, draft_tokens: int = 4,
                 draft_ngram: int = 3, observation_role: str = "user"):
        if draft_tokens < 0 or draft_ngram < 1:
            raise ValueError(f"draft_tokens must be >= 0 and draft_ngram >= 1, got {draft_tokens} and "
                             f"{draft_ngram}")
        self.observation_role = checked_observation_role(observation_role)
        self.model, self.tok, self.max_len, self.reuse = model, tokenizer, max_len, reuse_cache
        self.draft_tokens, self.draft_ngram = draft_tokens, draft_ngram
        self.sessions: dict[str, _Session] = {}
        self.last: CompletionInfo | None = None
        self._weights_seen = None  # the parameters' version counters when the sessions' K/V were computed
        # work counters (the bench reports them): tokens and seconds spent in prefill and in decoding, and the
        # decoding forwards (fewer than the decoded tokens when drafts are accepted), draft tokens checked / kept
        self.prefilled_tokens, self.prefill_seconds, self.decoded_tokens, self.decode_seconds = 0, 0.0, 0, 0.0
        self.decode_forwards, self.draft_tokens_checked, self.draft_tokens_accepted = 0, 0, 0

    def prompt_ids(self, messages, prefix: str = "") -> list[int]:
        msgs = render_messages(messages, self.observation_role)
        if prefix:
            text = self.tok.apply_chat_template(msgs + [{"role": "assistant", "content": prefix}],
                                                add_generation_prompt=False, continue_final_message=True)
        else:
            text = self.tok.apply_chat_template(msgs, add_generation_prompt=True)
        return self.tok.encode(text, add_special_tokens=False, parse_special=True)

    @torch.inference_mode()
    def complete(self, messages, stop=(), n=1, temperature=0.0, top_p=1.0, max_tokens=512, seed=None,
                 prefix="", session="agent") -> list[str]:
        stop = stop_string_list(stop, "stop")  # one bare string is one stop string, not a set of characters
        _check_count("n", n, 1)
        _check_count("max_tokens", max_tokens, 0)
        ids = self.prompt_ids(messages, prefix)
        if len(ids) + max_tokens > self.max_len:
            raise ContextOverflow(f"conversation of {len(ids)} tokens + {max_tokens} new does not fit the context of "
                           f"{self.max_len} tokens (raise max_len, --max-len, or lower max_steps / passage length)")
        weights = self._weights_signature()
        if weights != self._weights_seen:  # a training step, a LoRA merge, a reload: cached K/V are stale
            for old in self.sessions.values():
                old.ids = []
            self._weights_seen = weights
        s = self.sessions.get(session)
        if s is None or not self._cache_fits(s.cache):
            s = self.sessions[session] = _Session(self.model.new_cache(1, self.max_len))
        if not self.reuse:
            s.ids = []  # same buffers, nothing reused: every call prefills the whole conversation
        gen = None if seed is None else torch.Generator(device=self.model.lm_head.weight.device).manual_seed(seed)
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
        forward = inference_forward(self.model)  # built per call: it holds the weights as they are now
        t0 = time.perf_counter()
        try:
            logits = self._prefill(forward, s, ids)
            t1 = time.perf_counter()
            if n == 1:
                rows = [self._decode(forward, s, logits, params, stop, gen)]
            else:
                rows = self._decode_batch(forward, s, logits, n, params, stop, gen)
        except BaseException:  # a forward that raised (or was interrupted) wrote K/V the cache does not count
            del s.ids[s.cache.length:]  # keep only what the cache really holds
            raise
        self.prefill_seconds += t1 - t0
        self.decode_seconds += time.perf_counter() - t1
        self.last = CompletionInfo(len(ids), [r[2] for r in rows], [r[1] for r in rows])
        return [r[0] for r in rows]

    def _weights_signature(self) -> list[tuple[int, int | None]]:
        """Each parameter's storage and version counter (which moves with every in-place change torch counts).
        A parameter made under torch.inference_mode() (a model loaded inside `with torch.inference_mode():`) is
        an inference tensor, which has no version counter (reading it raises): only its storage is compared, so
        an in-place write to it (possible only inside inference mode) is not seen, as the class says of `.data`
        writes."""
        return [(p.data_ptr(), None if p.is_inference() else p._version) for p in self.model.parameters()]

    def _cache_fits(self, cache) -> bool:
        """Whether a session's buffers can still serve: same dtype and device as the model's weights now, and
        max_len slots. A model moved with .double() / .to(...) after a session was made would otherwise attend
        with K/V buffers of the old dtype (an error, or K/V silently rounded to the old precision), and a raised
        `max_len` would overflow the old buffers ("KV cache full")."""
        weight = self.model.lm_head.weight
        return (cache.k[0].dtype == weight.dtype and cache.k[0].device == weight.device
                and cache.max_len == self.max_len)

    def _prefill(self, forward, s: _Session, ids: list[int]) -> torch.Tensor:
        common = 0
        for a, b in zip(s.ids, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token must be run to get the next-token logits
        s.cache.length, s.ids = common, list(ids)
        new = torch.tensor([ids[common:]], device=self.model.lm_head.weight.device)
        self.prefilled_tokens += new.shape[1]
        return forward(new, cache=s.cache, last_only=True)[:, -1]

    def _decode(self, forward, s: _Session, logits, params, stop, gen) -> tuple[str, str, int]:
        """One completion. Each forward feeds the token just chosen, plus, when greedy with drafts on, the draft
        tokens that followed the conversation's last few tokens where they occurred before; the drafts that
        equal the greedy choices are kept (their K/V already cached), the cache is cut back after them, and
        the prediction after the last kept one is the next token. The cache always holds exactly s.ids.
        Returns (text, finish reason, tokens generated)."""
        stop_ids, new, text, reason = set(self.tok.stop_token_ids), [], "", "length"
        if params.max_new_tokens <= 0:
            return "", "length", 0
        lookup = None
        if self.draft_tokens > 0 and params.temperature <= 0:
            lookup = NgramIndex(s.ids, self.draft_ngram)
        queue = []  # accepted draft tokens: greedy choices already in the cache, not yet emitted
        while True:
            drafted = bool(queue)
            tok = queue.pop(0) if drafted else int(sample_next(logits, params, gen)[0])
            if tok in stop_ids:
                reason = "stop"
                break
            new.append(tok)
            self.decoded_tokens += 1
            text = self.tok.decode(new)
            if any(x in text for x in stop if x):
                reason = "stop"
                break
            if len(new) >= params.max_new_tokens:
                break
            if drafted:
                continue
            if len(s.ids) + 1 >= self.max_len:
                break
            s.ids.append(tok)  # the cache now gets this token (and any draft after it)
            draft = []
            if lookup is not None:
                lookup.append(tok)
                # (the budget's last token is never fed, as in plain decoding: a draft running to the budget's
                # end would put it in the cache, one past what a sliding-window model may attend to)
                draft = lookup.draft(min(self.draft_tokens, params.max_new_tokens - len(new) - 1,
                                         self.max_len - len(s.ids) - 1))
            out = forward(torch.tensor([[tok] + draft], device=logits.device), cache=s.cache)
            self.decode_forwards += 1
            if not draft:
                logits = out[:, -1]
                continue
            greedy = out[0].argmax(dim=-1).tolist()  # greedy[i]: the choice after tok and draft[:i]
            kept = 0
            while kept < len(draft) and greedy[kept] == draft[kept]:
                kept += 1
            self.draft_tokens_checked += len(draft)
            self.draft_tokens_accepted += kept
            s.cache.length -= len(draft) - kept  # later slots are overwritten by the next forward
            s.ids.extend(draft[:kept])
            lookup.extend(draft[:kept])
            queue = draft[:kept]
            logits = out[:, kept]
        return cut_at_stop(text, stop), reason, len(new)

    def _decode_batch(self, forward, s: _Session, logits, n: int, params, stop, gen) -> list[tuple[str, str, int]]:
        """n completions of the prompt in the session cache, decoded together as a batch of n rows.

        Decoding reads every weight once per step whatever the batch, so n rows cost far less than n runs one
        after another (SAG's candidates). The prompt's K/V are copied into an n-row cache; the session keeps
        only the prompt, so the next call reuses it and prefills the chosen step. A row that has stopped rides
        along until every row has (its tokens are dropped)."""
        L = s.cache.length
        batch = self.model.new_cache(n, L + params.max_new_tokens)
        for layer in range(len(batch.k)):
            batch.k[layer][:, :, :L] = s.cache.k[layer][:, :, :L]
            batch.v[layer][:, :, :L] = s.cache.v[layer][:, :, :L]
        batch.length = L
        stop_ids = set(self.tok.stop_token_ids)
        new, texts, done = [[] for _ in range(n)], [""] * n, [False] * n  # done: ended by a stop token or string
        logits = logits.expand(n, -1)
        for step in range(params.max_new_tokens):
            for row, tok in enumerate(sample_next(logits, params, gen).tolist()):
                if done[row]:
                    continue
                if tok in stop_ids:
                    done[row] = True
                    continue
                new[row].append(tok)
                self.decoded_tokens += 1
                texts[row] = self.tok.decode(new[row])
                done[row] = any(x in texts[row] for x in stop if x)
            if all(done) or step == params.max_new_tokens - 1:
                break
            tokens = torch.tensor([[r[-1] if r else 0] for r in new], device=logits.device)
            logits = forward(tokens, cache=batch)[:, -1]
        return [(cut_at_stop(t, stop), "stop" if d else "length", len(r)) for t, d, r in zip(texts, done, new)]


def _check_count(name: str, value, low: int) -> None:
    """A count argument of MinagentLLM.complete must be a plain integer >= low: otherwise n=-1 failed deep in
    torch ("zeros: Dimension size must be non-negative"), n=2.0 as a TypeError about zeros(), n=0 returned no
    completion at all, and max_tokens=None as a TypeError about adding None to an int."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"MinagentLLM.complete: {name} must be an integer >= {low}, got {value!r}")


RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HTTPChatLLM:
    """Client for an OpenAI-compatible chat-completions endpoint (stdlib only).

    base_url is the part before /chat/completions, e.g. http://127.0.0.1:8000/v1. `model` names the served model;
    left out, the first one GET {base_url}/models lists is used (vLLM answers 404 to a name it does not serve).
    api_key defaults to $OPENAI_API_KEY. A dropped connection, a timeout, an unreadable reply or a 5xx/429 answer
    (HTTP 408, 425, 429, 500, 502, 503, 504: RETRYABLE_STATUS) is retried up to `retries` times with exponential
    backoff (backoff, 2*backoff, ... capped at max_backoff), waiting at least what a Retry-After header asks (up
    to max_backoff); other statuses are errors at once
    (retrying a bad request cannot help), and one that says the conversation exceeds the context (vLLM's and
    `infer.py serve`'s "context_length_exceeded") is ContextOverflow, as the local backend raises: the agent ends
    that question and a distill run goes on. A reply must hold n choices (llama.cpp's server ignores n).
    `timeout` bounds the wait for the reply to start (one socket read) and then the whole body; content sent as a
    list of parts is read as its text parts. A forced prefix is sent as a final assistant message with
    `continue_final_message: true, add_generation_prompt: false` (vLLM's and `infer.py serve`'s extension); a
    server that ignores it starts a fresh reply, so keep FTP off for such servers.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 5, backoff: float = 1.0, max_backoff: float = 30.0, log=None,
                 observation_role: str = "user"):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.observation_role = checked_observation_role(observation_role)
        self.base = base_url.rstrip("/")
        self.url = self.base + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.retries, self.backoff, self.max_backoff, self.log = retries, backoff, max_backoff, log
        self.requests = 0  # HTTP attempts made (tests and logs)
        self.last: CompletionInfo | None = None  # the last call's finish reasons and usage, as the server gave them

    def complete(self, messages, stop=(), n=1, temperature=0.0, top_p=1.0, max_tokens=512, seed=None,
                 prefix="", session="agent") -> list[str]:
        stop = stop_string_list(stop, "stop")  # one bare string is one stop string, not a set of characters
        msgs = render_messages(messages, self.observation_role)
        body = {"messages": msgs, "n": n, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens}
        if stop:
            body["stop"] = list(stop)[:4]  # OpenAI's limit
        if seed is not None:
            body["seed"] = seed
        if prefix:
            body["messages"] = msgs + [{"role": "assistant", "content": prefix}]
            body.update(continue_final_message=True, add_generation_prompt=False)
        reply = self._request(self.url, body)
        try:
            texts = [_reply_text(c["message"]["content"], self.url)
                     for c in sorted(reply["choices"], key=lambda c: c["index"])]
        except (KeyError, TypeError) as e:
            raise LLMError(f"{self.url}: reply is not a chat completion (missing {e}): {str(reply)[:300]}") from None
        if len(texts) != n:
            raise LLMError(f"{self.url}: asked for {n} completions, the reply holds {len(texts)} (a server that "
                           "ignores n, like llama.cpp's, cannot serve SAG: use --sag 1)")
        if prefix:  # some servers echo the forced prefix back
            texts = [t[len(prefix):] if t.startswith(prefix) else t for t in texts]
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        # (a server reports one completion total: it is put on the first row)
        self.last = CompletionInfo(int(usage.get("prompt_tokens") or 0),
                                   [int(usage.get("completion_tokens") or 0)] + [0] * (n - 1),
                                   [c.get("finish_reason") or "stop" for c in choices])
        return [cut_at_stop(t, stop) for t in texts]

    def served_model(self) -> str:
        """The model name requests carry: the one given, else the first one GET {base}/models lists, asked once
        (one attempt, not counted in `requests`). A server without that route gets "default"; one that cannot be
        reached yet gets "default" for this request and is asked again next time."""
        if self.model is not None:
            return self.model
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            req = urllib.request.Request(self.base + "/models", headers=headers)
            with urllib.request.urlopen(req, timeout=min(self.timeout, 10.0)) as r:
                self.model = str(json.loads(r.read().decode("utf-8"))["data"][0]["id"])
        except urllib.error.HTTPError as e:
            if e.code in (404, 405, 501):  # it answered: no such route
                self.model = "default"
            return "default"  # (a 503 while warming up, a 429: ask again next time)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, KeyError, IndexError,
                TypeError):
            return "default"
        if self.log:
            self.log(f"{self.base}: serving model {self.model!r}")
        return self.model

    def _request(self, url: str, body: dict) -> dict:
        """POST body as JSON; the decoded JSON reply, with retries (see the class)."""
        body, data = dict(body), b""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last, wait = None, 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                delay = max(wait, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
                if self.log:
                    self.log(f"{url}: {last}; retry {attempt}/{self.retries} in {delay:.1f}s")
                time.sleep(delay)
            self.requests += 1
            wait = 0.0
            if "model" not in body or self.model is None:  # (asked again while the server was not reachable)
                body["model"] = self.served_model()
                data = json.dumps(body).encode()
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(self._read_body(r).decode("utf-8"))
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read().decode("utf-8", "replace")[:300]
                except (OSError, http.client.HTTPException):  # the connection dropped while the error body came
                    detail = ""
                guessed = self.model is None and e.code == 404 and "model_not_found" in detail
                if e.code not in RETRYABLE_STATUS and not guessed:  # (a guessed name: ask /models again, retry)
                    if e.code == 400 and _context_overflow(detail):
                        raise ContextOverflow(f"{url}: {detail}") from None
                    raise LLMError(f"{url}: HTTP {e.code}: {detail}") from None
                last, wait = f"HTTP {e.code}", min(self.max_backoff, _retry_after(e.headers))
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise LLMError(f"{url}: no answer after {self.retries + 1} attempts (last: {last})")


    def _read_body(self, response) -> bytes:
        """The reply's body, within `timeout` seconds of its first byte. urllib's timeout bounds each socket read
        only, so a server that trickles its reply (a stuck proxy, keep-alive bytes) held a call for ever."""
        deadline = time.monotonic() + self.timeout
        chunks = []
        while chunk := response.read1(1 << 16):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the reply's body was still coming after {self.timeout:g} s")
        return b"".join(chunks)


def _reply_text(content, url: str) -> str:
    """A choice's message content as text: a string, null (no text: ""), or the list-of-parts form some servers
    answer with ([{"type": "text", "text": ...}, {"type": "thinking", ...}]): its text parts, in order; a reasoning
    part is not the reply. Anything else is an error naming the server, not a value passed on to the agent."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(p["text"] for p in content if p.get("type") == "text" and isinstance(p.get("text"), str))
    raise LLMError(f"{url}: a choice's message.content is {type(content).__name__}, expected a string or a list "
                   f"of text parts: {str(content)[:200]}")


def _context_overflow(detail: str) -> bool:
    """Whether a 400's body says the conversation exceeds the model's context (vLLM's, OpenAI's and our wording)."""
    text = detail.lower()
    return any(s in text for s in ("context_length_exceeded", "maximum context length", "context length",
                                   "does not fit the context"))


def _retry_after(headers) -> float:
    """Seconds a Retry-After header asks to wait (delay-seconds or an HTTP date); 0 without one."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())
