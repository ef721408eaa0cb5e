"""Self-consistent action generation (SAG): sample N candidate steps, keep the one most candidates agree on.

Candidates that fail to parse or whose code raises are dropped; the rest are grouped by what executing them
produced (printed output, trailing value, final answer) and one step of the largest group wins (ties: the
group whose first member was sampled first). On a multiple-choice question final answers are grouped by the
letter they mean, so final_answer("B") and final_answer("(B) 30 s") vote together. Unlike the reference, which runs every candidate on the shared
live state and then re-executes the winner:
  - each candidate runs in its own fork of the sandbox state and its own copy of the working directory, so
    candidates cannot see each other's variables or files;
  - identical tool calls (the same search from several candidates) are served once, from the ToolBox cache;
  - the winner's process becomes the state holder: it is never executed twice;
  - with a minagent model the N candidates are decoded together, as one batch over the cached conversation
    (`MinagentLLM.complete(n=N)`): a decode step reads the weights once for all N.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .multiple_choice import to_letter
from .parsing import STOP_STRINGS, Step, parse_step
from .sandbox import ExecResult, Sandbox


@dataclass
class SAGStats:
    sampled: int = 0
    parsed: int = 0
    executed_ok: int = 0
    group_sizes: list = field(default_factory=list)


def outcome_key(r: ExecResult, choices: dict | None = None):
    if r.called_final:
        letter = to_letter(r.final, choices) if choices else None
        return ("final", letter) if letter else ("final", str(r.final).strip())
    return ("output", r.output.strip(), (r.value or "").strip())


def choose_step(llm, messages, box: Sandbox, n: int = 8, temperature: float = 0.4, top_p: float = 0.8,
                max_tokens: int = 512, prefix: str = "", seed: int | None = None, choices: dict | None = None
                ) -> tuple[Step, ExecResult | None, SAGStats]:
    """(the chosen step, its execution result — already committed to the sandbox —, stats).
    If no candidate parses, the first candidate's parse failure is returned with result None.
    choices: the question's options, when it has them (final answers then vote by letter)."""
    texts = llm.complete(messages, stop=STOP_STRINGS, n=n, temperature=temperature, top_p=top_p,
                         max_tokens=max_tokens, seed=seed, prefix=prefix)
    stats = SAGStats(sampled=len(texts))
    steps = [parse_step(prefix + t) for t in texts]
    runs = []
    for step in steps:
        if step.code is not None:
            runs.append((step, box.run_candidate(step.code)))
    stats.parsed = len(runs)
    ok = [(s, r) for s, r in runs if r.error is None]
    stats.executed_ok = len(ok)
    if ok:
        groups: dict = {}
        for s, r in ok:
            groups.setdefault(outcome_key(r, choices), []).append((s, r))
        stats.group_sizes = sorted((len(g) for g in groups.values()), reverse=True)
        best = max(groups.values(), key=len)  # max() keeps the first of equal sizes: dicts keep insertion order
        step, result = best[0]
        box.commit(result.cid, result)
        return step, result, stats
    if runs:  # every candidate failed: show the model the first failure, with its partial effects, to recover
        step, result = runs[0]
        if result.cid is not None:
            box.commit(result.cid, result)
        else:
            box.discard()
        return step, result, stats
    return steps[0], None, stats
