"""The sandbox's limits, each checked by what the code can and cannot do (the oracle is the OS itself: a local
TCP server we start, files on disk, elapsed time)."""
import os
import socket
import threading
import time

import pytest

from minagent.agent.sandbox import Sandbox, SandboxError


@pytest.fixture(scope="module")
def box():
    b = Sandbox({"search": lambda q, k=3: f"{k} passages about {q}"}, timeout=1.5, memory_mb=256, max_output=200)
    yield b
    b.close()


def test_state_persists_and_tools_work_from_inside(box):
    r = box.run("x = 20\nprint('hi')\nx + 1")
    assert (r.output, r.value, r.error) == ("hi\n", "21", None)
    r = box.run("print(search('git log', k=2))\nfinal_answer(x * 2)")
    assert r.output == "2 passages about git log\n" and r.called_final and r.final == 40
    assert box.toolbox.real_calls == 1


def test_infinite_loop_is_killed_within_its_limit_and_state_survives(box):
    box.run("y = 'kept'")
    t = time.monotonic()
    r = box.run("while True:\n    pass")
    assert r.breach == "timeout" and "killed" in r.error
    assert time.monotonic() - t < 1.5 + 3
    assert box.run("y").value == "kept"


def test_memory_bomb_is_stopped(box):
    r = box.run("hog = bytearray(1 << 30)")
    assert r.breach == "memory" and "MemoryError" in r.error
    r = box.run("hog = []\nwhile True:\n    hog.append(' ' * (1 << 20))")
    assert r.breach in ("memory", "timeout")
    assert box.run("'hog' in globals()").value == "False"  # the failed cells' effects were discarded


def test_writing_outside_the_temp_dir_fails_inside_it_works(box, tmp_path):
    target = tmp_path / "evil.txt"
    r = box.run(f"open({str(target)!r}, 'w').write('x')")
    assert "PermissionError" in r.error and not target.exists()
    r = box.run(f"import os\nos.remove({str(__file__)!r})")
    assert "PermissionError" in r.error and os.path.exists(__file__)
    r = box.run("open('notes.txt', 'w').write('abc')\nprint(open('notes.txt').read())")
    assert r.error is None and r.output == "abc\n"


def test_output_is_truncated(box):
    r = box.run("print('a' * 1000)")
    assert r.output == "a" * 200 and r.dropped == 801
    assert "[output truncated: 801 more characters]" in r.observation()


def test_processes_and_ctypes_are_refused(box):
    assert "PermissionError" in box.run("import os\nos.system('true')").error
    assert "PermissionError" in box.run("import subprocess\nsubprocess.run(['true'])").error
    assert "ImportError" in box.run("import ctypes").error or "ModuleNotFoundError" in box.run("import ctypes").error


@pytest.fixture
def local_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    accepted = []
    srv.settimeout(5)

    def accept():
        try:
            accepted.append(srv.accept())
        except OSError:
            pass
    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield srv.getsockname()[1], accepted
    srv.close()


def test_opening_a_socket_fails(box, local_server):
    port, accepted = local_server
    r = box.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
    assert "PermissionError" in r.error


def test_network_namespace_stops_even_code_that_bypasses_the_python_guard(box, local_server):
    if box.network != "namespace":
        pytest.skip("unprivileged user namespaces are not available here: only the Python-level guard applies")
    port, accepted = local_server
    # socket.SocketType is the raw _socket.socket class: the Python-level guard does not cover it (it is not a
    # boundary); the namespace has no route to the host's loopback, so the connection must still fail.
    r = box.run(f"import socket\ns = socket.SocketType()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))\nprint('connected')")
    assert r.error is not None and "connected" not in r.output
    time.sleep(0.2)
    assert accepted == []


def test_candidates_are_isolated_and_the_winner_is_kept_without_rerunning(box):
    box.run("counter = 0")
    a = box.run_candidate("counter += 1\nprint(search('q1'))\ncounter")
    b = box.run_candidate("counter += 10\nprint(search('q1'))\ncounter")
    assert (a.value, b.value) == ("1", "10")  # b did not see a's increment
    calls = box.toolbox.real_calls
    box.commit(b.cid)
    assert box.run("counter").value == "10"  # committed once: the winner's += 10 was not executed again
    assert box.toolbox.real_calls == calls


def test_a_cell_that_kills_its_own_process_leaves_the_state_intact():
    with Sandbox(timeout=2) as b:
        b.run("v = 1")
        r = b.run("import os, signal\nos._exit(3)")
        assert r.breach == "crash" and "died" in r.error
        assert b.run("v").value == "1"  # the holder was not the one that died


def test_a_start_that_stalls_is_retried_once_then_reported(monkeypatch):
    real_spawn, spawned = Sandbox._spawn, []

    def first_stalls(self):
        ready = real_spawn(self)
        spawned.append(self.proc.pid)
        return None if len(spawned) == 1 else ready  # as if the first child never said it was ready

    monkeypatch.setattr(Sandbox, "_spawn", first_stalls)
    with Sandbox({}, timeout=2) as b:
        assert b.run("print(6 * 7)").output == "42\n"
        with pytest.raises(ProcessLookupError):
            os.kill(spawned[0], 0)                       # the stalled child was killed, not left behind
    monkeypatch.setattr(Sandbox, "_spawn", lambda self: real_spawn(self) and None)
    with pytest.raises(SandboxError, match="did not start .2 tries"):
        Sandbox({}, timeout=2)
