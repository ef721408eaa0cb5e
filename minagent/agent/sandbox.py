"""Python execution for the agent in a separate, limited process, with the agent's tools callable from inside.

    box = Sandbox({"search": search_fn}, timeout=10, memory_mb=512)
    r = box.run("x = search('git log')\\nprint(x[:80])")     # -> ExecResult(output, value, final, error, ...)
    box.close()

Each cell runs in a fork of the process that holds the agent's variables (sandbox_child.py explains the layout),
so variables persist between steps, a killed or failed cell leaves them untouched, and self-consistency
candidates run isolated from each other: run_candidate() several times, then commit(winner) — the winner's
process simply becomes the holder, it is not run again. Tool calls (search, ...) travel over a pipe to this
process, are served here (from a cache when the same call was made before) and their time is not counted
against the cell's wall-time limit.

Security model — what the sandbox does, and what it does not:
  - Separate process, own session: a crash, an infinite loop or a memory bomb never takes the agent down.
  - Wall time: a cell is SIGKILLed `timeout` seconds after it starts (tool time excluded); a CPU-time rlimit
    backs this up. Memory: RLIMIT_AS (`memory_mb` of address space) makes allocation fail with MemoryError;
    the cell is then discarded. Files: RLIMIT_FSIZE caps any file the code writes; output is truncated.
  - Network: where unprivileged user namespaces are available (most Linux systems) the process moves into a
    fresh network namespace with no usable interface: no TCP/UDP connection can leave, whatever the code does
    (`network == "namespace"`). Elsewhere only the Python-level guard applies (`network == "python"`). A Unix
    socket named by a path (/var/run/docker.sock, an X server) is a file, not network: the namespace does not
    stop code that gets past the Python guard from connecting to one.
  - Python-level guards (new sockets, os.system / subprocess / fork / exec / multiprocessing's spawn and
    forkserver, leaving the process group (setsid, setpgid), ctypes import; memory held in files (memfd,
    /dev/shm), which RLIMIT_AS does not count; writes outside the working directory through open(), io.FileIO, os.open and the
    os path functions, with paths given by position, keyword, dir_fd or as an open fd; sqlite's connect,
    Connection, ATTACH and VACUUM INTO; reading the other candidates' copies of the files beside the working
    directory) stop ordinary code and honest mistakes. They are NOT a security boundary: Python code can reach
    the unguarded functions (the `posix` module, importlib.reload(os) or a module dropped from sys.modules and
    imported again, gc or object introspection such as type() of an open file, the sandbox's own `__main__`),
    and a thread can swap a path between its check and its use. Without a namespace a determined program can
    reach the network, and even with one it can write anywhere the user running the agent may write and read
    other candidates' files and memory (/proc). The rlimits hold for code without CAP_SYS_RESOURCE (root
    outside a user namespace can raise them). For untrusted models run the agent itself inside a container or
    VM; this sandbox limits accidents and resource exhaustion, not attackers.
  - What a cell leaves behind: alarms, signal handlers and threads end with the cell; should the process die
    between cells anyway, the next call restarts the sandbox (variables lost, the model told). Tool calls have
    their own cap (`tool_timeout` seconds per cell). Files: each candidate works on its own copy of the working
    directory (`workdir`: the cells' cwd, HOME and TMPDIR) at the same path, so candidates cannot see each
    other's files and a discarded or killed cell's writes vanish with its variables. A file kept open in a
    variable across cells is opened again in each candidate's copy (same position); other kernel objects a
    committed cell keeps (a pipe, a socketpair, a shared mmap) stay shared by the candidates that follow. What
    cannot be copied (a FIFO, a file the code made unreadable) is lost at the next rollback.
"""
from __future__ import annotations

import inspect
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CHILD = Path(__file__).with_name("sandbox_child.py")


class SandboxError(RuntimeError):
    """The sandbox process could not be started or stopped answering."""


@dataclass
class ExecResult:
    output: str = ""              # what the code printed (truncated)
    value: str | None = None      # str() of a trailing expression's value
    final: object = None          # the argument of final_answer(), if it was called
    called_final: bool = False
    error: str | None = None      # "TypeError: ..." / timeout / memory / crash message
    breach: str | None = None     # "timeout" | "memory" | "crash" when a limit killed the cell
    dropped: int = 0              # output characters cut off
    cid: int | None = None        # candidate id (for commit) when the cell is pending
    seconds: float = 0.0

    def observation(self) -> str:
        """The observation text in the reference format (agent-distillation / smolagents)."""
        logs = self.output
        if self.dropped:
            logs += f"\n[output truncated: {self.dropped} more characters]\n"
        if self.error:
            return (f"Observation:\nExecution logs:\n{logs}Error: {self.error}\n"
                    "Now let's retry: take care not to repeat previous errors!")
        if self.called_final:
            return f"Observation:\nExecution logs:\n{logs}Last output from code snippet:\n{self.final}"
        return f"Observation:\nExecution logs:\n{logs}Last output from code snippet:\n{self.value}"


def _text(value):
    """Strings from the cell as valid Unicode: printed bytes decoded with surrogateescape, or escapes like
    "\\ud83d\\ude00" in the model's code, leave lone surrogates that no tokenizer can encode. A surrogate pair
    becomes its character, a lone one U+FFFD."""
    if not isinstance(value, str) or value.isascii():
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class ToolBox:
    """The parent-side tools, with a cache of identical calls (SAG's candidates and repeated searches)."""

    def __init__(self, tools: dict[str, Callable], cache: bool = True):
        self.tools, self.use_cache, self.cache = dict(tools), cache, {}
        self.calls = 0       # calls asked for
        self.real_calls = 0  # calls actually run

    # characters of a call's arguments worth remembering: a real query is a line, while a cell (its own memory
    # capped) can send megabytes of distinct arguments, which the cache would keep in the agent for the question
    MAX_CACHED_KEY = 1 << 16

    def call(self, name: str, args: list, kwargs: dict):
        self.calls += 1
        key = json.dumps([name, *self._canonical(name, args, kwargs)], sort_keys=True, default=str)
        cache = self.use_cache and len(key) <= self.MAX_CACHED_KEY
        if cache and key in self.cache:
            return self.cache[key]
        self.real_calls += 1
        result = self.tools[name](*args, **kwargs)
        if cache:
            self.cache[key] = result
        return result

    def _canonical(self, name: str, args: list, kwargs: dict) -> tuple[list, dict]:
        """The call's arguments as the tool's parameters see them, so search('q', 5), search('q', k=5) and
        search(query='q') with k defaulting to 5 are one cache entry; as given when they do not bind (the call
        itself will then raise the tool's own error)."""
        try:
            bound = inspect.signature(self.tools[name]).bind(*args, **kwargs)
        except (TypeError, ValueError, KeyError):
            return args, kwargs
        bound.apply_defaults()
        return [], dict(bound.arguments)


def _reap_group(pgid: int, block: bool = True):
    """Wait for the sandbox's processes that became ours. The holder that forks itself away from a cell's
    threads, and the candidates of a killed holder, are orphans: the kernel hands them to the nearest child
    subreaper or to PID 1, which is this process when the agent is a container's first process. Unwaited they
    stay zombies for the process's life. Only the sandbox's own process group is waited for (it was just sent
    SIGKILL), never another child of the program; when the orphans went elsewhere there is nothing to wait for.
    block=False (after each cell): only those already gone, so a long session does not pile them up."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _well_formed(msg: dict, cid: int) -> bool:
    """Is `msg` a message the child sends during cell `cid`, with the fields this side reads? Code that writes to
    the protocol's fd can send anything: a pid this side would kill, a result that is not text."""
    op = msg.get("op")
    if op == "started":
        return msg.get("id") == cid and type(msg.get("pid")) is int
    if op == "died":
        return type(msg.get("status")) is int
    if op == "result":
        return (msg.get("id") == cid and isinstance(msg.get("output"), str)
                and all(msg.get(k) is None or isinstance(msg[k], str) for k in ("value", "error"))
                and (msg.get("final") is None or isinstance(msg["final"], (str, int, float)))
                and msg.get("breach") in (None, "memory") and type(msg.get("dropped", 0)) is int)
    return op == "call"  # a malformed call is answered with the tool's error, like a bad argument


def _reap_holder(pid: int, pgid: int):
    """Wait for a holder that a commit replaced: it exits once it has told the winner, and becomes our zombie
    when it is our child (the first holder) or an orphan handed to us (we are PID 1 or a child subreaper).
    Anyone else's child is not ours to wait for; no pid (a holder that never said) leaves it to _reap_group."""
    if isinstance(pid, int) and pid > 0 and _in_group(pid, pgid):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _in_group(pid: int, pgid: int) -> bool:
    """Is pid a process of the sandbox's group (never, say, another child of the agent that a forged message
    named, which a blocking wait would wait for)?"""
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


class Sandbox:
    def __init__(self, tools: dict[str, Callable] | ToolBox | None = None, timeout: float = 10.0,
                 memory_mb: int = 512, max_output: int = 4000, max_file_mb: int = 16, network_namespace=True,
                 tool_timeout: float = 60.0):
        self.toolbox = tools if isinstance(tools, ToolBox) else ToolBox(tools or {})
        self.timeout, self.memory_mb, self.max_output = timeout, memory_mb, max_output
        self.tool_timeout = tool_timeout  # seconds of tool calls one cell may spend (not counted in timeout)
        self.max_file_mb, self.network_namespace = max_file_mb, network_namespace
        self.proc = self.holder_pid = None
        self.tmpdir = self.workdir = None
        self.restarts = -1
        self._next_id = 0
        self._buf = b""
        self.start()

    # ---- process management ------------------------------------------------------------------------------
    START_ATTEMPTS, START_WAIT = 2, 30.0
    MAX_MESSAGE = 32 << 20  # bytes of one protocol line

    def start(self):
        """(Re)start the sandbox process. One that has not reported ready within START_WAIT seconds is killed
        and started once more: a start normally takes ~0.1 s, but on a loaded 2-core VM one stalled past 30 s
        once in a full test run (never reproduced in 400 back-to-back starts)."""
        self.restarts += 1
        ready = None
        for _ in range(self.START_ATTEMPTS):
            try:
                ready = self._spawn()
            except SandboxError as e:  # the child exited before it was ready
                ready = str(e)
            if isinstance(ready, dict) and ready.get("op") == "ready":
                self.network, self.holder_pid = ready["network"], ready["pid"]
                return
            self.close()
        raise SandboxError(f"the sandbox process did not start ({self.START_ATTEMPTS} tries of {self.START_WAIT:.0f} s; "
                           f"last: {ready!r}); see {CHILD}")

    def _spawn(self) -> dict | None:
        self.close()
        self.tmpdir = tempfile.mkdtemp(prefix="minagent-sandbox-")
        self.workdir = os.path.join(self.tmpdir, "work")  # the cells' cwd, HOME and TMPDIR
        os.mkdir(self.workdir)
        cfg = dict(tmpdir=self.tmpdir, tools=sorted(self.toolbox.tools), memory_bytes=self.memory_mb << 20,
                   max_file_bytes=self.max_file_mb << 20, max_output=self.max_output,
                   network_namespace=bool(self.network_namespace))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.workdir, "TMPDIR": self.workdir,
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-I", str(CHILD), json.dumps(cfg)], cwd=self.workdir,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        self._buf = b""
        return self._read(time.monotonic() + self.START_WAIT)

    def close(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            _reap_group(self.proc.pid)
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:  # unflushed bytes for a process that is gone
                    pass
            self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = self.workdir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- the wire ----------------------------------------------------------------------------------------
    def _send(self, msg: dict):
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:  # the process died (a timer the code armed, a thread calling os._exit, ...)
            raise SandboxError(f"the sandbox process is gone ({type(e).__name__})") from None

    def _read(self, deadline: float) -> dict | None:
        """Next message, None at the deadline; raises SandboxError if the process is gone."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise SandboxError("the sandbox process exited")
            self._buf += chunk
            if len(self._buf) > self.MAX_MESSAGE and b"\n" not in chunk:
                # code writing to the protocol's fd without a newline would grow the agent's memory without end;
                # real messages carry truncated output and are far smaller
                self._buf = b""
                raise SandboxError(f"the sandbox process sent a message over {self.MAX_MESSAGE >> 20} MB")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:  # code that found the protocol's fd and wrote to it: treated as a crash, restarted
            msg = None
        if not isinstance(msg, dict):
            raise SandboxError(f"the sandbox process sent a garbled message ({line[:60]!r})")
        return msg

    # ---- running code ------------------------------------------------------------------------------------
    def run(self, code: str) -> ExecResult:
        """Run a cell and keep its effects (unless it breached a limit or crashed)."""
        r = self.run_candidate(code)
        if r.cid is not None:
            self.commit(r.cid, r)
        return r

    def run_candidate(self, code: str) -> ExecResult:
        """Run a cell on a copy of the state; its effects are kept only if commit(r.cid) is called next
        (before any other run). Several candidates may be pending at once; commit one or discard() them."""
        self._next_id += 1
        cid = self._next_id
        t0 = time.monotonic()
        try:
            r = self._exchange(cid, code)
        except SandboxError as e:
            self.start()
            r = ExecResult(error=f"the sandbox crashed ({e}) and was restarted: variables from earlier steps "
                                 "are lost", breach="crash")
        r.seconds = time.monotonic() - t0
        _reap_group(self.proc.pid, block=False)
        return r

    def _exchange(self, cid: int, code: str) -> ExecResult:
        self._send({"op": "run", "id": cid, "code": code, "timeout": self.timeout})
        # the cell's time starts at "started": before it the holder copies the working directory's files, which
        # may take longer than a cell may run (many files) and is not the cell's doing
        deadline, pid, tool_seconds = time.monotonic() + self.timeout + self.START_WAIT, None, 0.0
        why = f"the code ran longer than {self.timeout:g} s and was killed (an infinite loop?)"
        while True:
            msg = self._read(deadline)
            if msg is None:
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                died = self._read(time.monotonic() + 10)  # the holder reports the death, then we are in sync
                if not died or died.get("op") != "died":
                    raise SandboxError("no answer after killing a cell that ran past its time limit")
                return ExecResult(error=why, breach="timeout")
            op = msg.get("op")
            if not _well_formed(msg, cid) or (op == "started" and pid is not None):
                raise SandboxError(f"the sandbox process sent a message out of protocol ({str(msg)[:60]!r})")
            if op == "started":
                pid = msg["pid"]
                deadline = time.monotonic() + self.timeout
            elif op == "call":
                t0 = time.monotonic()
                try:
                    reply = {"ok": self.toolbox.call(msg["tool"], msg["args"], msg["kwargs"])}
                except Exception as e:  # the tool's error goes to the code, which may handle it
                    reply = {"error": f"{type(e).__name__}: {e}"}
                spent = time.monotonic() - t0
                tool_seconds += spent
                if tool_seconds > self.tool_timeout:  # tool time is not wall time, but it is not free either
                    deadline = time.monotonic()
                    why = (f"the code spent more than {self.tool_timeout:g} s in tool calls "
                           f"({self.toolbox.calls} calls so far) and was killed (a loop of searches?)")
                    continue
                self._send(reply)
                deadline += spent
            elif op == "died":
                status = msg["status"]
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                why = {signal.SIGXCPU: "its CPU-time limit", signal.SIGKILL: "a kill signal",
                       signal.SIGSEGV: "a segmentation fault"}.get(sig, f"status {status}")
                return ExecResult(error=f"the code's process died ({why})", breach="crash")
            elif op == "result":
                r = ExecResult(output=_text(msg["output"]), value=_text(msg["value"]), final=_text(msg["final"]),
                               called_final=bool(msg.get("called_final")),
                               error=_text(msg["error"]), breach=msg["breach"], dropped=msg.get("dropped", 0))
                if r.breach:
                    self._send({"op": "drop", "id": cid})
                    self._expect_ack()
                else:
                    r.cid = cid
                return r

    def commit(self, cid: int, result: ExecResult | None = None):
        """Keep candidate cid's effects. If the sandbox died since the cell ran (a timer or thread the code left
        behind), it is restarted and `result`, when given, is marked so the model learns its variables are gone."""
        try:
            self._send({"op": "commit", "id": cid})
            old, self.holder_pid = self.holder_pid, self._expect_ack().get("pid")
            _reap_holder(old, self.proc.pid)
        except SandboxError as e:
            self.start()
            if result is not None:
                result.cid, result.breach = None, "crash"
                result.error = (f"the sandbox process died after the code ran ({e}; something the code left "
                                "running?) and was restarted: variables from earlier steps are lost")

    def discard(self):
        try:
            self._send({"op": "discard"})
            self._expect_ack()
        except SandboxError:
            self.start()

    def _expect_ack(self):
        msg = self._read(time.monotonic() + 10)
        if not msg or msg.get("op") != "ack":
            raise SandboxError(f"expected an ack from the sandbox, got {msg!r}")
        return msg
