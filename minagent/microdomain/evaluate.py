"""The evaluation harness: held-out exam accuracy of one system, and the table of all of them.

A system is a model plus a way of asking it (formats.py): closed-book, rag, cot or agent (optionally with SAG
or the context-answer extractor). Every question's reply, parsed answer and correctness go to a results JSONL
(written to a temporary name and renamed) so a table can be traced back to what the model actually wrote.
Scores are split by hops (single-fact / two-hop) and by kind (multiple-choice / short-answer) because that is
where the systems differ: one retrieval with the question finds the first page of a two-hop question, never
the second.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..agent.executor import Agent, AgentConfig
from ..agent.extractor import ContextExtractor
from ..agent.llm import ContextOverflow
from ..agent.multiple_choice import is_correct, to_letter
from ..agent.tools import make_search
from . import formats
from .exam import write_jsonl
from .partial_results import PartialResults, files_fingerprint


@dataclass
class System:
    name: str
    model: str                  # which trained model (a key of the pipeline's model table)
    mode: str                   # closed-book | rag | cot | agent
    sag: int = 0
    extractor: bool = False


def _direct(llm, messages, max_tokens: int) -> str:
    return llm.complete(messages, max_tokens=max_tokens, temperature=0.0, session="exam")[0]


def answer_one(system: System, llm, item: dict, search=None, agent: Agent | None = None,
               max_tokens: int = 48) -> dict:
    """Ask one exam item; returns {"reply", "answer", "correct", ...}."""
    if system.mode == "agent":
        r = agent.run(item["question"], item.get("choices"))
        return {"answer": r.answer, "letter": r.letter, "correct": is_correct(r.answer, item), "stats": r.summary(),
                "messages": r.messages}
    if system.mode == "closed-book":
        messages = formats.closed_book_messages(item)
    elif system.mode == "rag":
        messages = formats.rag_messages(item, search(item["question"]))
    elif system.mode == "cot":
        messages = formats.cot_messages(item)
        max_tokens = max_tokens * 3
    else:
        raise ValueError(f"unknown evaluation mode {system.mode!r}; expected closed-book, rag, cot or agent")
    try:
        reply = _direct(llm, messages, max_tokens)
    except ContextOverflow as e:  # this question only, as the agent ends it: the exam goes on
        return {"answer": None, "letter": None, "correct": False, "reply": "", "error": str(e), "messages": messages}
    answer = formats.parse_reply(reply, cot=system.mode == "cot")
    letter = to_letter(answer, item["choices"]) if item.get("choices") else None
    return {"answer": answer, "letter": letter, "correct": is_correct(answer, item), "reply": reply,
            "messages": messages}


def evaluate_system(system: System, llm, items: list[dict], out_path, search=None, agent_system=None,
                    agent_config: AgentConfig | None = None, progress: bool = True,
                    extractor_min_chars: int | None = 0, partial: PartialResults | None = None) -> dict:
    """Run one system over the items; write its results JSONL; return its scores. extractor_min_chars: search
    results shorter than this are not condensed (the recipe's students were trained condensing every one: 0;
    None: ContextExtractor's default, what `infer.py exam --extractor` uses). partial: answers are kept there as
    they come and an interrupted run's are reused (partial_results.py)."""
    for item in items:  # refused before hours of answers, not when they are scored
        _hops({"id": item.get("id"), "hops": item.get("hops", 1)})
    agent = None
    if system.mode == "agent":
        threshold = {} if extractor_min_chars is None else {"min_chars": extractor_min_chars}
        extractor = ContextExtractor(llm, **threshold) if system.extractor else None
        cfg = agent_config or AgentConfig()
        cfg = AgentConfig(**{**cfg.__dict__, "sag": system.sag})
        agent = Agent(llm, {"search": search} if search else {}, cfg, extractor=extractor, system=agent_system)
    rows = []
    if partial is not None:
        partial.open()
    try:
        for item in tqdm(items, desc=system.name, unit="q", disable=not progress, leave=False):
            row = partial.answered(item) if partial is not None else None
            if row is None:
                r = answer_one(system, llm, item, search, agent)
                row = {"id": item["id"], "question": item["question"], "gold": formats.gold_reply(item),
                       "hops": item.get("hops", 1), "choices": bool(item.get("choices")), **r}
                if partial is not None:
                    partial.add(item, row)
            rows.append(row)
        write_jsonl(rows, out_path)
    finally:
        if partial is not None:
            partial.close()
    if partial is not None:
        partial.finish()
    return scores(rows)


def _hops(row: dict) -> int:
    """A row's hop count as a number: an exam written by hand may give "hops": "2" (a JSON string), and such a
    row, compared with the int 2, fell into neither hop column while still counting in the accuracy."""
    try:
        return int(row["hops"])
    except (TypeError, ValueError):
        raise ValueError(f"question {row.get('id')!r}: \"hops\" is {row['hops']!r}; expected a whole number "
                         "(1 for a single-fact question, 2 or more for a multi-hop one)") from None


def scores(rows: list[dict]) -> dict:
    """Accuracy overall and per column. The "2-hop" column holds every multi-hop question (hops >= 2; the
    recipe's exams have only 1 and 2), so each row counts in exactly one hop column and one kind column."""
    def acc(sel):
        sel = list(sel)
        return (sum(r["correct"] for r in sel) / len(sel)) if sel else None
    return {"accuracy": acc(rows), "n": len(rows),
            "single_hop": acc(r for r in rows if _hops(r) <= 1), "two_hop": acc(r for r in rows if _hops(r) >= 2),
            "multiple_choice": acc(r for r in rows if r["choices"]),
            "short_answer": acc(r for r in rows if not r["choices"])}


COLUMNS = [("accuracy", "accuracy"), ("single_hop", "1-hop"), ("two_hop", "2-hop"),
           ("multiple_choice", "choice"), ("short_answer", "short")]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:5.1f}"


def format_table(results: list[tuple[str, dict]], title: str = "") -> str:
    """A Markdown table, accuracy in percent (printed and pasted into bench/RESULTS.md as is)."""
    width = max(len(name) for name, _ in results)
    head = f"| {'system'.ljust(width)} | " + " | ".join(label.rjust(8) for _, label in COLUMNS) + " |    n |"
    rule = "|" + "-" * (width + 2) + "|" + "|".join("-" * 9 + ":" for _ in COLUMNS) + "|-----:|"
    lines = ([title, ""] if title else []) + [head, rule]
    for name, s in results:
        lines.append(f"| {name.ljust(width)} | " + " | ".join(_pct(s[k]).rjust(8) for k, _ in COLUMNS)
                     + f" | {s['n']:4d} |")
    return "\n".join(lines)


def write_csv(results: list[tuple[str, dict]], path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["system"] + [k for k, _ in COLUMNS] + ["n"])
        for name, s in results:
            w.writerow([name] + ["" if s[k] is None else f"{s[k]:.4f}" for k, _ in COLUMNS] + [s["n"]])
    os.replace(tmp, path)
    return path


def _resumable(out_path, settings: dict, legacy: dict) -> tuple[PartialResults, int]:
    """The partial results for `settings` and the number of answers found. A file written under the older,
    fuller key of the same arguments (`legacy`: every setting, read by the mode or not) gives its answers too
    (the file is rewritten with the new key when the run starts); any other mismatch is refused, as
    PartialResults refuses it."""
    partial = PartialResults(out_path, settings)
    try:
        return partial, partial.load()
    except ValueError as refused:
        older = PartialResults(out_path, legacy)
        try:
            found = older.load()
        except ValueError:
            raise refused from None
        partial.done = older.done
        return partial, found


def model_label(model) -> str:
    """The table's name for a model: the last part of its path that is not the run layout's own (runs/my-sft/
    final/model -> my-sft, runs/tiny/sft/run/final/model -> sft); a URL's last part as written."""
    parts = [p for p in Path(str(model)).parts if p not in ("model", "final", "run", "/")]
    return parts[-1] if parts else str(model)


def exam_command(model: str, exam_path, out_path, mode: str = "agent", index_dir=None, k: int = 3,
                 system_file=None, agent_config: AgentConfig | None = None, extractor: bool = False,
                 split: str | None = None, log=print, draft_tokens: int | None = None,
                 max_len: int | None = None) -> dict:
    """`infer.py exam --mode ...`: one model, one way of asking, every question of an exam JSONL (optionally
    only one split); prints and returns the scores. system_file: the agent's system prompt (the multiple-choice
    line is appended for multiple-choice questions), e.g. the one the recipe trained with."""
    from ..agent.commands import load_llm
    from ..agent.teacher import read_questions
    every = read_questions(exam_path)
    items = [i for i in every if split is None or i.get("split") == split]
    if not items:
        splits = sorted({str(i["split"]) for i in every if i.get("split") is not None})
        raise ValueError(f"{exam_path}: no questions" + (f" with split {split!r} (the file's splits: "
                                                          f"{', '.join(splits) or 'none'})" if split else ""))
    search = None
    if index_dir is not None:
        from ..retrieval import load_index
        search = make_search(load_index(index_dir), default_k=k)
    elif mode == "rag":
        raise ValueError("--mode rag needs --index")
    agent_system = None
    if system_file is not None:
        text = Path(system_file).read_text(encoding="utf-8").strip()
        agent_system = lambda mc: text + (formats.MULTIPLE_CHOICE_LINE if mc else "")  # noqa: E731
    system = System(f"{model_label(model)} {mode}", "model", mode, sag=(agent_config.sag if agent_config else 0),
                    extractor=extractor)
    # the settings that change this mode's answers, and only those: a closed-book run resumed with another --k
    # (which it never reads) was refused
    searches, agent = mode in ("rag", "agent"), mode == "agent"
    index_used = searches and index_dir is not None
    settings = {"model": str(Path(str(model)).resolve()) if Path(str(model)).exists() else str(model), "mode": mode,
                "index": str(Path(index_dir).resolve()) if index_used else None, "k": k if searches else None,
                "system": text if agent and system_file is not None else None,
                "extractor": extractor if agent else None,
                "agent": (agent_config or AgentConfig()).__dict__ if agent else None, "max_len": max_len,
                "model files": files_fingerprint(model),
                "index files": files_fingerprint(index_dir) if index_used else None}
    # the key every mode wrote before it held only what the mode reads: a run interrupted then still resumes
    legacy = {**settings, "index": None if index_dir is None else str(Path(index_dir).resolve()), "k": k,
              "system": None if system_file is None else text, "extractor": extractor,
              "agent": (agent_config or AgentConfig()).__dict__,
              "index files": (settings["index files"] if index_used
                              else None if index_dir is None else files_fingerprint(index_dir))}
    partial, found = _resumable(out_path, settings, legacy)
    if found and log:
        log(f"resuming from {partial.path}: {len(partial.done)} questions already answered")
    llm = load_llm(str(model), draft_tokens=draft_tokens, max_len=max_len)
    result = evaluate_system(system, llm, items, out_path, search, agent_system, agent_config,
                             extractor_min_chars=None, partial=partial)
    if log:
        log(format_table([(system.name, result)]))
    return result

