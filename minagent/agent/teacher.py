"""Teacher trajectories: run a strong model as the agent over questions and keep the runs worth learning from.

    teacher = HTTPChatLLM("http://127.0.0.1:8000/v1")          # or MinagentLLM(model, tok), or oracle_teacher()
    distill(questions, Agent(teacher, tools), "traj.jsonl", ftp_llm=teacher)

- First-thought prefix (FTP, agent-distillation): the teacher first answers in plain chain-of-thought; the first
  paragraph of that reasoning is forced as the start of the agent's first Thought (continue-final-message).
- Rejection filtering: a trajectory is kept only if its final answer is correct, every step parsed, and it did
  not run out of steps (and its text is encodable: no lone surrogate). Execution errors the agent recovered
  from are kept: they teach recovery.
- Output: one JSON object per line, {"messages": [...], "id", "question", "answer", "gold", "ftp", "stats"}, the
  format minagent.training.trajectories reads (observations are role "tool"). Rejected runs go to
  `<out>.rejected.jsonl` with the reason.
- Resumable: ids already in either file are skipped, and each line is written with one write() and fsync'd,
  so a run killed or disconnected at any point (a dropped teacher connection raises after the HTTP client's
  retries) loses at most the question in flight and never duplicates one. A last line cut mid-write is removed
  first, with a message naming it; any other unreadable line stops the run, named, before a question runs.
- Oracle teacher: on a synthetic domain whose answers and source passages are known, oracle_teacher() plays a
  perfect agent (search, then final_answer with the known answer) so the pipeline runs without a big model.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from ..jsonl import parse_jsonl_line, read_jsonl
from . import prompts
from .llm import ContextOverflow, ScriptedLLM
from .multiple_choice import is_correct, to_letter


def first_thought(llm, question: str, choices: dict | None = None, max_tokens: int = 256) -> str:
    """FTP: the first paragraph of the teacher's plain chain-of-thought answer, as a 'Thought: ...' prefix; when
    max_tokens cut the reply inside that paragraph, its whole sentences only."""
    messages = [{"role": "system", "content": prompts.COT_SYSTEM},
                {"role": "user", "content": prompts.task_text(question, choices)}]
    text = llm.complete(messages, max_tokens=max_tokens, temperature=0.0, session="ftp")[0].strip()
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    paragraph = paragraphs[0] if paragraphs else ""
    info = getattr(llm, "last", None)  # (MinagentLLM and HTTPChatLLM say why the reply ended)
    if len(paragraphs) == 1 and info is not None and info.finish_reasons[:1] == ["length"]:
        # cut by max_tokens inside its first paragraph: forcing a half sentence would make the teacher finish a
        # thought it never had; keep the whole sentences, or no prefix at all
        ends = [i + 1 for i, c in enumerate(paragraph) if c in ".!?" and paragraph[i + 1:i + 2] in ("", " ", "\n")]
        paragraph = paragraph[:ends[-1]] if ends else ""
    if paragraph.lower().startswith("thought:"):
        paragraph = paragraph[len("thought:"):].strip()
    return f"Thought: {paragraph}" if paragraph else ""


def rejection_reason(result, item: dict) -> str | None:
    """None when the trajectory is kept."""
    if getattr(result, "error", None):
        return f"stopped early: {result.error}"
    if result.parse_failures:
        return f"{result.parse_failures} step(s) did not parse"
    if result.hit_max_steps:
        return "ran out of steps"
    if not is_correct(result.answer, item):
        return f"wrong answer {result.answer!r}"
    return None


def _done_ids(path: Path, log) -> set:
    """Ids already written. Every line is one append, so a crash can only cut the LAST line: that one is
    repaired (_repair_last_line). Any other unreadable line was put there by something else and may hold a
    paid-for trajectory: it stops the run, named, and the file is left as it is."""
    if not path.is_file():
        return set()
    _repair_last_line(path, log)
    rows, _ = read_jsonl(path, _row_id, hint=f" ({path.name} is distill's output: it appends there and skips the "
                                             "ids it holds; fix or remove that line, then run again)")
    return {qid for _, qid in rows}


def _row_id(obj) -> str:
    if not isinstance(obj, dict) or "id" not in obj:
        raise ValueError('expected an object with an "id" (a line distill writes)')
    return str(obj["id"])


def _repair_last_line(path: Path, log):
    """A last line without its newline: cut off mid-write (removed, saying so, so its question runs again), or
    whole with only the newline lost (the newline is added: the next append would glue onto it)."""
    raw = path.read_bytes()
    start = max(raw.rfind(b"\n"), raw.rfind(b"\r")) + 1  # lines end at \n, \r\n or \r, as read_jsonl reads them
    last = raw[start:]
    if not last.strip():
        return
    try:
        _row_id(parse_jsonl_line(last, first=start == 0))
    except (ValueError, TypeError):
        os.truncate(path, start)
        line = len(raw[:start].splitlines()) + 1
        log(f"{path}:{line}: the last line was cut off mid-write (a run stopped while writing it): removed; "
            "its question runs again")
        return
    _write_all(path, b"\n")


# Characters str.splitlines() (and many JSONL readers) end a line at, that json.dumps(ensure_ascii=False) leaves
# raw (it escapes only those below U+0020): written as their JSON escapes, a row stays one line for every reader.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _append(path: Path, obj: dict):
    """One row as one line. Lone surrogates (only a rejected row can hold one: _utf8_encodable) become "?":
    written as escapes, the JSONL reader would refuse the line on the next resume."""
    line = json.dumps(obj, ensure_ascii=False)
    for char, escape in _LINE_BREAKS.items():
        line = line.replace(char, escape)
    _write_all(path, (line + "\n").encode("utf-8", errors="replace"))


def _utf8_encodable(obj) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _write_all(path: Path, data: bytes):
    """data appended with O_APPEND and fsync'd: a crash leaves at most the last line cut."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked (a signal, a full disk just before ENOSPC)
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ready_to_append(*paths: Path):
    """Missing directories created (as the CLI's path check promises, minagent/cli_paths.py); a directory where
    an output file goes is refused, naming it."""
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(f"{path}: a directory; distill's output is a JSONL file (it appends there)")
        path.parent.mkdir(parents=True, exist_ok=True)


def _scalar(v) -> bool:
    """Text or a number (a spreadsheet export writes 30, not "30"): what scoring compares as text."""
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def read_questions(path, gold: bool = True) -> list[dict]:
    """Exam/question JSONL: {"id", "question", "answer"?, "aliases"?, "choices"?, "correct"?} per line.

    Every field is checked here, line by line, because a wrong shape scores silently wrong later: aliases given
    as one string would be read as its characters (so "0" would match "40 MB/s"), a `correct` letter that is not
    an option can never be matched. gold: each line must say its answer ("answer", or "correct" with choices):
    exams and distillation score against it.
    """
    def question(item):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
            raise ValueError('expected an object with a non-empty "question" string')
        choices = item.get("choices")
        if choices is not None and not (isinstance(choices, dict) and choices
                                        and all(_scalar(v) for v in choices.values())):
            raise ValueError('"choices" must be an object like {"A": "...", "B": "..."}')
        aliases = item.get("aliases")
        if aliases is not None and not (isinstance(aliases, list) and all(_scalar(a) for a in aliases)):
            raise ValueError(f'"aliases" must be a list of strings, like ["{aliases}"], got {aliases!r}'
                             if isinstance(aliases, str) else f'"aliases" must be a list of strings or numbers, got {aliases!r}')
        correct = item.get("correct")
        if correct is not None and (not choices or str(correct).upper() not in {str(k).upper() for k in choices}):
            raise ValueError(f'"correct" is {correct!r}, which is not one of the choices '
                             f'{sorted(choices) if choices else "(none given)"}')
        if gold and item.get("answer") is None and correct is None:
            raise ValueError('no gold answer: give "answer" (free text), or "choices" and "correct" (a letter)')
        if choices and all(isinstance(k, str) and len(k) == 1 for k in choices):
            # letters in upper case, as replies are read ("b" and "(b)" mean option B); {"a": ...} was never matched
            upper = {k.upper(): v for k, v in choices.items()}
            if len(upper) != len(choices):
                raise ValueError(f'"choices" has keys that differ only in case: {sorted(choices)}')
            item = {**item, "choices": upper}
            if correct is not None:
                item["correct"] = str(correct).upper()
        if gold and choices and correct is None and to_letter(item["answer"], item["choices"]) is None:
            # scored by the letter its answer names: one that names no option would count every reply wrong
            raise ValueError(f'"answer" {item["answer"]!r:.60} is neither an option letter nor the text of one of '
                             f'the choices {sorted(choices)}; give "correct" with the letter')
        return item
    rows, _ = read_jsonl(path, question)
    seen = {}
    for where, item in rows:
        item.setdefault("id", where.rsplit(":", 1)[1])
        qid = str(item["id"])
        if qid in seen:  # distill would take the second for already done, results would pair them wrongly
            raise ValueError(f"{where}: id {item['id']!r} is used again (first at {seen[qid]}); ids must be unique")
        seen[qid] = where
    return [item for _, item in rows]


def distill(questions: list[dict], agent, out_path, ftp_llm=None, log=print,
            on_result: Callable | None = None) -> dict:
    """Run `agent` over questions, append kept trajectories to out_path. Returns counts."""
    out = Path(out_path)
    rejected = out.with_name(out.name + ".rejected.jsonl")
    _ready_to_append(out, rejected)  # now, not at the first append: that question's teacher calls would be lost
    note = log or (lambda message: print(message, file=sys.stderr))  # a repaired file is said even when log=None
    done = _done_ids(out, note) | _done_ids(rejected, note)
    counts = {"kept": 0, "rejected": 0, "skipped": 0}
    for item in questions:
        qid = str(item["id"])
        if qid in done:
            counts["skipped"] += 1
            continue
        prefix = _first_thought_if_it_fits(ftp_llm, item, log) if ftp_llm is not None else ""
        result = agent.run(item["question"], item.get("choices"), prefix=prefix)
        reason = rejection_reason(result, item)
        row = {"id": qid, "messages": result.messages, "question": item["question"], "answer": result.answer,
               "gold": item.get("correct") or item.get("answer"), "ftp": prefix, "stats": result.summary()}
        if reason is None and not _utf8_encodable(row):
            reason = ("the text holds a lone surrogate (a \\ud800-\\udfff escape in the teacher's reply): not "
                      "UTF-8, no trainable text")
        if reason is None:
            _append(out, row)
            counts["kept"] += 1
        else:
            row["rejected"] = reason
            _append(rejected, row)
            counts["rejected"] += 1
        done.add(qid)
        if on_result:
            on_result(item, result, reason)
        if log:
            log(f"{qid}: {'kept' if reason is None else 'rejected: ' + reason}")
    if log:  # (a rerun over a finished file prints only this line: every question is skipped)
        log(f"{out}: {counts['kept']} kept, {counts['rejected']} rejected, {counts['skipped']} already done "
            f"({len(questions)} questions)")
    return counts


def _first_thought_if_it_fits(llm, item: dict, log) -> str:
    """The FTP prefix, or none when the chain-of-thought prompt overflows the teacher's context: the agent then
    runs unprefixed (and ends the question itself if its own prompt overflows too, as it ends any question that
    outgrows the context); an error here would stop the run at this question on every resume."""
    try:
        return first_thought(llm, item["question"], item.get("choices"))
    except ContextOverflow as e:
        if log:
            log(f"{item['id']}: no first thought ({e}); the agent runs without it")
        return ""


def oracle_teacher(known: dict[str, dict]) -> ScriptedLLM:
    """A perfect teacher for synthetic domains. known: question text -> {"answer": ..., "query"?: ...}.

    Step 1 searches (the query defaults to the question) and prints the passages; step 2 answers with the known
    answer. Trajectories from it exercise the whole pipeline (search, sandbox, filters, training loader)."""
    def script(messages, n, prefix):
        question = next(m["content"] for m in messages if m["role"] == "user")
        q = question.split("\n\nOptions:")[0]
        facts = known.get(q)
        if messages[0]["role"] == "system" and messages[0]["content"] == prompts.COT_SYSTEM:
            answer = facts["answer"] if facts else "unknown"  # as its agent turns answer a question it was not given
            return [f"The manual should say this directly.\n\nAnswer: {answer}"] * n
        if facts is None:
            return ["Thought: I do not know this question.\nCode:\n```py\nfinal_answer('unknown')\n```"] * n
        steps = sum(m["role"] == "assistant" for m in messages)
        if steps == 0:
            query = facts.get("query", q)
            lead = " I will search the manual to check." if prefix else "Thought: I will search the manual."
            return [f"{lead}\nCode:\n```py\nprint(search({query!r}))\n```"] * n
        return [f"Thought: The passages answer it.\nCode:\n```py\nfinal_answer({facts['answer']!r})\n```"] * n
    return ScriptedLLM(script)
