"""Agent benchmark: steps/s with and without KV-cache reuse across steps, with and without prompt-lookup
drafts, and the cost of SAG per step.

    python bench/agent.py [--model models/SmolLM2-135M-Instruct] [--questions 3] [--max-steps 5] [--max-tokens 64]
                          [--sag 4] [--only reuse|drafts|sag] [--workload free|search|manual|every|both|all]
                          [--drafts 4] [--keep-sessions]

The agent answers git questions (tests/data/git_questions.jsonl) over a BM25 index of tests/data/manuals with a real
model, greedy, up to 5 steps (the library's and the seeds' setting) and a forced answer. Workloads: "free" lets the
model write every step itself (the base SmolLM2 seldom gets a search through, so its observations are short error
messages); "search" forces the first step to open with a search call through a first-thought prefix (FTP, as
`infer.py distill` uses it: the model writes the query and the rest), so the conversation carries retrieved passages
from step 2 on, as a working RAG agent's does. "manual" is "search" over a real manual with the library's defaults:
Debian's git-doc (/usr/share/doc/git-doc, `apt-get install git-doc`) chunked at 1200 characters and `search`
returning 3 passages of up to 1200 characters, so each search adds ~900 tokens, as the agent's default tool does.
"every" is "manual" with every step (not just the first) forced to open with a search call, the way the seeds'
retrieval agents call the retriever at each step: the conversation grows by ~900 tokens a step, which is where
re-prefilling it costs most. With and without reuse the runs produce the same tokens (tests/test_agent_llm.py checks
that), so the difference is pure prefill work: without reuse every step re-prefills the whole conversation (system
prompt, question, earlier steps, passages); with it a step prefills only what is new. Each question starts with an
empty cache unless --keep-sessions, which keeps it as `infer.py exam` does (one model, one cache, for the whole
exam), so a question's system prompt is already cached from the question before. SAG samples N candidates per
step (temperature 0.4, top_p 0.8) and runs each in its own sandbox fork; the tool cache serves repeated searches
once.
"drafts" compares greedy decoding one token per forward with prompt-lookup drafts (minagent/prompt_lookup.py),
both with KV reuse: the answers should be the same, the decode time shrinks by the tokens accepted per forward.
The reuse comparison runs both sides with --drafts (the library's default, 4).
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kernels import matvec  # noqa: E402
from minagent import load_model, load_tokenizer  # noqa: E402
from minagent.agent import Agent, AgentConfig, MinagentLLM, make_search  # noqa: E402
from minagent.retrieval import Retriever, chunk_corpus  # noqa: E402


DRAFTS = inspect.signature(MinagentLLM).parameters["draft_tokens"].default  # the library's default

SEARCH_PREFIX = 'Thought: I will search the manuals for this.\nCode:\n```py\nprint(search("'


class SearchEveryStep:
    """An LLM wrapper that forces SEARCH_PREFIX on every step after an observation, not just the first (the
    agent's prefix= is a first-thought prefix only); the forced final answer is left alone. The text returned
    includes the prefix, so the agent parses and stores the whole step."""

    def __init__(self, llm):
        self.llm = llm

    def __getattr__(self, name):  # sessions and the work counters are the wrapped model's
        return getattr(self.llm, name)

    def complete(self, messages, prefix="", **kw):
        if prefix or messages[-1]["role"] != "tool":
            return self.llm.complete(messages, prefix=prefix, **kw)
        return [SEARCH_PREFIX + t for t in self.llm.complete(messages, prefix=SEARCH_PREFIX, **kw)]


KEEP_SESSIONS = False  # --keep-sessions: the cache outlives a question, as in `infer.py exam`


def run(llm, search, questions, cfg, prefix=""):
    steps, t0, tool_calls, tool_runs = 0, time.perf_counter(), 0, 0
    answers = []
    for q in questions:
        if not KEEP_SESSIONS:
            llm.sessions.clear()  # each question starts cold: reuse only helps within a conversation
        r = Agent(llm, {"search": search}, cfg).run(q, prefix=prefix)
        steps += r.steps + (1 if r.forced_answer else 0)
        tool_calls, tool_runs = tool_calls + r.tool_calls, tool_runs + r.tool_calls_run
        answers.append(r.answer)
    return dict(steps=steps, seconds=time.perf_counter() - t0, tool_calls=tool_calls, tool_calls_run=tool_runs,
                answers=answers)


def interleaved(llms, search, questions, cfg, rounds, prefix=""):
    """Each LLM answers the same questions, interleaved question by question (ABBA...) so load changes on a
    shared machine hit all alike. Prefill and decode are timed separately."""
    totals = {k: dict(steps=0, seconds=0.0, answers=[]) for k in llms}
    order = list(llms)
    for _ in range(rounds):
        for q in questions:
            for name in order:
                r = run(llms[name], search, [q], cfg, prefix)
                totals[name]["steps"] += r["steps"]
                totals[name]["seconds"] += r["seconds"]
                totals[name]["answers"] += r["answers"]
            order.reverse()
    for name, llm in llms.items():
        totals[name].update(prefilled=llm.prefilled_tokens, prefill_s=llm.prefill_seconds,
                            decoded=llm.decoded_tokens, decode_s=llm.decode_seconds, forwards=llm.decode_forwards,
                            checked=llm.draft_tokens_checked, accepted=llm.draft_tokens_accepted,
                            steps_per_s=totals[name]["steps"] / totals[name]["seconds"])
    return totals


def reuse_ab(model, tok, search, questions, cfg, rounds, prefix="", drafts=DRAFTS, wrap=lambda llm: llm):
    """No reuse vs reuse: reuse changes only the prefill."""
    llms = {"no reuse": MinagentLLM(model, tok, max_len=8192, reuse_cache=False, draft_tokens=drafts),
            "KV reuse": MinagentLLM(model, tok, max_len=8192, reuse_cache=True, draft_tokens=drafts)}
    return interleaved({k: wrap(v) for k, v in llms.items()}, search, questions, cfg, rounds, prefix)


def drafts_ab(model, tok, search, questions, cfg, rounds, prefix="", drafts=DRAFTS, wrap=lambda llm: llm):
    """One token per forward vs prompt-lookup drafts, both with KV reuse: drafts change only the decode."""
    llms = {"one token per forward": MinagentLLM(model, tok, max_len=8192, draft_tokens=0),
            f"drafts of {drafts}": MinagentLLM(model, tok, max_len=8192, draft_tokens=drafts)}
    return interleaved({k: wrap(v) for k, v in llms.items()}, search, questions, cfg, rounds, prefix)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/SmolLM2-135M-Instruct"))
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=AgentConfig().max_steps,
                    help="steps before the forced answer (default: the library's, which is the seeds' 5)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--sag", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("reuse", "drafts", "sag"), help="run one part of the benchmark")
    ap.add_argument("--drafts", type=int, default=DRAFTS, help="prompt-lookup draft tokens per forward (0: off)")
    ap.add_argument("--rounds", type=int, default=1, help="repetitions of the reuse A/B comparison")
    ap.add_argument("--workload", choices=("free", "search", "manual", "every", "both", "all"), default="both",
                    help="free: the model writes every step; search: the first step is forced to search (FTP); "
                         "manual: search over git-doc with the default passage sizes; every: manual with every "
                         "step forced to search; both: free and search; all: the four")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the model's weights (bfloat16: pair with MINAGENT_MATVEC=onednn for its fast decoding)")
    ap.add_argument("--keep-sessions", action="store_true",
                    help="keep the KV cache from one question to the next, as `infer.py exam` does (the next "
                         "question's system prompt is then already cached); default: every question starts cold")
    args = ap.parse_args()
    global KEEP_SESSIONS
    KEEP_SESSIONS = args.keep_sessions
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype=args.dtype), load_tokenizer(args.model)
    passages, _ = chunk_corpus(ROOT / "tests/data/manuals", progress=False)
    search = make_search(Retriever.from_passages(passages), max_chars=600)
    questions = [json.loads(x)["question"] for x in (ROOT / "tests/data/git_questions.jsonl").read_text().splitlines()
                 if x.strip()][:args.questions]
    base = AgentConfig(max_steps=args.max_steps, max_tokens=args.max_tokens, timeout=10)
    print(f"model {args.model} ({args.dtype}, matvec policy {matvec.POLICY.name}), {len(questions)} questions, "
          f"max_steps {args.max_steps}, "
          f"max_tokens {args.max_tokens}, {args.threads} threads, {len(passages)} passages, "
          f"{'sessions kept across questions' if KEEP_SESSIONS else 'each question starts cold'}")
    if args.only != "sag":
        workloads = {"both": ("free", "search"), "all": ("free", "search", "manual", "every")}.get(
            args.workload, (args.workload,))
        for workload in workloads:
            print(f"\n### workload: {workload}")
            tool = manual_search() if workload in ("manual", "every") else search
            if tool is None:
                print(f"skipped: {GIT_DOC} is missing (apt-get install git-doc)")
                continue
            prefix = "" if workload == "free" else SEARCH_PREFIX
            wrap = SearchEveryStep if workload == "every" else (lambda llm: llm)
            if args.only in (None, "reuse"):
                report(reuse_ab(model, tok, tool, questions, base, args.rounds, prefix, args.drafts, wrap),
                       "KV-cache reuse")
            if args.only in (None, "drafts") and args.drafts > 0:
                report(drafts_ab(model, tok, tool, questions, base, args.rounds, prefix, args.drafts, wrap),
                       "prompt-lookup drafts")
    if args.sag > 1 and args.only in (None, "sag"):
        # N=1 and N=args.sag on the same workload (the free one), each run here: the baseline is never a reading
        # of another workload or another run's order
        sag_cfg = AgentConfig(**{**base.__dict__, "sag": args.sag, "seed": 0})
        one = run(MinagentLLM(model, tok, max_len=8192, draft_tokens=args.drafts), search, questions, base)
        r = run(MinagentLLM(model, tok, max_len=8192, draft_tokens=args.drafts), search, questions, sag_cfg)
        print("\n| SAG | steps | s/step | tool calls asked | tool calls run |\n| --- | --- | --- | --- | --- |")
        print(f"| off (N=1) | {one['steps']} | {one['seconds'] / one['steps']:.2f} | {one['tool_calls']} | "
              f"{one['tool_calls_run']} |")
        print(f"| N={args.sag} | {r['steps']} | {r['seconds'] / r['steps']:.2f} | {r['tool_calls']} | "
              f"{r['tool_calls_run']} |")


GIT_DOC = Path("/usr/share/doc/git-doc")


def manual_search():
    """search() over git-doc with the library's default chunking and passage length (None without git-doc)."""
    if not GIT_DOC.is_dir():
        return None
    passages, _ = chunk_corpus(GIT_DOC, progress=False)
    print(f"git-doc: {len(passages)} passages")
    return make_search(Retriever.from_passages(passages))


def report(results, what):
    """The table of both sides, and the speed-up of the second over the first."""
    (a_name, a), (b_name, b) = results.items()
    print("\n| mode | steps | seconds | steps/s | prefilled tokens | prefill s | decoded tokens | decode forwards "
          "| decode s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['steps']} | {r['seconds']:.1f} | {r['steps_per_s']:.3f} | {r['prefilled']} | "
              f"{r['prefill_s']:.1f} | {r['decoded']} | {r['forwards']} | {r['decode_s']:.1f} |")
    print(f"prefill time per step: {a['prefill_s'] / a['steps']:.2f} s -> {b['prefill_s'] / b['steps']:.2f} s "
          f"({a['prefill_s'] / max(b['prefill_s'], 1e-9):.1f}x less); decode time per step: "
          f"{a['decode_s'] / a['steps']:.2f} s -> {b['decode_s'] / b['steps']:.2f} s "
          f"({a['decode_s'] / max(b['decode_s'], 1e-9):.1f}x less); tokens per decode forward: "
          f"{a['decoded'] / max(a['forwards'], 1):.2f} -> {b['decoded'] / max(b['forwards'], 1):.2f}")
    for name, r in results.items():
        if r["checked"]:
            print(f"{name}: draft tokens kept {r['accepted']} of {r['checked']} "
                  f"({100 * r['accepted'] / r['checked']:.0f}%)")
    print(f"\n{what} speed-up ({b_name} over {a_name}): {b['steps_per_s'] / a['steps_per_s']:.2f}x "
          f"(same answers: {a['answers'] == b['answers']})")


if __name__ == "__main__":
    main()
