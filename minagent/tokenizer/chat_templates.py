"""Chat templates written in Python (no Jinja): ChatML (Qwen2/2.5, SmolLM2) and Llama-3 / Llama-3.1+.

A checkpoint ships its template as Jinja text in tokenizer_config.json (or chat_template.jinja). We do not run
Jinja; we recognise the family from markers in that text and render the same string in Python:
  - `<|im_start|>` -> ChatML. The default system prompt the template injects when the conversation has none is
    read out of the template itself ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant." for
    Qwen2.5, "You are a helpful AI assistant named SmolLM, trained by Hugging Face" for SmolLM2-Instruct).
    A template containing `<tool_response>` (Qwen2.5) wraps role "tool" messages into one user turn, consecutive
    tool messages sharing it; other ChatML templates print the role as is.
  - `<|start_header_id|>` -> Llama-3: bos + per message `<|start_header_id|>role<|end_header_id|>\\n\\n` +
    content.strip() + `<|eot_id|>`. With "Cutting Knowledge Date" in the text it is the Llama-3.1/3.2
    template: a system header that always carries the knowledge/today dates, and tool results under `ipython`.
  - no template at all: decided by the special tokens the vocabulary has, with no default system prompt.
Tool *calls* (assistant messages with `tool_calls`, the `tools=` argument) are out of scope and rejected; a tool
*result* is an ordinary message with role "tool". Templates we cannot recognise (Qwen3's thinking template,
Mistral's [INST], ...) raise a clear error when used.

`render_segments` returns the text as (piece, is_assistant_output) pairs so that SFT can mask everything but
what the model must learn to write (assistant content and its end-of-turn token), like HF's {% generation %}.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

Segments = list[tuple[str, bool]]

# HF appends this tag to the final message for continue_final_message and cuts the render there; so do we.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_JINJA_STRING = re.compile(r"'((?:\\.|[^'\\])*)'" + r'|"((?:\\.|[^"\\])*)"')  # a Jinja string literal
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_JINJA_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", re.DOTALL)
_LEADING_BOS = re.compile(r"\s*\{\{-?\s*bos_token\s*-?\}\}")


def _check(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: expected {{'role': str, 'content': str}}, got {m!r:.80}")
        if m.get("tool_calls"):
            raise ValueError(f"messages[{i}]: tool_calls are not supported (tool-calling templates are out of "
                             "scope; write the call into the content and return results as role 'tool')")
    return list(messages)


@dataclass
class ChatML:
    """<|im_start|>role\\ncontent<|im_end|>\\n per message."""
    default_system: str | None = None
    qwen_tool_turns: bool = False
    bos_token: str | None = None  # a template that opens with {{ bos_token }} (InternLM2-style)
    name: str = "chatml"

    def render_segments(self, messages: list[dict], add_generation_prompt: bool) -> Segments:
        out: Segments = [(self.bos_token, False)] if self.bos_token else []
        if self.default_system is not None and messages[0]["role"] != "system":
            out.append((f"<|im_start|>system\n{self.default_system}<|im_end|>\n", False))
        for i, m in enumerate(messages):
            role, content = m["role"], m["content"]
            if role == "tool" and self.qwen_tool_turns:
                first = i == 0 or messages[i - 1]["role"] != "tool"
                last = i == len(messages) - 1 or messages[i + 1]["role"] != "tool"
                out.append((("<|im_start|>user" if first else "") + f"\n<tool_response>\n{content}\n"
                            "</tool_response>" + ("<|im_end|>\n" if last else ""), False))
            elif self.qwen_tool_turns and role not in ("system", "user", "assistant"):
                raise ValueError(f"role {role!r} is not rendered by the Qwen template (it would be dropped)")
            elif role == "assistant":
                out += [("<|im_start|>assistant\n", False), (content + "<|im_end|>", True), ("\n", False)]
            else:
                out.append((f"<|im_start|>{role}\n{content}<|im_end|>\n", False))
        if add_generation_prompt:
            out.append(("<|im_start|>assistant\n", False))
        return out


@dataclass
class Llama3:
    """Llama-3 (3.0) template; with `dated_system` the Llama-3.1/3.2 one (always a dated system turn)."""
    bos_token: str = "<|begin_of_text|>"
    dated_system: bool = False
    date_string: str | None = None  # Llama-3.1's fixed "26 Jul 2024"; None: today (3.2's strftime_now)
    name: str = "llama3"

    def render_segments(self, messages: list[dict], add_generation_prompt: bool) -> Segments:
        out: Segments = [(self.bos_token, False)]
        if self.dated_system:
            system = ""
            if messages[0]["role"] == "system":
                system, messages = messages[0]["content"].strip(), messages[1:]
            date = self.date_string or datetime.now().strftime("%d %b %Y")
            out.append(("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                        f"Today Date: {date}\n\n{system}<|eot_id|>", False))
        for m in messages:
            role, content = m["role"], m["content"]
            header = f"<|start_header_id|>{role}<|end_header_id|>\n\n"
            if self.dated_system and role in ("tool", "ipython"):
                # the 3.1 template pipes a string through tojson (a str is "iterable"), so it arrives JSON-quoted
                out.append(("<|start_header_id|>ipython<|end_header_id|>\n\n"
                            + json.dumps(content, ensure_ascii=False) + "<|eot_id|>", False))
            elif role == "assistant":
                out += [(header, False), (content.strip() + "<|eot_id|>", True)]
            else:
                out.append((header + content.strip() + "<|eot_id|>", False))
        if add_generation_prompt:
            out.append(("<|start_header_id|>assistant<|end_header_id|>\n\n", False))
        return out


@dataclass
class Unsupported:
    """A template we recognise as outside our families: rendering says so instead of guessing."""
    reason: str
    name: str = "unsupported"

    def render_segments(self, messages, add_generation_prompt):
        raise ValueError(f"cannot render this chat template in Python: {self.reason}")


def _unescape_jinja(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), text)


def _default_system(template: str) -> str | None:
    """The system prompt a ChatML template writes when the conversation has none: a whole
    `<|im_start|>system\\n...<|im_end|>` inside one of its Jinja string literals (either quote; braces, quotes and
    backslashes in the text are fine once the literal is unescaped)."""
    for block in _JINJA_CODE.findall(_JINJA_COMMENT.sub("", template)):  # literals live in {{ }} and {% %} only
        for single, double in _JINJA_STRING.findall(block):
            m = _DEFAULT_SYSTEM.search(_unescape_jinja(single or double))
            if m:
                return m.group(1)
    return None


def detect_chat_template(template: str | None, vocab_tokens: set[str], bos_token: str | None = None):
    """Pick the Python renderer for a Jinja template text (or, without one, for the special tokens present)."""
    if template:
        if "<|im_start|>" in template:
            if "<think>" in template:
                return Unsupported("Qwen3-style thinking template (only Qwen2/2.5 and SmolLM2 ChatML are "
                                   "implemented)")
            bos = None
            if "bos_token" in template:
                if not _LEADING_BOS.match(template) or template.count("bos_token") > 1:
                    return Unsupported("a ChatML template that uses bos_token other than as its first output")
                if not bos_token:
                    return Unsupported("the template opens with {{ bos_token }} but the tokenizer has no bos_token")
                bos = bos_token
            return ChatML(default_system=_default_system(template), qwen_tool_turns="<tool_response>" in template,
                          bos_token=bos)
        if "<|start_header_id|>" in template:
            bos = bos_token or "<|begin_of_text|>"
            if "Cutting Knowledge Date" in template:
                date = None if "strftime_now" in template else "26 Jul 2024"
                return Llama3(bos, dated_system=True, date_string=date, name="llama3.1")
            return Llama3(bos)
        return Unsupported(f"unrecognised template (not ChatML, not Llama-3): {template[:120]!r}...")
    if "<|im_start|>" in vocab_tokens:
        return ChatML()
    if "<|start_header_id|>" in vocab_tokens:
        return Llama3(bos_token or "<|begin_of_text|>")
    return Unsupported("the checkpoint has no chat_template and no ChatML/Llama-3 special tokens")


def render_chat(renderer, messages, add_generation_prompt: bool = True,
                continue_final_message: bool = False) -> Segments:
    """Segments of the rendered conversation. continue_final_message leaves the last message open (no
    end-of-turn), so generation continues it: used to force the start of an answer (first-thought prefix)."""
    messages = _check(messages)
    if not continue_final_message:
        return renderer.render_segments(messages, add_generation_prompt)
    if add_generation_prompt:
        raise ValueError("continue_final_message and add_generation_prompt cannot both be set")
    tagged = messages[:-1] + [{**messages[-1], "content": messages[-1]["content"] + _CONTINUE_TAG}]
    segments = renderer.render_segments(tagged, False)
    text = "".join(s for s, _ in segments)
    tag = _CONTINUE_TAG.strip()
    at = text.rfind(tag)
    if at < 0:
        raise ValueError("continue_final_message: the template dropped the final message")
    # As HF: cut at the tag; if the template trimmed the content (Llama-3), trailing spaces go too.
    cut = at if text.startswith(_CONTINUE_TAG, at) else len(text[:at].rstrip())
    if not text[:cut].rstrip().endswith(messages[-1]["content"].strip()):
        # the template rewrote the message (Llama-3.1 JSON-quotes a tool turn): there is nothing to continue
        raise ValueError("continue_final_message: the final message does not appear verbatim in the rendered chat "
                         "(the template rewrites it); continue an assistant message instead")
    out: Segments = []
    done = 0
    for piece, trainable in segments:
        if done + len(piece) >= cut:
            out.append((piece[:cut - done], trainable))
            break
        out.append((piece, trainable))
        done += len(piece)
    return [s for s in out if s[0]]
