"""The command-line round trip: `infer.py distill` against `infer.py serve` on 127.0.0.1, each its own process.

The server is SIGKILLed mid-run and restarted on the same port (the client rides it out on its retries), then the
distill process itself is SIGKILLed mid-run and started again (it resumes from its output file). Oracles: every
question appears exactly once in the output, in order, with the served oracle's answer, and the training loader
reads the file.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minagent.training.trajectories import read_trajectories

ROOT = Path(__file__).resolve().parents[1]
N = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _infer(*args, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "infer.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _start_server(questions: Path, port: int) -> subprocess.Popen:
    proc = _infer("serve", "--oracle", str(questions), "--port", str(port))
    line = proc.stdout.readline()  # printed once the socket listens
    assert "serving" in line, line + proc.stdout.read()
    return proc


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]


def _wait_for(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while len(_lines(path)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"distill exited early:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            raise AssertionError(f"{path}: fewer than {n} lines after {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def domain(tmp_path):
    corpus = tmp_path / "manuals"
    corpus.mkdir()
    for i in range(N):
        (corpus / f"task{i}.txt").write_text(f"Task {i}\n\nTo do task number {i}, run wrenctl job{i}.\n")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which command does task number {i}?",
                                             "answer": f"wrenctl job{i}"}) + "\n" for i in range(N)))
    index = tmp_path / "index"
    built = subprocess.run([sys.executable, str(ROOT / "infer.py"), "index", "--corpus", str(corpus),
                            "--out", str(index)], cwd=ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return questions, index


def test_distill_cli_against_serve_cli_survives_a_server_kill_and_its_own(tmp_path, domain):
    questions, index = domain
    port = _free_port()
    out = tmp_path / "traj.jsonl"
    server = _start_server(questions, port)
    distill_args = ("distill", "--teacher", f"http://127.0.0.1:{port}/v1", "--index", str(index),
                    "--questions", str(questions), "--out", str(out))
    client = None
    try:
        client = _infer(*distill_args)
        _wait_for(out, 3, client)
        server.send_signal(signal.SIGKILL)  # the teacher dies mid-run ...
        server.wait()
        time.sleep(0.3)
        server = _start_server(questions, port)  # ... and comes back within the client's first backoff (1 s)
        _wait_for(out, 12, client)
        client.send_signal(signal.SIGKILL)  # now the distill process itself dies mid-run
        client.wait()
        assert "retry 1/" in client.stdout.read()  # it saw the dead server and retried
        partial = len(_lines(out))
        assert 12 <= partial < N
        client = _infer(*distill_args)  # the same command again resumes
        log = client.communicate(timeout=300)[0]
        assert client.returncode == 0, log
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    rows = _lines(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N)]  # nothing lost, nothing twice, in order
    assert all(r["answer"] == f"wrenctl job{int(r['id'][1:])}" for r in rows)
    assert all(f"run wrenctl job{int(r['id'][1:])}" in r["messages"][3]["content"] for r in rows)  # searched
    assert not (tmp_path / "traj.jsonl.rejected.jsonl").exists()
    assert len(read_trajectories(out)) == N  # the training loader reads every line
    if os.name == "posix":
        assert out.read_text().endswith("\n")
