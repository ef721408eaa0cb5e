"""Run one of the repository's CLIs, press Ctrl-C once it is under way, and return what it said: the two tests
of "interrupted; run ... to resume" share this."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def interrupt_when(script: str, args: list, ready, timeout: float = 120) -> tuple[int, str]:
    """Start `python script args`, send SIGINT once ready() is true (or after `timeout` s); (exit code, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    return proc.returncode, err
