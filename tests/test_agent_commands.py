"""The library functions behind `infer.py exam`: results JSONL and accuracy, checked by hand on a scripted
model over a real (tiny) BM25 index directory."""
import json

import pytest

from minagent.agent import AgentConfig, HTTPChatLLM, ScriptedLLM
from minagent.agent.commands import load_llm, run_exam
from minagent.retrieval import build_index
from cli_errors import infer_usage_error

CHOICES = {"A": "git log", "B": "git add", "C": "git stash", "D": "git blame"}


def test_exam_scores_letters_and_texts_and_writes_every_trajectory(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "git-stash.txt").write_text("git stash\n\nUse git stash to record the current state and go back "
                                          "to a clean working directory.\n")
    build_index(corpus, tmp_path / "index", progress=False)
    exam = tmp_path / "exam.jsonl"
    exam.write_text("\n".join(json.dumps(x) for x in [
        {"id": "1", "question": "Put work aside?", "choices": CHOICES, "correct": "C"},
        {"id": "2", "question": "Show history?", "choices": CHOICES, "correct": "A"},
        {"id": "3", "question": "Stage changes?", "answer": "git add", "aliases": ["add"]},
    ]) + "\n")
    llm = ScriptedLLM([
        "Thought: search\nCode:\n```py\nprint(search('clean working directory'))\n```",
        "Thought: it is stash\nCode:\n```py\nfinal_answer('git stash')\n```",   # option text -> C: correct
        "Thought: guess\nCode:\n```py\nfinal_answer('B')\n```",                 # wrong letter
        "Thought: known\nCode:\n```py\nfinal_answer('Add')\n```",               # alias, normalised: correct
    ])
    out = tmp_path / "results.jsonl"
    summary = run_exam(llm, tmp_path / "index", exam, out, AgentConfig(max_steps=3), log=None)
    assert summary == {"accuracy": 2 / 3, "n": 3, "correct": 2}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["letter"], r["correct"]) for r in rows] == [("1", "C", True), ("2", "B", False),
                                                                    ("3", None, True)]
    assert "Use git stash to record the current state" in rows[0]["messages"][3]["content"]
    assert not (tmp_path / "results.jsonl.tmp").exists()


def test_a_url_selects_the_http_backend():
    assert isinstance(load_llm("http://127.0.0.1:9/v1"), HTTPChatLLM)


def test_cli_refuses_what_would_run_wrong_or_silently_differently(capsys, tmp_path):
    """Values are checked, never clamped, and an agent is not run with a search tool it does not have."""
    exam = ["exam", "--model", "m", "--exam", "e.jsonl", "--out", "o.jsonl"]
    assert "--index INDEX is required (the agent's search tool)" in infer_usage_error(capsys, exam)
    assert "--index INDEX is required" in infer_usage_error(capsys, ["distill", "--teacher", "m", "--questions", "q",
                                                              "--out", "o"])
    assert "exam --mode rag: --index INDEX is required" in infer_usage_error(capsys, exam + ["--mode", "rag"])
    assert "argument --k: 0 is outside [1, 10]" in infer_usage_error(capsys, exam + ["--index", "i", "--k", "0"])
    assert "argument --max-steps: 0 is outside [1, inf]" in infer_usage_error(capsys, exam + ["--index", "i",
                                                                                       "--max-steps", "0"])
    assert "argument --question: empty text" in infer_usage_error(capsys, ["ask", "--model", "m", "--question", " "])
    assert "argument --port: 99999 is outside [0, 65535]" in infer_usage_error(capsys, ["serve", "--port", "99999"])
    assert "argument --top-p: 0 is outside (0, 1]" in infer_usage_error(
        capsys, ["chat", "--model", "m", "--prompt", "x", "--top-p", "0"])
    assert "argument --temperature: 'nan' is not a finite number" in infer_usage_error(
        capsys, ["chat", "--model", "m", "--prompt", "x", "--temperature", "nan"])


def test_an_agent_without_search_is_not_told_it_can_search():
    from minagent.agent import Agent
    script = "Thought: t\nCode:\n```py\nfinal_answer(6 * 7)\n```<end_code>"
    with_search = Agent(ScriptedLLM([script]), {"search": lambda q, k=3: q}).run("q")
    without = Agent(ScriptedLLM([script]), {}).run("q")
    assert "search(query" in with_search.messages[0]["content"]
    assert "search" not in without.messages[0]["content"] and without.answer == 42


def test_serving_on_a_taken_port_or_oracle_without_answers_says_why(tmp_path):
    import socket

    import pytest

    from minagent.agent.commands import serve
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "a?", "answer": "b"}\n')
    try:
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            serve(None, port=port, oracle=str(questions))
    finally:
        taken.close()
    questions.write_text('{"question": "a?"}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:1: no gold answer"):
        serve(None, port=0, oracle=str(questions))


def test_the_context_defaults_to_the_model_and_more_is_refused(tiny_dir):
    """--max-len: the model's max_position_embeddings (at most 4096) when not given; past it, RoPE would run on
    positions the model never saw, so a larger value is refused rather than silently extrapolated."""
    from minagent.config import ModelConfig
    limit = ModelConfig.from_hf(tiny_dir).max_position_embeddings
    assert load_llm(str(tiny_dir)).max_len == min(limit, 4096)
    assert load_llm(str(tiny_dir), max_len=16).max_len == 16
    with pytest.raises(ValueError, match=f"has {limit} positions"):
        load_llm(str(tiny_dir), max_len=limit + 1)


def test_an_output_path_that_is_a_directory_is_refused_before_the_exam_runs(capsys, tmp_path):
    """exam writes --out only after every question: a directory there used to end a finished run in a traceback;
    a directory given as --system-file ended in one too (IsADirectoryError is no FileNotFoundError)."""
    import subprocess
    import sys
    from pathlib import Path

    exam = tmp_path / "e.jsonl"
    exam.write_text('{"id": "q1", "question": "a?", "answer": "b"}\n')
    for command in (["exam", "--model", "m", "--exam", str(exam)], ["distill", "--teacher", "m", "--questions",
                                                                    str(exam)]):
        err = infer_usage_error(capsys, command + ["--out", str(tmp_path), "--no-search"])
        assert f"--out {tmp_path}: a directory is there" in err
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "infer.py"), "exam", "--model", "m", "--exam", str(exam),
                           "--out", str(tmp_path / "o.jsonl"), "--no-search", "--system-file", str(tmp_path)],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: [Errno 21] Is a directory: '{tmp_path}'"]


def test_agent_only_flags_in_another_mode_and_two_backends_for_serve_are_refused(capsys):
    """--sag and --extractor change only the agent: with --mode closed-book|rag|cot they were accepted and the
    exam ran without them; serve --model M --oracle Q served the oracle under M's name."""
    exam = ["exam", "--model", "m", "--exam", "e.jsonl", "--out", "o.jsonl", "--index", "i"]
    assert "exam --mode rag: only --mode agent uses --sag" in infer_usage_error(
        capsys, exam + ["--mode", "rag", "--sag", "4"])
    assert "exam --mode cot: only --mode agent uses --sag, --extractor" in infer_usage_error(
        capsys, exam + ["--mode", "cot", "--sag", "2", "--extractor"])
    assert "serve: --model and --oracle are alternatives" in infer_usage_error(
        capsys, ["serve", "--model", "m", "--oracle", "q.jsonl"])
