"""Attacks on the sandbox's stated guarantees, with code a model could write or a user could paste. Each test is
an attack that once got through; the oracle is the OS (the files on disk, the processes alive, the length of what
comes back to the model), never the sandbox's own report."""
import os
import time

import pytest

from minagent.agent.sandbox import Sandbox


@pytest.fixture(scope="module")
def box():
    b = Sandbox({"search": lambda q, k=3: f"{k} passages about {q}"}, timeout=3, memory_mb=256, max_output=200)
    yield b
    b.close()


@pytest.fixture
def victim(tmp_path):
    """A directory outside the sandbox, and a way to see whether anything in it changed (names, modes, sizes,
    times, extended attributes)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "f.txt").write_text("keep")
    os.chmod(tmp_path / "f.txt", 0o644)

    def state():
        out = {}
        for p in sorted(tmp_path.rglob("*")):
            st = os.lstat(p)
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, os.listxattr(p, follow_symlinks=False))
        return out
    return tmp_path, state


def test_os_path_functions_called_with_keywords_or_fds_change_nothing_outside(box, victim):
    """The guarded os functions only looked at positional paths: os.remove(path=...), os.rename(src, dst=...),
    os.truncate(path=..., length=0) went through untouched, and so did a path given as an fd (os.chmod(fd),
    os.utime(fd), os.setxattr(fd), which work on an fd opened read-only) and os.fchmod."""
    tmp_path, state = victim
    v = str(tmp_path)
    before = state()
    attacks = [f"os.remove(path='{v}/f.txt')", f"os.unlink(path='{v}/f.txt')", f"os.rmdir(path='{v}/sub')",
               f"os.mkdir(path='{v}/d')", f"os.truncate(path='{v}/f.txt', length=0)",
               f"os.chmod(path='{v}/f.txt', mode=0o600)", f"os.utime(path='{v}/f.txt', times=(0, 0))",
               f"open('s', 'w').close()\nos.rename('s', dst='{v}/moved')",
               f"open('s', 'w').close()\nos.replace(src='s', dst='{v}/moved')",
               f"os.symlink(src='s', dst='{v}/link')",
               f"fd = os.open('{v}/f.txt', os.O_RDONLY)\nos.chmod(fd, 0o600)",
               f"fd = os.open('{v}/f.txt', os.O_RDONLY)\nos.fchmod(fd, 0o600)",
               f"fd = os.open('{v}/f.txt', os.O_RDONLY)\nos.utime(fd, (0, 0))",
               f"fd = os.open('{v}/f.txt', os.O_RDONLY)\nos.setxattr(fd, 'user.x', b'1')",
               f"fd = os.open('{v}/f.txt', os.O_RDONLY)\nos.fchown(fd, os.getuid() + 1, -1)"]
    for code in attacks:
        r = box.run("import os\n" + code)
        assert r.error and "PermissionError" in r.error, code
        assert state() == before, code
    r = box.run("fd = os.open('in.txt', os.O_RDWR | os.O_CREAT)\nos.chmod(fd, 0o600)\nos.fchmod(fd, 0o640)\n"
                "os.utime(fd, (0, 0))\nos.truncate(path='in.txt', length=0)\nos.rename(src='in.txt', dst='in2.txt')\n"
                "os.remove(path='in2.txt')\nos.path.exists('in2.txt')")
    assert (r.error, r.value) == (None, "False")  # inside, the same calls work


def test_sqlite_writes_no_database_file_outside(box, victim):
    """sqlite3.connect was guarded, but SQL itself opens files: ATTACH DATABASE and VACUUM INTO created them
    anywhere, and sqlite3.dbapi2.connect and sqlite3.Connection(...) opened any path unguarded."""
    tmp_path, state = victim
    v = str(tmp_path)
    before = state()
    for code in (f"c = sqlite3.connect(':memory:')\nc.execute(\"ATTACH DATABASE '{v}/a.db' AS x\")\n"
                 "c.execute('create table x.t(a)')",
                 f"c = sqlite3.connect(':memory:')\nc.execute('create table t(a)')\nc.execute(\"VACUUM INTO '{v}/v.db'\")",
                 f"c = sqlite3.connect(':memory:')\nc.set_authorizer(None)\nc.execute(\"ATTACH '{v}/n.db' AS x\")",
                 f"import sqlite3.dbapi2\nsqlite3.dbapi2.connect('{v}/d.db').execute('create table t(a)')",
                 f"sqlite3.Connection('{v}/c.db').execute('create table t(a)')"):
        r = box.run("import sqlite3\n" + code)
        assert r.error and ("PermissionError" in r.error or "authoriz" in r.error), code
        assert state() == before, code
    r = box.run("c = sqlite3.connect('main.db')\nc.execute('create table t(a)')\nc.execute(\"ATTACH 'other.db' AS o\")\n"
                "c.execute('create table o.u(b)')\nc.execute(\"VACUUM INTO 'copy.db'\")\n"
                "c.set_authorizer(lambda *a: sqlite3.SQLITE_OK)\nc.execute('select * from t').fetchall()\n"
                "import os\nsorted(n for n in os.listdir() if n.endswith('.db'))")
    assert (r.error, r.value) == (None, "['copy.db', 'main.db', 'other.db']")  # inside, all of it works


def _alive_in_session(sid):
    """Processes of session `sid` that are not zombies, read from /proc/PID/stat (state, session)."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(pid))
    return alive


def test_committed_cells_leave_no_process_behind():
    """The holder a committed cell replaces waited for its successor to exit, i.e. for ever: every committed
    cell (and SAG round) left one more process, so a sandbox kept for a long session piled up processes."""
    with Sandbox({}, timeout=3) as b:
        for i in range(6):
            assert b.run(f"x = {i}").error is None
        b.run_candidate("y = 1")
        r = b.run_candidate("y = 2")
        b.commit(r.cid)
        time.sleep(0.1)
        assert b.run("x, y").value == "(5, 2)"
        time.sleep(0.1)
        assert len(_alive_in_session(b.proc.pid)) == 1  # the holder, and nothing else


def test_multiprocessing_spawn_starts_no_process(victim):
    """fork and subprocess were refused, but multiprocessing's 'spawn' and 'forkserver' start methods (and
    concurrent.futures with them) start a fresh interpreter through _posixsubprocess, which none of the guards
    saw: a process with no guard at all, outliving its cell (multiprocessing's resource tracker)."""
    tmp_path, _ = victim
    mark = tmp_path / "spawned"
    with Sandbox({}, timeout=5) as b:
        for code in ("import multiprocessing as mp, time\nmp.get_context('spawn').Process(target=time.sleep, args=(5,)).start()",
                     "import multiprocessing as mp, time\nmp.get_context('forkserver').Process(target=time.sleep, args=(5,)).start()",
                     "from concurrent.futures import ProcessPoolExecutor\nimport multiprocessing as mp\n"
                     "ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')).submit(abs, -1).result()",
                     f"import multiprocessing.util\nmultiprocessing.util.spawnv_passfds('/bin/sh', ['sh', '-c', 'touch {mark}'], [])"):
            r = b.run(code)
            assert r.error and "PermissionError" in r.error, code
            time.sleep(0.3)
            assert len(_alive_in_session(b.proc.pid)) == 1, code
        assert not mark.exists()


def test_error_messages_are_cut_like_printed_output(box):
    """Printed output and values were cut to max_output, errors were not: a KeyError on a long key, an exception
    or sys.exit() with a long message, or a syntax error in a long line came back whole, a 1 MB observation."""
    for code in ("raise ValueError('z' * 10**6)", "d = {}\nd['k' * 10**6]", "import sys\nsys.exit('e' * 10**6)",
                 "y = (" + "1+" * 100_000 + ")"):
        r = box.run(code)
        assert r.error and len(r.observation()) < 200 + 400, code  # max_output=200, plus the fixed wording


def test_a_cells_own_mistakes_come_back_as_errors_not_as_a_crash(box):
    """Real Python answers sys.stdout.write(b'...') with a TypeError, and an exception whose __str__ fails
    still ends its cell like any other; both killed the cell's process instead ("died (status 256)"), which
    also threw away what the cell had done before."""
    import io
    with pytest.raises(TypeError):
        io.StringIO().write(b"bytes")  # the oracle: what a text stream does with bytes
    r = box.run("kept = 1\nimport sys\nsys.stdout.write(b'bytes')")
    assert (r.breach, r.error.split(":")[0]) == (None, "TypeError") and box.run("kept").value == "1"
    r = box.run("class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nkept2 = 2\nraise Odd()")
    assert r.breach is None and r.error.startswith("Odd") and box.run("kept2").value == "2"


def test_a_candidate_cannot_read_what_another_candidate_wrote():
    """Candidates worked on their own copy of the files at the same path, but the copies of those still pending
    sat next door: `../.candidate-1/answer.txt` gave the second candidate the first one's file, and
    `../.sandbox.log` what it wrote to fd 1. The oracle is the first candidate's secret, which must not appear
    in anything the second one prints."""
    with Sandbox({}, timeout=3) as b:
        a = b.run_candidate("import os\nopen('answer.txt', 'w').write('secret-of-a')\nos.write(1, b'secret-of-a')")
        assert a.error is None
        peek = b.run_candidate("import os\nprint(sorted(os.listdir('..')))")
        assert ".candidate-1" in peek.output  # where a's copy waits (its name is no secret)
        for code in ("print(open('../.candidate-1/answer.txt').read())",
                     "import pathlib\nprint(pathlib.Path('../.candidate-1/answer.txt').read_text())",
                     "print(os.read(os.open('../.candidate-1/answer.txt', os.O_RDONLY), 100))",
                     "import io\nprint(io.FileIO('../.candidate-1/answer.txt').read())",
                     "print(os.listdir('../.candidate-1'), [e.name for e in os.scandir('../.candidate-1')])",
                     "import glob\nprint([open(p).read() for p in glob.glob('../.*/*')])",
                     "print(open('../.sandbox.log').read())",
                     "os.chdir('..')\nprint(open('.candidate-1/answer.txt').read())"):
            r = b.run_candidate("import os\n" + code)
            assert "secret-of-a" not in r.output and "answer.txt" not in r.output, code
        b.commit(a.cid)
        r = b.run("print(open('answer.txt').read(), os.listdir('.'))")
        assert (r.output, r.error) == ("secret-of-a ['answer.txt']\n", None)  # its own files it reads as ever


def test_messages_forged_on_the_protocol_cost_the_variables_not_the_agent():
    """Code that finds the protocol's fd (it is __main__.RPC_OUT) can write messages the parent trusted: a second
    'started' naming another process's pid made the parent SIGKILL that process at the time limit (as root, any
    process), and a JSON object without "op" raised KeyError out of Sandbox.run into the agent. The oracle is a
    process this test starts, and that run() returns."""
    import subprocess
    import sys
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with Sandbox({}, timeout=1) as b:
            send = "import __main__, json, os\nsend = lambda m: os.write(__main__.RPC_OUT, (json.dumps(m) + '\\n').encode())\n"
            r = b.run(send + f"send({{'op': 'started', 'id': 0, 'pid': {victim.pid}}})\nwhile True: pass")
            assert r.breach in ("timeout", "crash")
            time.sleep(0.2)
            assert victim.poll() is None  # not killed by the sandbox
            for forged in ("{'x': 1}", "{'op': 'died', 'status': 'x'}", "{'op': 'result', 'id': -1}",
                           "{'op': 'result', 'id': ID, 'output': ['not', 'text'], 'value': None, 'final': None, "
                           "'error': None, 'breach': None}"):
                forged = forged.replace("ID", str(b._next_id + 1))  # the id the next cell will have
                r = b.run(send + f"send({forged})\nimport time\ntime.sleep(0.5)")
                assert r.breach == "crash" and isinstance(r.output, str), forged
                assert b.run("print(6 * 7)").output == "42\n"
    finally:
        victim.kill()
        victim.wait()


def test_an_endless_line_on_the_protocol_does_not_grow_the_agent():
    """Bytes written to the protocol's fd with no newline were kept by the agent until one came: 40 MB of them
    sat in its memory. Past MAX_MESSAGE the cell is a crash and the buffer is dropped; the sandbox goes on."""
    with Sandbox({}, timeout=5) as b:
        b.MAX_MESSAGE = 1 << 20
        r = b.run("import __main__, os\nfor _ in range(40):\n    os.write(__main__.RPC_OUT, b'x' * (1 << 20))\n"
                  "import time\ntime.sleep(1)")
        assert r.breach == "crash" and "over 1 MB" in r.error
        assert len(b._buf) < (2 << 20)
        assert b.run("print(6 * 7)").output == "42\n"
