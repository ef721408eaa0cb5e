"""Chat templates written in Python (no Jinja): ChatML (Qwen2/2.5, SmolLM2), Qwen3, Llama-3 / Llama-3.1+ and
Mistral's [INST] templates (v1, v3, Tekken).

A checkpoint ships its template as Jinja text in tokenizer_config.json (or chat_template.jinja). We do not run
Jinja; we recognise the family from markers in that text and render the same string in Python:
  - `<|im_start|>` -> ChatML. The default system prompt the template injects when the conversation has none is
    read out of the template itself ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant." for
    Qwen2.5, "You are a helpful AI assistant named SmolLM, trained by Hugging Face" for SmolLM2-Instruct).
    A template containing `<tool_response>` (Qwen2.5) wraps role "tool" messages into one user turn, consecutive
    tool messages sharing it; other ChatML templates print the role as is.
  - `<|start_header_id|>` -> Llama-3: bos + per message `<|start_header_id|>role<|end_header_id|>\\n\\n` +
    content.strip() + `<|eot_id|>`. With "Cutting Knowledge Date" in the text it is the Llama-3.1/3.2
    template: a system header that always carries the knowledge/today dates (both read from the template; today's
    date where it calls strftime_now), and tool results under `ipython`. A Llama-3.0-style template that writes
    a system turn of its own (a default system prompt) is refused.
  - `<think>` -> only Qwen3's published template (recognised by its exact text, see _QWEN3_TEMPLATES): ChatML
    with no default system prompt, `<think>` blocks on the assistant turns after the last user query, and
    `enable_thinking=False` (a field of the renderer here, a keyword of HF's apply_chat_template) writing an empty
    think block after the generation prompt. Its derivatives (QwQ, Qwen3-2507, SmolLM3, edited copies) put think
    blocks elsewhere, so they are refused rather than rendered as Qwen3.
  - `[INST]` -> only Mistral's published templates, recognised by their exact text (see _MISTRAL_TEMPLATES):
    Mistral-7B-Instruct-v0.1/v0.2 (v1: " [INST] ", the system prompt prepended to the first user turn), v0.3 (v3:
    "[INST] ", the system prompt folded into the last message when it is a user turn, replies trimmed) and
    Mistral-Nemo (Tekken: no spaces). bos + alternating user/assistant turns, replies ending with eos; no
    generation prompt. Other [INST] templates (the original v0.1 one, edited copies) are refused by name.
  - no template at all: decided by the special tokens the vocabulary has, with no default system prompt.
Tool *calls* (assistant messages with `tool_calls`, the `tools=` argument) are out of scope and rejected; a tool
*result* is an ordinary message with role "tool" (Mistral's templates need a tool-call id for one: refused there).
Templates we cannot recognise raise a clear error when used.

`render_segments` returns the text as (piece, is_assistant_output) pairs so that SFT can mask everything but
what the model must learn to write (assistant content and its end-of-turn token), like HF's {% generation %}.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from .errors import ConversationError

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
        raise ConversationError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ConversationError(f"messages[{i}]: expected {{'role': str, 'content': str}}, got {m!r:.80}")
        if m.get("tool_calls"):
            raise ConversationError(f"messages[{i}]: tool_calls are not supported (tool-calling templates are out of "
                                    "scope; write the call into the content and return results as role 'tool')")
    return list(messages)


def _qwen_tool_turn(messages: list[dict], i: int) -> str:
    """Qwen2.5's and Qwen3's rendering of a tool result: consecutive tool messages share one user turn."""
    first = i == 0 or messages[i - 1]["role"] != "tool"
    last = i == len(messages) - 1 or messages[i + 1]["role"] != "tool"
    return (("<|im_start|>user" if first else "") + f"\n<tool_response>\n{messages[i]['content']}\n</tool_response>"
            + ("<|im_end|>\n" if last else ""))


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
                out.append((_qwen_tool_turn(messages, i), False))
            elif self.qwen_tool_turns and role not in ("system", "user", "assistant"):
                raise ConversationError(f"role {role!r} is not rendered by the Qwen template (it would be dropped)")
            elif role == "assistant":
                out += [("<|im_start|>assistant\n", False), (content + "<|im_end|>", True), ("\n", False)]
            else:
                out.append((f"<|im_start|>{role}\n{content}<|im_end|>\n", False))
        if add_generation_prompt:
            out.append(("<|im_start|>assistant\n", False))
        return out


# Where HF's apply_chat_template finds a message's reasoning (it copies the first one set to `reasoning_content`).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _reasoning(message: dict, i: int) -> str | None:
    """The reasoning passed beside the content (None: none, the template then looks for <think> in the content)."""
    value = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if value is not None and not isinstance(value, str):
        raise ConversationError(f"messages[{i}]: reasoning ({'/'.join(_REASONING_FIELDS)}) must be a string, "
                                f"got {type(value).__name__}")
    return value


def _qwen3_last_query(messages: list[dict]) -> int:
    """Index of the last real user query (a user turn that is not a wrapped tool response); think blocks are
    written only on assistant turns after it. The whole conversation's last index when there is none."""
    for i in range(len(messages) - 1, -1, -1):
        content = messages[i]["content"]
        if messages[i]["role"] == "user" and not (content.startswith("<tool_response>")
                                                  and content.endswith("</tool_response>")):
            return i
    return len(messages) - 1


@dataclass
class Qwen3:
    """Qwen3's hybrid-thinking template. Assistant turns before the last user query lose their reasoning (a
    `<think>...</think>` prefix of the content or a reasoning field); the ones after it keep it in a think block,
    and the final one always has a think block (empty when it has no reasoning)."""
    enable_thinking: bool | None = None  # None: not passed (thinking on); False: empty think block in the prompt
    name: str = "qwen3"

    def _assistant_body(self, message: dict, i: int, after_last_query: bool, is_last: bool) -> str:
        content, reasoning = message["content"], _reasoning(message, i)
        if reasoning is None:
            reasoning = ""
            if "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
        if after_last_query and (is_last or reasoning):
            return "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
        return content

    def render_segments(self, messages: list[dict], add_generation_prompt: bool) -> Segments:
        out: Segments = []
        if messages[0]["role"] == "system":
            out.append((f"<|im_start|>system\n{messages[0]['content']}<|im_end|>\n", False))
        last_query = _qwen3_last_query(messages)
        for i, m in enumerate(messages):
            role = m["role"]
            if role == "user" or (role == "system" and i > 0):
                out.append((f"<|im_start|>{role}\n{m['content']}<|im_end|>\n", False))
            elif role == "assistant":
                body = self._assistant_body(m, i, i > last_query, i == len(messages) - 1)
                out += [("<|im_start|>assistant\n", False), (body + "<|im_end|>", True), ("\n", False)]
            elif role == "tool":
                out.append((_qwen_tool_turn(messages, i), False))
            elif role != "system":
                raise ConversationError(f"messages[{i}]: role {role!r} is not rendered by the Qwen3 template "
                                        "(it would be dropped)")
        if add_generation_prompt:
            think = "<think>\n\n</think>\n\n" if self.enable_thinking is False else ""
            out.append(("<|im_start|>assistant\n" + think, False))
        return out


@dataclass
class Llama3:
    """Llama-3 (3.0) template; with `dated_system` the Llama-3.1/3.2 one (always a dated system turn)."""
    bos_token: str = "<|begin_of_text|>"
    dated_system: bool = False
    date_string: str | None = None  # Llama-3.1's fixed "26 Jul 2024"; None: today (3.2's strftime_now)
    knowledge_date: str = "December 2023"  # the "Cutting Knowledge Date" the template writes
    name: str = "llama3"

    def render_segments(self, messages: list[dict], add_generation_prompt: bool) -> Segments:
        out: Segments = [(self.bos_token, False)]
        if self.dated_system:
            system = ""
            if messages[0]["role"] == "system":
                system, messages = messages[0]["content"].strip(), messages[1:]
            date = self.date_string or datetime.now().strftime("%d %b %Y")
            out.append(("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                        f"{self.knowledge_date}\nToday Date: {date}\n\n{system}<|eot_id|>", False))
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


@dataclass(frozen=True)
class _InstLayout:
    """What tells Mistral's published [INST] templates apart (the rest of their logic is the same)."""
    inst_open: str         # before a user turn's text
    inst_close: str        # after it
    reply_prefix: str      # before an assistant turn's text
    trim_reply: bool       # the assistant text goes through Jinja's `trim` (str.strip)
    system_in_last: bool   # the system prompt goes into the last message (if a user turn), else the first user turn


_MISTRAL_LAYOUTS = {
    "v1": _InstLayout(" [INST] ", " [/INST]", " ", trim_reply=False, system_in_last=False),
    "v3": _InstLayout("[INST] ", "[/INST]", " ", trim_reply=True, system_in_last=True),
    "tekken": _InstLayout("[INST]", "[/INST]", "", trim_reply=False, system_in_last=True),
}


@dataclass
class MistralInst:
    """Mistral's [INST] templates (see _MISTRAL_TEMPLATES for which checkpoints): bos, then `[INST] user [/INST]`
    and `reply</s>` turns that must alternate, starting with a user turn, after an optional first system message.
    The system prompt is not a turn of its own: v1 prepends it to the first user turn; v3 and Tekken to the
    conversation's last message, and only when that is a user turn, so a conversation ending with an assistant
    turn (SFT data, a continued reply) shows no system prompt at all, as in transformers. There is no generation
    prompt (a user turn already ends with [/INST]), so add_generation_prompt changes nothing, as in the templates.
    Tool results need a tool-call id these conversations do not carry: role "tool" is refused (the templates raise
    without one) and observations go in as user turns, which the agent does by default."""
    form: str  # a key of _MISTRAL_LAYOUTS
    bos_token: str
    eos_token: str
    name: str = "mistral"

    def _check_turns(self, turns: list[dict], first_index: int) -> None:
        """The templates raise on these (or, for a role they do not know, render nothing); we say what to do."""
        tool_results = self.form != "v1"  # v3 and Tekken have [TOOL_RESULTS]; v1 has no tool role at all
        for j, m in enumerate(turns):
            i, role = j + first_index, m["role"]
            if role in ("tool", "tool_results"):
                why = ("renders a tool result only with a 9-character tool_call_id that answers an assistant "
                       "[TOOL_CALLS] turn (tool calls are out of scope here)" if tool_results else
                       "has no tool role (only user and assistant turns after an optional first system message)")
                raise ConversationError(f"messages[{i}]: role {role!r}: the Mistral {self.form} template {why}; give "
                                        "observations as user turns (observation_role 'user', the default)")
            if role == "system":
                raise ConversationError(f"messages[{i}]: a system message may only come first in a Mistral template")
            if role not in ("user", "assistant"):
                raise ConversationError(f"messages[{i}]: role {role!r} is not rendered by the Mistral {self.form} "
                                        "template (user and assistant turns after an optional first system message)")
            if tool_results and m.get("tool_calls") is not None:
                raise ConversationError(f"messages[{i}]: tool_calls are not supported (the Mistral {self.form} "
                                        "template would render a [TOOL_CALLS] turn)")
            expected = "user" if j % 2 == 0 else "assistant"
            if role != expected:
                raise ConversationError(f"messages[{i}]: a {role} turn where the Mistral {self.form} template needs "
                                        f"a {expected} turn: after the optional first system message, turns must "
                                        "alternate user/assistant/user/... starting with user (merge consecutive "
                                        "turns)")

    def render_segments(self, messages: list[dict], add_generation_prompt: bool) -> Segments:
        layout = _MISTRAL_LAYOUTS[self.form]
        system, turns = (messages[0]["content"], messages[1:]) if messages[0]["role"] == "system" else (None, messages)
        self._check_turns(turns, len(messages) - len(turns))
        system_turn = len(turns) - 1 if layout.system_in_last else 0
        out: Segments = [(self.bos_token, False)]
        for j, m in enumerate(turns):
            content = m["content"]
            if m["role"] == "user":
                if system is not None and j == system_turn:
                    content = system + "\n\n" + content
                out.append((layout.inst_open + content + layout.inst_close, False))
            else:
                # the reply's leading space is trained with it: it is part of the model's first token ("▁word")
                reply = content.strip() if layout.trim_reply else content
                out.append((layout.reply_prefix + reply + self.eos_token, True))
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


# SHA-256 of Qwen3's published chat template (Qwen/Qwen3-0.6B to Qwen3-235B-A22B, April 2025), line ends as \n and
# outer whitespace stripped. Recognised by its exact text because the templates derived from it decide
# differently where think blocks go (Qwen3-2507's thinking models open one in the generation prompt, QwQ drops
# them all, edited copies ignore enable_thinking): rendering any of those as Qwen3 would silently change prompts.
_QWEN3_TEMPLATES = {"87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5"}


def _template_digest(template: str) -> str:
    return hashlib.sha256(template.replace("\r\n", "\n").strip().encode("utf-8")).hexdigest()


# SHA-256 (as _QWEN3_TEMPLATES) of Mistral's published [INST] templates -> their form in _MISTRAL_LAYOUTS:
#   v1      Mistral-7B-Instruct-v0.1 and -v0.2 (their 2024 template, with a system prompt)
#   v3      Mistral-7B-Instruct-v0.3, Mistral-Large-Instruct-2407, Mistral-Small-Instruct-2409
#   tekken  Mistral-Nemo-Instruct-2407
# Recognised by the exact text because the copies in circulation differ where it matters: the original v0.1
# template has no system prompt and glues the reply to [/INST], fine-tunes move the system prompt to the last
# *user* turn or trim differently, Ministral/Pixtral/Mistral-Small-3 templates add [SYSTEM_PROMPT] or images.
_MISTRAL_TEMPLATES = {
    "bbc58aad99454df60138be9530c9601a0adfe3d8932cda975e1f10b2410ddc51": "v1",
    "cafb64e0e9e5fd2503054b3479593fae39cbdfd52338ce8af9bb4664a8eb05bd": "v3",
    "e7deee034838db2bfc7487788a3013d8a307ab69f72f3c54a85f06fd76007d4e": "tekken",
}


def _mistral(template: str, bos_token: str | None, eos_token: str | None):
    form = _MISTRAL_TEMPLATES.get(_template_digest(template))
    if form is None:
        return Unsupported("unrecognised template: Mistral's [INST] format is implemented for the exact published "
                           "templates of Mistral-7B-Instruct-v0.1/v0.2 (v1), v0.3 (v3) and Mistral-Nemo (Tekken); "
                           "this [INST] template (an older or edited version, or another family) is not "
                           "implemented: copy the checkpoint's published chat_template into tokenizer_config.json")
    if not bos_token or not eos_token:
        return Unsupported(f"the Mistral {form} template writes bos_token and eos_token but the tokenizer lacks "
                           f"{'bos_token' if not bos_token else 'eos_token'} (tokenizer_config.json)")
    return MistralInst(form, bos_token, eos_token)


_LLAMA_KNOWLEDGE_DATE = re.compile(r"Cutting Knowledge Date: ([^\\\"'{}]*)\\n")  # up to the literal's "\\n"
_LLAMA_FIXED_DATE = re.compile(r"""set\s+date_string\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _llama31(template: str, bos: str):
    """The dated Llama-3.1/3.2 renderer with the dates this template writes: the knowledge cut-off and, without
    strftime_now (3.1, 3.3), the fixed "Today Date" it sets (3.2 writes today's date)."""
    knowledge = _LLAMA_KNOWLEDGE_DATE.search(template)
    if not knowledge:
        return Unsupported("a Llama-3.1-style template whose 'Cutting Knowledge Date' is not a plain text literal")
    date = None
    if "strftime_now" not in template:
        fixed = _LLAMA_FIXED_DATE.search(template)
        if not fixed:
            return Unsupported("a Llama-3.1-style template that sets no date_string literal and has no strftime_now")
        date = fixed.group(1) if fixed.group(1) is not None else fixed.group(2)
    return Llama3(bos, dated_system=True, date_string=date, knowledge_date=knowledge.group(1),
                  name="llama3.1")


def detect_chat_template(template: str | None, vocab_tokens: set[str], bos_token: str | None = None,
                         eos_token: str | None = None):
    """Pick the Python renderer for a Jinja template text (or, without one, for the special tokens present)."""
    if template:
        if "<|im_start|>" in template:
            if "<think>" in template:
                if _template_digest(template) in _QWEN3_TEMPLATES:
                    return Qwen3()
                return Unsupported("a thinking template (<think>) that is not Qwen3's published one (QwQ, "
                                   "Qwen3-2507, SmolLM3 and edited Qwen3-style templates place think blocks "
                                   "differently; only Qwen2/2.5, SmolLM2 ChatML and Qwen3's own are implemented)")
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
                return _llama31(template, bos)
            if "<|start_header_id|>system" in template:
                return Unsupported("a Llama-3 template that writes a system turn of its own (only Llama-3.0's, "
                                   "which writes none, and the dated Llama-3.1/3.2 one are implemented)")
            return Llama3(bos)
        if "[INST]" in template:
            return _mistral(template, bos_token, eos_token)
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
        raise ConversationError("continue_final_message and add_generation_prompt cannot both be set")
    tagged = messages[:-1] + [{**messages[-1], "content": messages[-1]["content"] + _CONTINUE_TAG}]
    segments = renderer.render_segments(tagged, False)
    text = "".join(s for s, _ in segments)
    tag = _CONTINUE_TAG.strip()
    at = text.rfind(tag)
    if at < 0:
        raise ConversationError("continue_final_message: the template dropped the final message")
    # As HF: cut at the tag; if the template trimmed the content (Llama-3), trailing spaces go too.
    cut = at if text.startswith(_CONTINUE_TAG, at) else len(text[:at].rstrip())
    if not text[:cut].rstrip().endswith(messages[-1]["content"].strip()):
        # the template rewrote the message (Llama-3.1 JSON-quotes a tool turn): there is nothing to continue
        raise ConversationError("continue_final_message: the final message does not appear verbatim in the rendered "
                                "chat (the template rewrites it); continue an assistant message instead")
    out: Segments = []
    done = 0
    for piece, trainable in segments:
        if done + len(piece) >= cut:
            out.append((piece[:cut - done], trainable))
            break
        out.append((piece, trainable))
        done += len(piece)
    return [s for s in out if s[0]]
