"""Turn what a model wrote into one agent step: a thought and the Python code to run.

The reference step format (CodeAct, agent-distillation / smolagents) is

    Thought: ...
    Code:
    ```py
    ...
    ```<end_code>

Small models bend it, and a strict regex turns every bend into a "code block not found" failure. Tolerated here:
  - text after the action: a self-written `Observation:` (with made-up results), `Calling tools:`, more prose
    after the closing fence, `<end_code>` missing or present
  - ```python / ``` / ```py fences, indented, with CRLF line ends or opened on the `Code:` line, ``` inside the
    code's string literals (also multi-line ones);
    several blocks (joined in order, as smolagents does); blocks in other languages (```bash, ```json: a
    command shown, not code to run) skipped
  - an unclosed fence (the stop string cut the closing ``` off, or the model forgot it), also after closed ones
  - no fence at all after `Code:` (the rest is taken as code)
  - a bare `final_answer(...)` line or `Final answer: X` (`**Final Answer:** X`) with no code block
  - a JSON tool call, {"name": "search", "arguments": {"query": "..."}} (bare, after Action:, in a ```json
    block), run as print(search(query="...")); kept in the conversation as the code step it stands for
A step with none of these is a parse failure; its message tells the model the expected format.
"""
from __future__ import annotations

import ast
import json
import re
import textwrap
from dataclasses import dataclass

STOP_STRINGS = ("<end_code>", "Observation:", "Calling tools:")

FORMAT_HINT = ("Write your step as:\nThought: your reasoning\nCode:\n```py\n# python code; print() what you "
               "need to see, call final_answer(answer) when done\n```<end_code>")

# A fenced block of any language (its info string in group 1): blocks in other languages (```bash, ```json, a
# shell command shown before the code) are consumed whole, so their closing fence never opens a Python block.
# Openers stand at the start of a line: ``` inside prose ("I will run ```git log``` first") opens nothing.
# A block closes at a ``` outside the code's string literals (for Python blocks; Python's tokenizer agrees): a ```
# in a string literal (final_answer("run ```git log```"), print("```"), a triple-quoted string with a ``` line in
# it) is code, not the end of the block, while `print(r)``` Let's see` still closes after print(r) (the quote
# after it is prose). If only a string the model left open keeps every fence "inside", the first fence that
# starts a line closes the block.
# An opener may follow the Code: label on its line ("Code: ```py").
_FENCE_OPEN = re.compile(r"^[ \t]*(?:Code[ \t]*:[ \t]*)?```[ \t]*([\w+#.-]*)[^\n`]*\n", re.M)
_OPEN_FENCE = re.compile(r"^[ \t]*(?:Code[ \t]*:[ \t]*)?```[ \t]*(?:py|python|python3)?[ \t]*\n(.*)$",
                         re.S | re.I | re.M)
_PYTHON = {"", "py", "python", "python3"}
_FINAL_CALL = re.compile(r"^[ \t]*final_answer\(.*\)[ \t]*$", re.M)
_FINAL_LINE_START = re.compile(r"^[ \t]*(?=final_answer[ \t]*\()", re.M)
_FINAL_ANYWHERE = re.compile(r"\bfinal_answer[ \t]*\(")
# "Final answer: X", "**Final Answer:** X", "Final answer： X" (line-anchored: no quadratic rescans of blank runs)
_FINAL_TEXT = re.compile(r"^[ \t]*[*_]*final answer[*_]*[ \t]*[:：]\s*(?:\*+|__?(?=\s))?\s*(\S.*)", re.I | re.M)
_CODE_LABEL = re.compile(r"^[ \t]*Code[ \t]*:[ \t]*\n", re.M)
_THOUGHT_END = re.compile(r"^[ \t]*Code[ \t]*:|```", re.M)


def _in_string(code: str) -> bool:
    """Whether the end of this Python code is inside a string literal: one opened on its last line, or a
    triple-quoted one opened on an earlier line and still open. A # comment runs to the end of its line (a quote
    in it opens nothing); a one-quote string left open at a line end closes there (it is a syntax error anyway)."""
    quote, i = None, 0
    while i < len(code):
        c = code[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if code.startswith(quote, i):
                i, quote = i + len(quote), None
                continue
            if c == "\n" and len(quote) == 1:
                quote = None
        elif c == "#":
            i = code.find("\n", i)
            if i < 0:
                return False
            continue
        elif c in "\"'":
            quote = code[i:i + 3] if code[i:i + 3] in ('"""', "'''") else c
            i += len(quote)
            continue
        i += 1
    return quote is not None


def _fences(text: str):
    """(info string, body, end) of each closed fenced block of any language, in order."""
    pos = 0
    while (m := _FENCE_OPEN.search(text, pos)) is not None:
        python = m.group(1).lower() in _PYTHON
        p, first_line_fence = text.find("```", m.end()), None
        while p >= 0:
            start = text.rfind("\n", 0, p) + 1
            at_line_start = not text[start:p].strip()
            if not (python and _in_string(text[m.end():p])):
                yield m.group(1), text[m.end():start if at_line_start else p], p + 3
                break
            if at_line_start and first_line_fence is None:
                first_line_fence = start, p
            p = text.find("```", p + 3)
        else:
            if first_line_fence is not None:  # only "inside" a string left open by mistake: the line's fence closes
                start, p = first_line_fence
                yield m.group(1), text[m.end():start], p + 3
            else:  # never closed: the next opener may be
                pos = m.start() + 1
                continue
        pos = p + 3


def python_blocks(text: str) -> tuple[list[str], int, int]:
    """(the Python fenced blocks of text, dedented, in order; where the last closed Python block ends, 0 if none;
    where the last closed block of any language ends, 0 if none: an unclosed opener is looked for only after it,
    or the closing fence of a ```bash block would open a Python block of the prose after it)."""
    blocks, end, any_end = [], 0, 0
    for lang, body, stop in _fences(text):
        any_end = stop
        if lang.lower() in _PYTHON:
            blocks.append(textwrap.dedent(body).strip("\n"))
            end = stop
    return blocks, end, any_end


def final_answer_call(text: str, at_line_start: bool = False) -> tuple[str, ast.Call, int] | None:
    """(source, parsed call, where it starts in text) of the first final_answer(...) call in text, or None. The
    call ends at the first ")" after which it parses as a Python expression (Python's own parser decides, so nested
    parentheses, quotes and multi-line strings in the argument are kept, and prose or a # comment after the call is
    left out). at_line_start: only a call that opens its line (prose that merely names final_answer is not code)."""
    starts = _FINAL_LINE_START if at_line_start else _FINAL_ANYWHERE
    for m in starts.finditer(text):
        begin = m.end() if at_line_start else m.start()
        close = text.find(")", begin)
        for _ in range(64):  # a bound: a long reply with an unclosed call is not parsed ")" by ")" to its end
            if close < 0:
                break
            source = text[begin:close + 1]
            try:
                node = ast.parse(source, mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                close = text.find(")", close + 1)
                continue
            if isinstance(node, ast.Call):
                return source, node, begin
            break
    return None


_JSON_DECODER = json.JSONDecoder()
_ACTION_LABEL = re.compile(r"\n?[ \t]*(?:Action|Tool call)[ \t]*:[ \t]*(?:```[\w]*[ \t]*)?\s*$", re.I)


def _json_tool_call(text: str, whole: bool = False) -> tuple[str, int] | None:
    """(the Python code, where the object starts) for the first JSON tool call in text, the habit of chat models
    trained on function calling: {"name": "search", "arguments": {"query": "git log"}} (also "parameters", and
    "arguments" as a JSON-encoded string, as the OpenAI API sends it). Tools are called with those keyword
    arguments and printed; final_answer gets its one argument. None if there is none, or (whole) if text is not
    just that object."""
    for i in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, stop = _JSON_DECODER.raw_decode(text, i)
        except ValueError:
            continue
        if whole and (text[:i].strip() or text[stop:].strip()):
            return None
        code = _tool_call_code(obj)
        if code is not None:
            return code, i
        if whole:
            return None
    return None


def _tool_call_code(obj) -> str | None:
    """The Python call a parsed JSON tool call means, or None if it is not one."""
    if not (isinstance(obj, dict) and isinstance(obj.get("name"), str) and obj["name"].isidentifier()
            and set(obj) <= {"name", "arguments", "parameters", "id", "type"}
            and ("arguments" in obj or "parameters" in obj)):
        return None
    args = obj.get("arguments", obj.get("parameters"))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass  # a plain string argument
    if obj["name"] == "final_answer":
        if isinstance(args, dict):
            if len(args) != 1:
                return None
            args = next(iter(args.values()))  # {"answer": x}
        return f"final_answer({args!r})"
    if isinstance(args, dict):
        if not all(isinstance(k, str) and k.isidentifier() for k in args):
            return None
        return f"print({obj['name']}({', '.join(f'{k}={v!r}' for k, v in args.items())}))"
    return f"print({obj['name']}({'' if args is None else repr(args)}))"


@dataclass
class Step:
    text: str            # the step as it should stay in the conversation (cut after the action)
    thought: str
    code: str | None     # None = parse failure
    error: str | None = None


def cut_trailing(text: str) -> str:
    """Drop everything from the first self-written Observation:/Calling tools: on (the model is inventing the
    tool's answer), and whatever follows the first closed code block's <end_code>."""
    for marker in ("Observation:", "Calling tools:"):
        i = text.find(marker)
        if i > 0:
            text = text[:i]
    i = text.find("<end_code>")
    if i >= 0:
        text = text[:i]
    return text.rstrip()


def parse_step(raw: str) -> Step:
    text = cut_trailing(raw.replace("\r\n", "\n"))
    thought_text = None  # where the thought is read from, when not the whole text
    unfenced = False     # the action was not in a fenced block: the kept step is rewritten in the step format
    blocks, end, any_end = python_blocks(text)
    if blocks:
        m = _OPEN_FENCE.search(text, any_end)
        if m and m.group(1).strip():  # a second block left open after the closed ones
            blocks.append(textwrap.dedent(m.group(1)).strip("\n"))
            text = text.rstrip() + "\n```"
        else:
            text = text[:end]  # prose after the last closed block is dropped
    else:
        m = _OPEN_FENCE.search(text, any_end)
        if m:
            blocks = [textwrap.dedent(m.group(1)).strip("\n")]
            text = text.rstrip() + "\n```"  # close it, so the kept step shows the format the model should use
        else:
            unfenced = True
            code_at = _CODE_LABEL.search(text)
            tool_call = _json_tool_call(text[code_at.end():], whole=True) if code_at else _json_tool_call(text)
            if tool_call is not None:  # {"name": "search", "arguments": {...}}: run as the call it names
                blocks = [tool_call[0]]
                thought_text = text[:code_at.start()] if code_at else text[:tool_call[1]]
                thought_text = _ACTION_LABEL.sub("", thought_text)
            elif code_at and text[code_at.end():].strip():
                code = text[code_at.end():].strip("\n")
                blocks = [code[:-3].rstrip() if code.rstrip().endswith("```") else code]  # a lone closing fence
            elif (call := final_answer_call(text, at_line_start=True)) is not None:
                blocks = [call[0]]  # final_answer('x')  # done   /   final_answer("""multi-line""")
                thought_text = text[:call[2]]  # the call is the action, not part of the thought
            elif (line := _FINAL_CALL.search(text)) is not None:  # Python cannot parse it: the error goes back
                blocks = [line.group(0).strip()]
                thought_text = text[:line.start()]  # the line is the action here too, not part of the thought
            elif _FINAL_TEXT.search(text):
                answer = _FINAL_TEXT.search(text).group(1).strip().strip("*").strip()  # not "_": __init__.py
                call = final_answer_call(answer)  # "Final Answer: final_answer('B')" answers B
                blocks = [call[0] if call else f"final_answer({answer!r})"]
    thought = _THOUGHT_END.split(text if thought_text is None else thought_text, maxsplit=1)[0]
    thought = re.sub(r"^\s*Thought\s*:\s*", "", thought).strip()
    code = "\n\n".join(b for b in blocks if b.strip())
    if not code.strip():
        return Step(text, thought, None, "Error: no code found in your step. " + FORMAT_HINT)
    if unfenced:  # kept in the format the model should use (not as JSON, a bare call, a lone closing fence)
        text = f"Thought: {thought}\nCode:\n```py\n{code}\n```"
    return Step(text, thought, code)


def step_message(step: Step) -> str:
    """The assistant turn as stored (and trained on): the reference keeps the <end_code> marker."""
    if step.code is None:
        return step.text
    if "```" in step.text:
        return step.text + "<end_code>"
    return f"Thought: {step.thought}\nCode:\n```py\n{step.code}\n```<end_code>"
