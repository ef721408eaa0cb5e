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
