"""A second round of attacks on the sandbox's stated guarantees (README, "The sandbox: what it does and does not
protect"). Each test is an attack that got through; the oracle is the OS (the processes alive in /proc, the
agent's own memory, the files on disk), never the sandbox's own report."""
import os
import time

import pytest

from minagent.agent.sandbox import Sandbox


def _processes_of(tmpdir):
    """Live (non-zombie) processes whose command line names the sandbox's temp dir: its holder and candidates
    carry it in their config argument, whatever session or process group they moved to."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tmpdir.encode() in cmdline and state != "Z":
            found.append(int(pid))
    return found


SPIN_IN_EVERY_FORK = "def spin():\n    while True:\n        pass\nos.register_at_fork(after_in_child=spin)\n"


@pytest.mark.parametrize("leave_group", ["os.setsid()", "os.setpgid(0, 0)", "os.setpgrp()",
                                         "os.login_tty(os.openpty()[1])"])
def test_no_process_outlives_the_sandbox_after_leaving_its_process_group(leave_group):
    """The agent stops the sandbox with killpg(). A committed cell that moved the holder into a session or
    process group of its own (os.setsid, os.setpgid, os.setpgrp, os.login_tty: unguarded) and registered an
    at-fork hook that spins made the next cell's process spin before it could report its pid, so the agent had
    no pid to kill, and close() missed both: after the agent itself had exited, a process spun at 100% CPU for
    ever (no CPU limit is set before the cell starts) beside the holder waiting for it."""
    b = Sandbox({}, timeout=1)
    tmpdir = b.tmpdir
    try:
        r = b.run("import os\n" + leave_group + "\n" + SPIN_IN_EVERY_FORK)
        # the next cell, given up at once: what run() does after its deadlines (~40 s), without the wait
        b._send({"op": "run", "id": b._next_id + 1, "code": "pass", "timeout": 1})
        time.sleep(0.3)
    finally:
        b.close()
    time.sleep(0.3)
    left = _processes_of(tmpdir)
    for pid in left:  # do not leave them spinning on the test machine
        os.kill(pid, 9)
    assert left == [], r


def test_tool_calls_with_huge_arguments_do_not_grow_the_agent():
    """The cell's memory is capped, the agent's is not: every distinct tool call was remembered in the agent's
    cache, key and all, so a cell under a 256 MB limit calling search() with 8 MB queries grew the agent by
    ~500 MB in 4 s (and more each cell, for the whole question). The oracle is tracemalloc, Python's own count of
    the memory the agent's process holds."""
    import tracemalloc
    with Sandbox({"search": lambda q, k=3: f"{k} passages"}, timeout=5, memory_mb=256) as b:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            r = b.run("big = 'x' * (4 << 20)\nfor i in range(16):\n    search(big + str(i))\nprint('done')")
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert (r.output, r.error) == ("done\n", None)
        assert held < 8 << 20, f"the agent kept {held >> 20} MB after the cell"
        assert b.run("search('short')\nsearch('short')").error is None
        assert (b.toolbox.calls, b.toolbox.real_calls) == (18, 17)  # ordinary calls are still served once


def test_a_file_kept_open_across_cells_is_each_candidates_own():
    """Candidates are forks of the holder, so a file the holder kept open in a variable was one open file shared
    by all of them: a read in the first candidate moved the second one's position (the same readline() gave
    'line 0' and then ''), and what the first wrote through the kept file the second read back, although each
    works on its own copy of the files. The oracle is the file as written by the test: every candidate reads it
    from the same place, and the file left on disk has the winner's write only."""
    with Sandbox({}, timeout=3) as b:
        b.run("open('data.txt', 'w').write('line 0\\nline 1\\n')\nopen('notes.txt', 'w').write('start ')\n"
              "f = open('data.txt')\nlog = open('notes.txt', 'a+')")
        a = b.run_candidate("print(f.readline(), end='')\nlog.write('by A')\nlog.flush()")
        c = b.run_candidate("print(f.readline(), end='')\nlog.seek(0)\nprint(log.read())\nlog.write('by C')\n"
                            "log.flush()")
        assert (a.output, c.output) == ("line 0\n", "line 0\nstart \n")
        b.commit(c.cid)
        with open(os.path.join(b.workdir, "notes.txt")) as disk:
            assert disk.read() == "start by C"
        assert b.run("print(f.readline(), end='')\nlog.write('!')\nlog.flush()").output == "line 1\n"
        with open(os.path.join(b.workdir, "notes.txt")) as disk:
            assert disk.read() == "start by C!"
        b.run_candidate("log.write(' lost')\nlog.flush()")
        b.discard()  # a rolled-back write is gone from the kept file too
        assert b.run("log.seek(0)\nprint(log.read())").output == "start by C!\n"


def test_modules_loaded_before_the_guards_do_not_keep_the_real_open(tmp_path):
    """bz2 and tokenize were imported before the guards were installed and keep their own reference to the real
    open(): bz2.open() wrote a file outside the working directory, and linecache.getline() and tokenize.open()
    read another candidate's copy of the files. The oracles are the victim directory and the other candidate's
    secret, which must not come back."""
    with Sandbox({}, timeout=3) as b:
        r = b.run(f"import bz2\nbz2.open({str(tmp_path / 'out.bz2')!r}, 'wb').write(b'x')")
        assert r.error and "PermissionError" in r.error
        assert os.listdir(tmp_path) == []
        a = b.run_candidate("open('answer.txt', 'w').write('secret-of-a')")
        for code in (f"import linecache\nprint(linecache.getline('../.candidate-{a.cid}/answer.txt', 1))",
                     f"import tokenize\nprint(tokenize.open('../.candidate-{a.cid}/answer.txt').read())"):
            r = b.run_candidate(code)
            assert "secret-of-a" not in r.output, code


def _memory_files_held(tmpdir):
    """Bytes of RAM held in memfd files by the sandbox's processes, as the kernel reports them (/proc/PID/fd)."""
    held = 0
    for pid in _processes_of(tmpdir):
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}").startswith("/memfd:"):
                    held += os.stat(f"{fd_dir}/{fd}").st_blocks * 512
            except OSError:
                continue
    return held


def test_memory_held_in_files_is_not_a_way_around_the_memory_limit():
    """RLIMIT_AS counts mapped memory only: a cell limited to 128 MB kept 384 MB of RAM in os.memfd_create()
    files (16 MB each, the file-size limit, times up to 1024 fds), and multiprocessing.shared_memory created a
    RAM file in /dev/shm, in C past open(), that stayed there after the sandbox was closed. The oracles are the
    kernel's count of the memfd pages and /dev/shm."""
    name = f"minagent-redteam2-{os.getpid()}"
    with Sandbox({}, timeout=5, memory_mb=128) as b:
        r = b.run("import os\nfds = []\nfor i in range(12):\n    fd = os.memfd_create('m')\n"
                  "    for _ in range(16):\n        os.write(fd, b'x' * (1 << 20))\n    fds.append(fd)")
        assert r.error and "PermissionError" in r.error
        assert _memory_files_held(b.tmpdir) < 16 << 20
        r = b.run(f"from multiprocessing import shared_memory\nshared_memory.SharedMemory({name!r}, create=True, size=4096)")
        assert r.error and "PermissionError" in r.error
    left = os.path.exists(f"/dev/shm/{name}")
    if left:
        os.unlink(f"/dev/shm/{name}")
    assert not left
