"""The agent loop (ReAct with code actions, "CodeAct"): think, write code, see what it printed, repeat.

    agent = Agent(llm, tools={"search": make_search(retriever)})
    result = agent.run("How do I undo the last commit?")       # RunResult: answer, messages, counters

Each step the model continues the conversation until a stop string (<end_code>, Observation:, Calling tools:).
The step is parsed tolerantly (parsing.py) and its code runs in the sandbox; the observation — what it printed,
or the parse/execution error with a request to retry — goes back as the next turn (role "tool"). The run ends
when the code calls final_answer(x). After max_steps steps without one the model is asked once more, without
tools, to answer from what it has (the "forced" answer). The messages of a run are a training trajectory as is.
"""
from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from . import prompts
from .llm import ContextOverflow
from .multiple_choice import to_letter
from .parsing import STOP_STRINGS, final_answer_call, parse_step, step_message
from .sag import choose_step
from .sandbox import Sandbox, ToolBox


@dataclass
class AgentConfig:
    max_steps: int = 5
    max_tokens: int = 512           # per step
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    sag: int = 0                    # N candidates per step (0 or 1: off)
    sag_temperature: float = 0.4
    sag_top_p: float = 0.8
    timeout: float = 10.0           # sandbox wall time per cell, seconds
    memory_mb: int = 512
    max_output: int = 4000          # characters of printed output kept per cell
    task_variables: bool = True     # define `question` (str) and `choices` (dict or None) in the sandbox


@dataclass
class RunResult:
    answer: object = None
    messages: list = field(default_factory=list)
    steps: int = 0
    parse_failures: int = 0
    exec_errors: int = 0
    hit_max_steps: bool = False
    forced_answer: bool = False
    tool_calls: int = 0
    tool_calls_run: int = 0
    seconds: float = 0.0
    letter: str | None = None       # multiple choice: the normalised option letter
    error: str | None = None        # why the run stopped early (the context filled up)
    question: str = ""
    choices: dict | None = None

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("answer", "letter", "steps", "parse_failures", "exec_errors",
                                                 "hit_max_steps", "forced_answer", "tool_calls", "tool_calls_run",
                                                 "seconds", "error")}


_FINAL_LINE = re.compile(r"final answer[*_]*[ \t]*[:：]\s*(?:\*+|__?(?=\s))?\s*(\S.*)", re.I)
_FINAL_CALL = re.compile(r"final_answer\(")


def parse_forced_answer(text: str) -> str:
    """The answer in a reply to the forced-answer prompt: `Final answer: X`, a final_answer(X) call, or the text."""
    arg = _final_call_argument(text)
    if arg is not None:
        return arg
    m = _FINAL_LINE.search(text)
    if m:
        return m.group(1).strip().splitlines()[0].strip().strip("*").strip()
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _final_call_argument(text: str) -> str | None:
    """The argument of the first final_answer(...) in text, as the sandbox's final_answer(answer) would receive it:
    its value if it is a literal, else its source (a variable name); `answer=` as a keyword too. The call is the
    shortest one Python parses (so prose after it, even with parentheses, stays out); if none parses, everything
    up to the parenthesis that closes the call."""
    call = final_answer_call(text)
    if call is not None:
        source, node, _ = call
        args = list(node.args) + [k.value for k in node.keywords if k.arg == "answer"]
        if not args:
            return ""
        try:
            return str(ast.literal_eval(args[0]))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return ast.get_source_segment(source, args[0]) or ""
    for m in _FINAL_CALL.finditer(text):  # a call Python cannot parse: up to the parenthesis that closes it
        start = m.end()
        depth = 1
        for i in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip().strip("'\"")
    return None


class Agent:
    """The CodeAct loop over one model. on_event(kind, text) sees the run as it goes: "step" (a reply),
    "observation" (what its code printed, or the error), "forced" (the reply to the forced-answer prompt once the
    steps are used up) and "final" (the answer)."""

    def __init__(self, llm, tools: dict[str, Callable] | None = None, config: AgentConfig | None = None,
                 extractor=None, on_event: Callable[[str, str], None] | None = None, system: str | None = None):
        self.llm, self.tools, self.config = llm, dict(tools or {}), config or AgentConfig()
        self.extractor, self.on_event, self.system = extractor, on_event, system

    def _emit(self, kind: str, text: str):
        if self.on_event:
            self.on_event(kind, text)

    def run(self, question: str, choices: dict | None = None, prefix: str = "") -> RunResult:
        """Answer one question. prefix: text the first step is forced to start with (FTP: "Thought: ...")."""
        t0 = time.monotonic()
        tools = dict(self.tools)
        if self.extractor is not None and "search" in tools:
            tools["search"] = self.extractor.wrap(tools["search"], question)
        toolbox = ToolBox(tools)
        # system: a fixed string, a function of multiple_choice (a domain's own prompt), or the default
        system = self.system(bool(choices)) if callable(self.system) else \
            self.system or prompts.system_prompt(multiple_choice=bool(choices), search="search" in tools)
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": prompts.task_text(question, choices)}]
        res = RunResult(messages=messages, question=question, choices=dict(choices) if choices else None)
        try:
            self._loop(res, toolbox, prefix)
        except ContextOverflow as e:  # this question is over; an exam goes on with the next one
            res.error = str(e)
            self._emit("final", f"(stopped: {e})")
        res.tool_calls, res.tool_calls_run = toolbox.calls, toolbox.real_calls
        if choices:
            res.letter = to_letter(res.answer, choices)
        res.seconds = time.monotonic() - t0
        return res

    def _loop(self, res: RunResult, toolbox: ToolBox, prefix: str):
        cfg, messages = self.config, res.messages
        with Sandbox(toolbox, timeout=cfg.timeout, memory_mb=cfg.memory_mb, max_output=cfg.max_output) as box:
            if cfg.task_variables:  # the code can read the task instead of copying it token by token
                box.run(f"question = {res.question!r}\nchoices = {res.choices!r}")
            for i in range(cfg.max_steps):
                first = prefix if i == 0 else ""
                if cfg.sag > 1:
                    step, result, _ = choose_step(self.llm, messages, box, cfg.sag, cfg.sag_temperature,
                                                  cfg.sag_top_p, cfg.max_tokens, first, cfg.seed, res.choices)
                else:
                    text = self.llm.complete(messages, stop=STOP_STRINGS, temperature=cfg.temperature,
                                             top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed,
                                             prefix=first)[0]
                    step = parse_step(first + text)
                    result = box.run(step.code) if step.code is not None else None
                res.steps += 1
                messages.append({"role": "assistant", "content": step_message(step)})
                self._emit("step", messages[-1]["content"])
                if step.code is None:
                    res.parse_failures += 1
                    observation = "Observation:\n" + step.error
                else:
                    if result.error:
                        res.exec_errors += 1
                    if result.called_final and not result.error:
                        res.answer = result.final
                        self._emit("final", str(result.final))
                        break
                    observation = result.observation()
                messages.append({"role": "tool", "content": observation})
                self._emit("observation", observation)
            else:
                res.hit_max_steps = res.forced_answer = True
                messages.append({"role": "user", "content": prompts.FORCED_ANSWER})
                text = self.llm.complete(messages, stop=STOP_STRINGS, temperature=cfg.temperature,
                                         top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed)[0]
                messages.append({"role": "assistant", "content": text.strip()})
                self._emit("forced", text.strip())  # (without it `ask` showed an answer it never showed written)
                res.answer = parse_forced_answer(text)
                self._emit("final", str(res.answer))
