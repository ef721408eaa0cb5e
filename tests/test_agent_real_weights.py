"""Real weights end to end: SmolLM2-135M-Instruct runs the exam loop over 10 questions with a real BM25 index of
tests/data/manuals, in the sandbox, without crashing (quality is not asserted: a 135M model rarely answers).

Slow on a loaded CPU (~20 s idle, minutes under load): runs under CI=true or MINAGENT_SLOW_TESTS=1."""
import json
import os

import pytest

from minagent.agent import AgentConfig, MinagentLLM
from minagent.agent.commands import run_exam
from minagent.retrieval import build_index

pytestmark = pytest.mark.skipif(os.environ.get("CI") != "true" and os.environ.get("MINAGENT_SLOW_TESTS") != "1",
                                reason="slow real-weights agent run: set MINAGENT_SLOW_TESTS=1 (CI runs it)")


def test_smollm2_runs_an_exam_over_a_real_index(smollm2_dir, tmp_path):
    from pathlib import Path
    from minagent import load_model, load_tokenizer
    data = Path(__file__).parent / "data"
    build_index(data / "manuals", tmp_path / "index", progress=False)
    exam = tmp_path / "exam.jsonl"
    lines = [json.loads(x) for x in (data / "git_questions.jsonl").read_text().splitlines() if x.strip()][:10]
    exam.write_text("".join(json.dumps({"id": str(i), "question": q["question"], "answer": q["page"]}) + "\n"
                            for i, q in enumerate(lines)))
    llm = MinagentLLM(load_model(smollm2_dir), load_tokenizer(smollm2_dir), max_len=4096)
    out = tmp_path / "results.jsonl"
    summary = run_exam(llm, tmp_path / "index", exam, out, AgentConfig(max_steps=1, max_tokens=24), log=None)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["n"] == 10 and len(rows) == 10 and 0.0 <= summary["accuracy"] <= 1.0
    for row in rows:
        assert row["messages"][0]["role"] == "system" and row["messages"][2]["role"] == "assistant"
        assert row["stats"]["steps"] == 1
