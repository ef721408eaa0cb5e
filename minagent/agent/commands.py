"""What `infer.py ask | distill | serve` call: load a model, an index and the agent, then run (`infer.py exam`
runs minagent/microdomain/evaluate.py's exam_command, every mode through one harness; run_exam here is the
agent-only library function).

Each function takes plain values (paths, numbers) so the CLI only parses arguments and calls one of them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .executor import Agent, AgentConfig
from .extractor import ContextExtractor
from .llm import HTTPChatLLM, MinagentLLM
from .multiple_choice import accuracy, is_correct
from .teacher import distill, read_questions
from .tools import make_search


DEFAULT_MAX_LEN = 4096  # context (and KV cache) of a local model unless asked: its own, at most this


def load_llm(model: str, dtype: str = "float32", device: str = "cpu", max_len: int | None = None,
             draft_tokens: int | None = None, flag: str = "--model"):
    """A model directory -> MinagentLLM (draft_tokens: prompt-lookup drafts per greedy forward, 0 = off, None =
    MinagentLLM's default; observations rendered with the role the model's SFT export recorded, else as user
    turns); an http(s):// URL (…/v1) -> HTTPChatLLM (the server decides its context: max_len is not used).
    max_len: the context in tokens, prompt + reply, what the KV cache is allocated for (None: the model's
    max_position_embeddings, at most DEFAULT_MAX_LEN); more than the model's positions is refused.
    flag: the option the path came from, for the error when it is no checkpoint (a training run's own directory
    is named with the path of the model it exported)."""
    if model.startswith(("http://", "https://")):
        return HTTPChatLLM(model, log=print)
    from ..cli_paths import model_dir_problem
    problem = model_dir_problem(flag, model)
    if problem:
        raise ValueError(problem)
    from .. import load_model, load_tokenizer
    from ..chat import agent_settings
    drafts = {} if draft_tokens is None else {"draft_tokens": draft_tokens}
    net = load_model(model, dtype=dtype, device=device)
    limit = net.config.max_position_embeddings
    if max_len is not None and max_len > limit:
        raise ValueError(f"--max-len {max_len}: {model} has {limit} positions (max_position_embeddings); "
                         "RoPE past them is not what it was trained on")
    return MinagentLLM(net, load_tokenizer(model), max_len=max_len or min(limit, DEFAULT_MAX_LEN),
                       **drafts, **agent_settings(model))  # observations rendered as the model was trained


def load_tools(index_dir: str | None, mode: str = "bm25", k: int = 3) -> dict:
    """{"search": ...} over the index (k: passages a search returns unless the code asks otherwise); {} without."""
    if index_dir is None:
        return {}
    from ..retrieval import load_index
    return {"search": make_search(load_index(index_dir), mode=mode, default_k=k)}


def build_agent(llm, index_dir=None, config: AgentConfig | None = None, extractor: bool = False, on_event=None,
                search_mode: str = "bm25", k: int = 3, system: str | None = None) -> Agent:
    return Agent(llm, load_tools(index_dir, search_mode, k), config or AgentConfig(),
                 extractor=ContextExtractor(llm) if extractor else None, on_event=on_event, system=system)


def print_event(kind: str, text: str):
    head = {"step": "--- step ---", "observation": "--- observation ---",
            "forced": "--- steps used up: asked for the final answer, without tools ---",
            "final": "=== final answer ==="}[kind]
    print(f"{head}\n{text}", flush=True)


def ask(model: str, index_dir: str | None, question: str, config: AgentConfig | None = None,
        extractor: bool = False, choices: dict | None = None, draft_tokens: int | None = None, k: int = 3,
        system_file: str | None = None, max_len: int | None = None):
    """One question; prints each step, observation and the final answer as they come. Returns the RunResult.
    k and system_file: a student's search k and system prompt (what it was trained with; see `exam`).
    max_len: the model's context in tokens (prompt + reply; see load_llm)."""
    system = Path(system_file).read_text(encoding="utf-8").strip() if system_file else None
    agent = build_agent(load_llm(model, draft_tokens=draft_tokens, max_len=max_len), index_dir, config, extractor,
                        on_event=print_event, k=k, system=system)
    return agent.run(question, choices)


def run_exam(llm, index_dir, exam_path, out_path, config: AgentConfig | None = None, extractor: bool = False,
             log=print) -> dict:
    """Every exam question through the agent; results JSONL (one line per question, with its trajectory) is
    written to a temp name and renamed. Returns {"accuracy", "n", "correct"}."""
    items = read_questions(exam_path)  # a bad exam file fails here, before anything is written
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)  # as the other exam path (microdomain write_jsonl) does
    agent = build_agent(llm, index_dir, config, extractor)
    rows = []
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            r = agent.run(item["question"], item.get("choices"))
            row = {"id": item["id"], "question": item["question"], "answer": r.answer, "letter": r.letter,
                   "gold": item.get("correct") or item.get("answer"), "correct": is_correct(r.answer, item),
                   "stats": r.summary(), "messages": r.messages}
            rows.append(row)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if log:
                log(f"{item['id']}: {'correct' if row['correct'] else 'wrong'} ({r.answer!r}, {r.steps} steps)")
    os.replace(tmp, out)
    acc = accuracy(rows)
    if log:
        log(f"accuracy {acc:.3f} ({sum(r['correct'] for r in rows)}/{len(rows)})")
    return {"accuracy": acc, "n": len(rows), "correct": sum(r["correct"] for r in rows)}


def distill_questions(teacher: str, index_dir, questions_path, out_path, ftp: bool = True,
                      config: AgentConfig | None = None, log=print, draft_tokens: int | None = None,
                      max_len: int | None = None, split: str | None = None) -> dict:
    """teacher: a model directory or an OpenAI-compatible base URL (http://host:port/v1). split: only the
    questions whose "split" is this (distilling an exam's held-out questions would put their answers in the
    student's training data), as `infer.py exam --split` selects the ones it asks."""
    questions = read_questions(questions_path)  # a bad file fails here, before a model is loaded
    if split is not None:
        questions = [q for q in questions if q.get("split") == split]
        if not questions:
            raise ValueError(f"{questions_path}: no questions with split {split!r}")
    llm = load_llm(teacher, draft_tokens=draft_tokens, max_len=max_len, flag="--teacher")
    agent = build_agent(llm, index_dir, config)
    return distill(questions, agent, out_path, ftp_llm=llm if ftp else None, log=log)


def serve(model: str | None, host: str = "127.0.0.1", port: int = 8000, oracle: str | None = None,
          draft_tokens: int | None = None, max_len: int | None = None):
    """Serve a model directory, or with oracle=QUESTIONS.jsonl the oracle teacher for those questions (a
    perfect teacher with known answers: how the CLI's distill/serve round trip is tested without a big model)."""
    from .server import make_server
    from .teacher import oracle_teacher
    if oracle:  # (read_questions refuses a line without a gold answer, naming it)
        llm = oracle_teacher({q["question"]: {"answer": q.get("correct") or q["answer"]}
                              for q in read_questions(oracle)})
    elif model:
        llm = load_llm(model, draft_tokens=draft_tokens, max_len=max_len)
    else:
        raise ValueError("serve needs a model directory or an oracle questions file")
    try:
        server = make_server(llm, host, port, model_name=Path(model).name if model else "oracle")
    except OSError as e:  # the port is taken, the address is not this machine's, ...
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"serving {model or 'oracle ' + str(oracle)} at http://{host}:{server.server_address[1]}/v1/chat/completions", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
