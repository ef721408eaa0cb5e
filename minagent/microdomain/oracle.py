"""The oracle teacher of a synthetic domain: a perfect agent that plays the 32B teacher's part.

It knows every exam item (question -> answer, the entries holding the evidence) but not what the search tool
will return: it runs through the real Agent, its searches hit the real index, and it reads the observations.
It acts the way a CodeAct agent should: it searches with the question itself (the sandbox holds it in the
variable `question`), keeps the result in a variable and reads the answer out of it with code (a regular
expression on "Default | ...", "increase <parameter>", "--flag: <meaning>"), so no name or value has to be
copied token by token — the interpreter does it. A hop whose evidence is not in what came back is searched
again with the whole question (a recovery); if that fails too it answers "unknown" and the distillation
filter rejects the run. One question in `poor_every` starts with a vague query (the question's words without
its identifiers), so the student also sees a poor first query and a recovery. Two-hop questions take two
searches: the message, then the parameter its corrective action names.

Also here: the chain-of-thought traces of the CoT-distillation baseline (the same facts, stated from memory, no
search) and the extractor's part: its training examples (question + passages -> the passage that bears on it)
and, when the teacher's agent runs with the extractor in the loop, the same copy as its reply.
"""
from __future__ import annotations

import re
import zlib

from ..agent.llm import ScriptedLLM
from ..agent.prompts import EXTRACTOR_SYSTEM
from .domain import Domain
from .formats import gold_reply


def _facts(d: Domain, item: dict) -> dict:
    """Names and values an item's thoughts mention."""
    kind, ev = item["type"], item["evidence"]
    f = {"answer": item["answer"]}
    if kind.startswith("param"):
        p = d.parameter(ev[0])
        f.update(p=p.name, v=p.default, lo=p.low, hi=p.high, unit=p.unit)
    elif kind.startswith("message"):
        m = next(m for m in d.messages if m.id == ev[0])
        p = d.parameter(m.parameter)
        f.update(m=m.id, p=p.name, v=p.default)
    else:
        c = next(c for c in d.commands if c.name == ev[0])
        flag = item["answer"]
        f.update(cmd=c.name, flag=flag, meaning=c.options[flag])
    return f


# How the teacher reads the answer out of the observation: with code on the variable `r` that holds the
# search result (CodeAct), so the answer is extracted by the interpreter, not copied token by token.
EXTRACT = {
    "param_default": ("The passage gives the default value.", r'final_answer(re.search(r"Default \| (\S+)", r).group(1))'),
    "param_max": ("The passage gives the range; the largest value is its upper end.",
                  r'final_answer(re.search(r"Range \| \S+ to (\S+)", r).group(1))'),
    "param_unit": ("The passage gives the unit.", r'final_answer(re.search(r"Unit \| (\S+)", r).group(1))'),
    "message_parameter": ("The corrective action names the parameter to increase.",
                          r'final_answer(re.search(r"increase (\w+)", r).group(1))'),
    "message_default": ("The passage gives the default value.", r'final_answer(re.search(r"Default \| (\S+)", r).group(1))'),
    "command_option": ("The passage lists each option with what it does.",
                       'meaning = question.split("makes it ")[1].rstrip("?")\n'
                       r'final_answer(re.search(r"(--[\w-]+): " + re.escape(meaning), r.split("\n\n")[0]).group(1))'),
}
# The first thought says what the question asks: the student's later steps condition on it (a one-hop and a
# two-hop message question open with the same search and differ only in what comes after).
GOAL = {
    "param_default": "The question asks for the default value of a parameter.",
    "param_max": "The question asks for the largest value a parameter accepts.",
    "param_unit": "The question asks for the unit of a parameter.",
    "message_parameter": "The question asks which parameter a message's corrective action names.",
    "message_default": "The question asks for the default value of the parameter a message's corrective action "
                       "names: two searches.",
    "command_option": "The question asks which option of a command does something.",
}
SECOND_HOP = ("The corrective action names the parameter to increase; now I need its default value. "
              "I will search for it.",
              'import re\np = re.search(r"increase (\\w+)", r).group(1)\nr = search(p)\nprint(r)')
# Many commands share an option's meaning, so a command question searches for the command's name.
COMMAND_SEARCH = ("I will search the manual for the command.",
                  'import re\ncommand = re.search(r"option of (.+) makes", question).group(1)\n'
                  'r = search(command)\nprint(r)')
MEMORY_SENTENCE = {
    "param_default": "The default value of {p} is {v}.",
    "param_max": "{p} accepts values from {lo} to {hi}.",
    "param_unit": "{p} is given in {unit}.",
    "message_parameter": "The corrective action for {m} is to increase {p}.",
    "message_default": "The corrective action for {m} is to increase {p}. The default value of {p} is {v}.",
    "command_option": "{flag} makes {cmd} {meaning}.",
}


def _letter_sentence(item: dict) -> str:
    return f" That is option {item['correct']}." if item.get("choices") else ""


def cot_trace(d: Domain, item: dict) -> str:
    """The CoT-distillation target: the facts from memory, then the answer."""
    f = _facts(d, item)
    return f"Thought: {MEMORY_SENTENCE[item['type']].format(**f)}{_letter_sentence(item)}\nAnswer: {gold_reply(item)}"


def _step(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_code>"


def poor_query(item: dict) -> str:
    """The question's words without its identifiers: a vague first query."""
    words = re.findall(r"[A-Za-z]+", item["question"])
    names = {w.lower() for e in item["evidence"] for w in re.findall(r"[A-Za-z]+", e)}
    keep = [w.lower() for w in words if w.lower() not in names and len(w) > 3][:5]
    return " ".join(keep) or "parameter"


class DomainOracle:
    """complete()-compatible policy (wrapped in a ScriptedLLM by `oracle_llm`)."""

    def __init__(self, d: Domain, items: list[dict], poor_every: int = 5):
        self.d, self.poor_every = d, poor_every
        self.by_question = {it["question"] + "\n" + repr(sorted((it.get("choices") or {}).items())): it
                            for it in items}
        # the extractor is asked with the bare question (no options); items sharing one share its evidence
        self.by_text = {it["question"]: it for it in items}

    def _item(self, task: str) -> dict | None:
        q, _, opts = task.partition("\n\nOptions:\n")
        choices = sorted((line[0], line[3:]) for line in opts.splitlines() if line[1:3] == ". ")
        return self.by_question.get(q + "\n" + repr(choices))

    def _poor(self, item: dict) -> bool:
        return self.poor_every > 0 and zlib.crc32(item["id"].encode()) % self.poor_every == 0

    def __call__(self, messages, n, prefix):
        if messages[0]["role"] == "system" and messages[0]["content"] == EXTRACTOR_SYSTEM:
            return [self.extract(messages[1]["content"])] * n
        task = next(m["content"] for m in messages if m["role"] == "user")
        item = self._item(task)
        if item is None:
            return [_step("I do not know this question.", "final_answer('unknown')")] * n
        return [self.next_step(item, messages)] * n

    def extract(self, request: str) -> str:
        """The extractor's reply to ContextExtractor's request ("Question: ...\n\nPassages:\n..."): the passages
        that hold the question's evidence, as extractor_examples teaches the student to copy them."""
        question, _, passages = request.partition("\n\nPassages:\n")
        item = self.by_text.get(question.removeprefix("Question: "))
        keep = evidence_blocks(passages, item["evidence"]) if item else []
        return "\n".join(keep) or "No relevant text."

    def next_step(self, item: dict, messages: list[dict]) -> str:
        steps = [m for m in messages if m["role"] == "assistant"]
        observations = [m["content"] for m in messages if m["role"] in ("tool", "observation")]
        done = len(steps)
        step = 0
        for hop, e in enumerate(item["evidence"]):
            tries = ["poor", "exact"] if hop == 0 and self._poor(item) else ["exact"]
            found = False
            for t, kind in enumerate(tries):
                if step < done:  # this search was made: did its observation hold the evidence?
                    # the code reads the first passage, so the evidence must be there
                    hit = step < len(observations) and e in observations[step].split("\n\n[2]")[0]
                    step += 1
                    if hit:
                        found = True
                        break
                    continue
                if hop > 0:
                    return _step(*SECOND_HOP)
                goal = GOAL[item["type"]] + " "
                if kind == "poor":
                    query = poor_query(item)
                    return _step(f"{goal}I will search the manual for {query}.", f"r = search({query!r})\nprint(r)")
                if t > 0:
                    return _step("That passage is about another entry. I will search with the whole question.",
                                 "r = search(question)\nprint(r)")
                if item["type"] == "command_option":
                    return _step(goal + COMMAND_SEARCH[0], COMMAND_SEARCH[1])
                return _step(goal + "I will search the manual with the question.", "r = search(question)\nprint(r)")
            if not found:
                return _step("The manual does not say. I cannot answer.", "final_answer('unknown')")
        thought, code = EXTRACT[item["type"]]
        if item.get("choices"):
            thought += " The option with that text is the answer."
        return _step(thought, "import re\n" + code)


def oracle_llm(d: Domain, items: list[dict], poor_every: int = 5) -> ScriptedLLM:
    return ScriptedLLM(DomainOracle(d, items, poor_every))


def evidence_blocks(passages: str, evidence) -> list[str]:
    """The texts (without their "[i] title (source)" line) of the search result's passages that name an evidence
    entry: what a perfect extractor copies."""
    blocks = [b for b in passages.split("\n\n") if b.strip()]
    return [b.split("\n", 1)[-1] for b in blocks if any(e in b for e in evidence)]


def extractor_examples(trajectory: dict, item: dict) -> list[dict]:
    """Extractor training conversations from one kept trajectory: for each search observation, the passage
    block that holds an evidence entry, copied."""
    out = []
    for m in trajectory["messages"]:
        if m["role"] != "tool" or "Execution logs:" not in m["content"]:
            continue
        logs = m["content"].split("Execution logs:\n", 1)[1].split("Last output from code snippet:")[0].strip()
        keep = evidence_blocks(logs, item["evidence"])
        if not keep:
            continue
        out.append({"messages": [
            {"role": "system", "content": EXTRACTOR_SYSTEM},
            {"role": "user", "content": f"Question: {item['question']}\n\nPassages:\n{logs}"},
            {"role": "assistant", "content": "\n".join(keep)}]})
    return out
