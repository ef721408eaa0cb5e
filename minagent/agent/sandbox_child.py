"""The sandbox's child process (run as a script by sandbox.py; never imported by the agent itself).

Process layout: the first process is the *holder* of the agent's Python state (its globals). Each code cell
runs in a fork() of the holder, a *candidate*, on a copy-on-write copy of that state, so a cell that crashes,
blows its memory or time limit, or loses a self-consistency vote leaves the state untouched. When the parent
commits a candidate, that candidate becomes the new holder (the old one exits), so a winning cell is never run
twice. Files get the same treatment (WorkingFiles): each candidate works on its own
copy of the working directory, so the directory and the variables always move together.

Wire protocol: one JSON object per line. The parent writes to our stdin; we write to our stdout. Both are moved
to private fds at start-up, and fds 0/1/2 are pointed at /dev/null and a log file, so code that writes to fd 1
cannot corrupt the protocol. Messages parent -> holder: run {id, code, timeout}, commit {id}, drop {id},
discard {}; candidate -> parent: started {id, pid}, call {tool, args, kwargs} (answered by {ok} or {error}),
result {...}; holder -> parent: died {id, status} when a candidate died before reporting.

Guards (see sandbox.py for what they do and do not stop) are installed before any user code runs.
"""
import ast
import builtins
import io
import json
import os
import resource
import signal
import sys
import threading
import traceback

if __name__ != "__main__":  # importing it would take over this process's stdin/stdout
    raise ImportError("sandbox_child.py is the sandbox's child script, run by sandbox.py; it cannot be imported")

CONFIG = json.loads(sys.argv[1])
RPC_IN, RPC_OUT = os.dup(0), os.dup(1)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
_log = os.open(os.path.join(CONFIG["tmpdir"], ".sandbox.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(_log, 1)
os.dup2(_log, 2)
sys.stdout = sys.stderr = io.TextIOWrapper(io.FileIO(_log, "w", closefd=False), write_through=True)
_fork, _exit, _write, _read, _waitpid, _close, _pipe = os.fork, os._exit, os.write, os.read, os.waitpid, os.close, os.pipe
_open, _dup2, _lseek = os.open, os.dup2, os.lseek
_buffer = b""


def send(msg):
    data = (json.dumps(msg) + "\n").encode()
    while data:
        data = data[_write(RPC_OUT, data):]


def receive():
    global _buffer
    while b"\n" not in _buffer:
        chunk = _read(RPC_IN, 1 << 16)
        if not chunk:
            _exit(0)  # the parent is gone
        _buffer += chunk
    line, _buffer = _buffer.split(b"\n", 1)
    return json.loads(line)


# ---- limits and guards ---------------------------------------------------------------------------------------
def set_limits():
    mem = CONFIG["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (CONFIG["max_file_bytes"], CONFIG["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def isolate_network():
    """A new user + network namespace: the kernel then offers only a loopback device that is down, so no
    connection can leave, whatever the code does. Needs unprivileged user namespaces (Linux); else 'python'."""
    if not CONFIG["network_namespace"]:
        return "python"
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(0x10000000 | 0x40000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET
            return "python"
        for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            except OSError:
                pass
        return "namespace"
    except Exception:
        return "python"


def _refuse(what):
    def refused(*args, **kwargs):
        raise PermissionError(f"{what} is not allowed in the sandbox")
    return refused


def guard_network():
    """New sockets and name lookups refuse. The socket classes are replaced by subclasses whose constructor
    refuses (not by functions), so modules that subclass socket.socket (ssl, asyncio) still import, and wrapping
    an fd that already is a socket is allowed: socketpair() (a connected pair inside this process, which
    asyncio's event loop needs) keeps working offline."""
    import socket
    import _socket

    def refusing(cls):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:
                raise PermissionError("network access is not allowed in the sandbox")
            cls.__init__(self, family, type, proto, fileno)
        return builtins.type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})
    socket.socket = socket.SocketType = refusing(socket.socket)
    _socket.socket = _socket.SocketType = refusing(_socket.socket)
    for mod in (socket, _socket):
        for name in ("create_connection", "create_server", "fromfd", "getaddrinfo",
                     "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            if hasattr(mod, name):
                setattr(mod, name, _refuse("network access"))


def guard_processes():
    import subprocess
    for name in ("system", "popen", "fork", "forkpty", "execv", "execve", "execl", "execle", "execlp", "execvp",
                 "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "posix_spawn", "posix_spawnp", "kill",
                 "killpg",
                 # leaving the sandbox's process group (a new session or group) would take a process out of reach
                 # of the killpg() that stops the sandbox: it could outlive the agent
                 "setsid", "setpgid", "setpgrp", "login_tty"):
        if hasattr(os, name):
            setattr(os, name, _refuse(f"os.{name}"))
    subprocess.Popen = _refuse("starting a process")
    import _posixsubprocess  # what multiprocessing's spawn and forkserver start methods call, past Popen
    _posixsubprocess.fork_exec = _refuse("starting a process")
    for name in ("ctypes", "_ctypes"):  # foreign calls would bypass every Python-level guard
        sys.modules[name] = None


def guard_memory_files():
    """Memory that is a file is not address space: RLIMIT_AS does not count os.memfd_create() files (up to the
    file-size limit each, one per fd) or POSIX shared memory, which multiprocessing.shared_memory creates in C
    (past open()) under /dev/shm, in RAM, where it outlives the sandbox."""
    if hasattr(os, "memfd_create"):
        os.memfd_create = _refuse("os.memfd_create")
    try:
        import _posixshmem
    except ImportError:  # no POSIX shared memory on this system: nothing to guard
        return
    _posixshmem.shm_open = _refuse("shared memory (/dev/shm)")


ROOT = os.path.realpath(CONFIG["tmpdir"])  # holds the log, the working directory and SAG's file snapshots
WORK = os.path.join(ROOT, "work")           # the cells' working directory, HOME and TMPDIR: writes go here
_holder_moving_files = False                # the holder's own snapshot work, outside WORK, is let through


def _inside_work(path, dir_fd=None):
    """Does `path` (relative to dir_fd when given, as the *at() calls shutil.rmtree makes) name a place inside
    the working directory?"""
    if isinstance(path, int) or _holder_moving_files:
        return True  # an already-open fd, or the holder's own bookkeeping
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        try:
            path = os.path.join(os.readlink(f"/proc/self/fd/{int(dir_fd)}"), path)
        except (OSError, ValueError, TypeError):
            return False  # cannot tell where that fd points: refuse
    p = os.path.realpath(path)
    return p == WORK or p.startswith(WORK + os.sep)


def _sandbox_own(path, dir_fd=None):
    """Does `path` name one of the sandbox's own files next to the working directory: the copies of other
    candidates' files (.candidate-N), the committed ones (.base), the log? A candidate reading those would see
    what another candidate wrote."""
    if _holder_moving_files:
        return False
    if isinstance(path, int):
        try:
            path = os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return False
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        try:
            path = os.path.join(os.readlink(f"/proc/self/fd/{int(dir_fd)}"), path)
        except (OSError, ValueError, TypeError):
            return False
    p = os.path.realpath(path)
    return p.startswith(ROOT + os.sep) and not (p == WORK or p.startswith(WORK + os.sep))


def _not_yours(what, path):
    return PermissionError(f"{what}({path!r}) is not allowed: it is the sandbox's own (another candidate's files), "
                           f"outside the working directory {WORK}")


def _fd_inside_work(fd):
    """Is the open fd `fd` a file or directory inside the working directory? (os.chmod(fd), os.utime(fd),
    os.setxattr(fd), os.fchmod change the file an fd opened read-only names, wherever it is.)"""
    if _holder_moving_files:
        return True
    try:
        path = os.readlink(f"/proc/self/fd/{int(fd)}")
    except (OSError, ValueError, TypeError):
        return False  # cannot tell where that fd points: refuse
    return _inside_work(path)


def _outside(what, path):
    return PermissionError(f"{what}({path!r}) is not allowed outside the working directory {WORK}: "
                           "nothing was changed there")


def guard_writes():
    real_open, real_os_open, real_file_io = builtins.open, os.open, io.FileIO
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not _inside_work(file):
            raise PermissionError(f"writing {file!r} is not allowed: write inside the working directory {WORK}")
        if _sandbox_own(file):
            raise _not_yours("open", file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, dir_fd=None, **kwargs):
        if flags & write_flags and not _inside_work(path, dir_fd):
            raise PermissionError(f"writing {path!r} is not allowed: write inside the working directory {WORK}")
        if _sandbox_own(path, dir_fd):
            raise _not_yours("os.open", path)
        return real_os_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    class _SameClass(type):  # files open() returns are real FileIO objects: isinstance(f, io.FileIO) stays True
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_file_io)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, real_file_io)

    class FileIO(real_file_io, metaclass=_SameClass):
        def __init__(self, file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and not _inside_work(file):
                raise PermissionError(f"writing {file!r} is not allowed: write inside the working directory {WORK}")
            if _sandbox_own(file):
                raise _not_yours("io.FileIO", file)
            super().__init__(file, mode, *args, **kwargs)

    import _io
    builtins.open = io.open = _io.open = open_
    io.FileIO = _io.FileIO = FileIO
    os.open = os_open
    # modules loaded before now keep references of their own (bz2._builtin_open, tokenize._builtin_open, behind
    # bz2.open, tokenize.open and linecache): they get the guarded ones too
    guarded = {id(real_open): open_, id(real_file_io): FileIO}
    for module in list(sys.modules.values()):
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if id(value) in guarded:
                setattr(module, attr, guarded[id(value)])

    def checked(name, params):
        """os.NAME with its path parameters `params` (positional or by keyword) checked; a path that is an fd
        (os.chmod(fd), os.fchmod(fd)) is checked by the file it has open."""
        real = getattr(os, name)

        def f(*args, **kwargs):
            fds = (kwargs.get("src_dir_fd", kwargs.get("dir_fd")), kwargs.get("dst_dir_fd", kwargs.get("dir_fd")))
            for i, (param, fd) in enumerate(zip(params, fds)):
                p = args[i] if i < len(args) else kwargs.get(param)
                if p is None:  # not given: the real function raises its own TypeError
                    continue
                if not (_fd_inside_work(p) if isinstance(p, int) else _inside_work(p, fd)):
                    raise _outside(f"os.{name}", p)
            return real(*args, **kwargs)
        setattr(os, name, f)

    def unlisted(name):
        """os.listdir / os.scandir that do not list another candidate's files."""
        real = getattr(os, name)

        def f(path=".", *args, **kwargs):
            if path is not None and _sandbox_own(path):
                raise _not_yours(f"os.{name}", path)
            return real(path, *args, **kwargs)
        setattr(os, name, f)

    unlisted("listdir")
    unlisted("scandir")
    one, two = ("path",), ("src", "dst")
    for name, params in (("remove", one), ("unlink", one), ("rmdir", one), ("mkdir", one), ("makedirs", ("name",)),
                         ("chmod", one), ("lchmod", one), ("chown", one), ("lchown", one), ("truncate", one),
                         ("utime", one), ("mkfifo", one), ("mknod", one), ("setxattr", one), ("removexattr", one),
                         ("fchmod", ("fd",)), ("fchown", ("fd",)), ("rename", two), ("replace", two),
                         ("link", two), ("symlink", two)):
        if hasattr(os, name):
            checked(name, params)
    guard_sqlite()


def guard_sqlite():
    """sqlite3 opens files in C, past open(): the database a connection names, and those SQL names itself
    (ATTACH DATABASE 'x', VACUUM INTO 'x'). Every connection (sqlite3.connect, sqlite3.dbapi2.connect,
    sqlite3.Connection(...)) is a guarded Connection whose path is checked and whose authorizer refuses an
    ATTACH of a file outside the working directory; the code's own authorizer runs after that one."""
    try:
        import sqlite3
        import sqlite3.dbapi2
        import _sqlite3
    except ImportError:  # a Python built without it: nothing to guard
        return
    real_connection, real_connect = sqlite3.Connection, sqlite3.connect

    def check_database(database, args, kwargs):
        name = os.fsdecode(database) if not isinstance(database, int) else database
        uri = kwargs.get("uri", args[6] if len(args) > 6 else False)  # connect(database, timeout, ..., uri)
        if uri or (name not in (":memory:", "") and not _inside_work(name)):
            raise _outside("sqlite3.connect", database)

    def attach_inside(action, name, *_):
        """ATTACH and VACUUM INTO ask for SQLITE_ATTACH with the file's name (None when it is not a literal:
        refused, as there is no telling where it goes)."""
        if action != sqlite3.SQLITE_ATTACH or name in (":memory:", ""):
            return sqlite3.SQLITE_OK
        inside = isinstance(name, str) and not name.startswith("file:") and _inside_work(name)
        return sqlite3.SQLITE_OK if inside else sqlite3.SQLITE_DENY

    class Connection(real_connection):
        def __init__(self, database, *args, **kwargs):
            check_database(database, args, kwargs)
            super().__init__(database, *args, **kwargs)
            super().set_authorizer(attach_inside)

        def set_authorizer(self, authorizer):
            if authorizer is None:
                return super().set_authorizer(attach_inside)

            def both(*args):
                verdict = attach_inside(*args)
                return authorizer(*args) if verdict == sqlite3.SQLITE_OK else verdict
            return super().set_authorizer(both)

    def connect(database, *args, **kwargs):
        check_database(database, args, kwargs)
        if len(args) < 5:  # factory is connect's sixth parameter; a factory of the code's own subclasses ours
            kwargs.setdefault("factory", Connection)
        return real_connect(database, *args, **kwargs)

    for mod in (sqlite3, sqlite3.dbapi2, _sqlite3):
        mod.connect, mod.Connection = connect, Connection


# ---- the working directory's files, per candidate -----------------------------------------------------------
def _as_holder(fn):
    """Let the holder's own file moves (outside WORK, where the guards stop cells) through the write guards."""
    def moving_files(*args, **kwargs):
        global _holder_moving_files
        _holder_moving_files = True
        try:
            return fn(*args, **kwargs)
        finally:
            _holder_moving_files = False
    return moving_files


class WorkingFiles:
    """Gives each pending candidate its own copy of the working directory's files, at the same path, so that
    self-consistency candidates cannot see or spoil each other's files, and a losing, crashed or killed
    candidate's writes vanish with its variables.

    Candidates run one after another, so one path serves them all: before the first candidate the committed
    files are copied to ROOT/.base; each candidate runs in WORK (the first in the committed files themselves,
    later ones in a fresh copy of .base), which is renamed to ROOT/.candidate-ID when it reports. Commit
    renames the winner's copy back to WORK (the winner's process, whose cwd is that directory, sees no change
    of path); discard puts .base back. The copies are the price: small for the few files an agent writes."""

    BASE = os.path.join(ROOT, ".base")

    @staticmethod
    def _candidate(cid):
        return os.path.join(ROOT, f".candidate-{cid}")

    @_as_holder
    def before_candidate(self):
        if not os.path.isdir(self.BASE):
            _copy_files(WORK, self.BASE)
            _reopen_kept_files(self.BASE)  # the first candidate works on WORK's files themselves
        else:
            _remove(WORK)
            _copy_files(self.BASE, WORK)

    @_as_holder
    def after_candidate(self, cid, reported):
        if not reported:  # it died while writing: its files are not wanted
            _remove(WORK)
        elif os.path.isdir(WORK) and not os.path.islink(WORK):
            os.rename(WORK, self._candidate(cid))
        else:  # the code removed or replaced the directory itself
            _remove(WORK)
            os.mkdir(self._candidate(cid))

    @_as_holder
    def settle(self, cids, keep=None, pending=False):
        """Remove the copies of candidates `cids` except `keep`. Unless others are still pending, WORK then
        becomes the winner's files (keep) or the committed ones."""
        for cid in cids:
            if cid != keep:
                _remove(self._candidate(cid))
        if not pending and os.path.isdir(self.BASE):
            _remove(WORK)
            if keep is not None:
                os.rename(self._candidate(keep), WORK)
                _remove(self.BASE)
            else:
                os.rename(self.BASE, WORK)


def _copy_files(src, dst):
    """shutil.copytree that leaves out what cannot be copied (a FIFO, a file the code made unreadable) instead of
    failing: the holder must not die of what a cell left in its directory."""
    import shutil
    try:
        shutil.copytree(src, dst, symlinks=True)
    except shutil.Error:  # raised at the end, after everything else was copied
        pass
    except OSError:  # src itself cannot be read
        os.makedirs(dst, exist_ok=True)


def _remove(path):
    """Delete a file or a tree; what cannot be deleted (a directory a cell made read-only) is moved aside."""
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
    if os.path.lexists(path):  # a fresh name: one settle may set aside several copies (a loser's and .base)
        n = 0
        while os.path.lexists(aside := os.path.join(ROOT, f".removed-{os.getpid()}-{n}")):
            n += 1
        os.rename(path, aside)


FILES = WorkingFiles()
CWD = "."  # the holder's working directory, relative to WORK (a cell may chdir): each candidate starts there


def _cwd_in_work():
    try:
        here = os.getcwd()
    except OSError:  # the code removed the directory it was in
        return "."
    return os.path.relpath(here, WORK) if here == WORK or here.startswith(WORK + os.sep) else here


def _stop_threads_left_running():
    """Threads a cell started do not outlive it (like its alarms): they would run on in the holder, beside the
    next candidates, for ever. Python cannot kill a thread, so this process forks itself — the child has only
    this thread and the same memory — and exits, taking its threads along; the child carries on. What the
    threads did until now is kept."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = threading.active_count()
    if threads > 1:
        gone_r, gone_w = _pipe()
        try:
            child = _fork()
        except OSError:  # no process to spare: keep the threads rather than lose the cell
            _close(gone_r)
            _close(gone_w)
            return
        if child != 0:
            _exit(0)
        _close(gone_w)
        _read(gone_r, 1)  # EOF once the old process is gone, threads and all: none writes after our report
        _close(gone_r)
        global _TOOL_CALL
        _TOOL_CALL = threading.Lock()  # a thread that held it is gone with the old process


def _copy_of(path, into):
    """The same file in the copy of the working directory `into`, when `path` lies in one of the copies (WORK,
    .base, .candidate-N, or one set aside); None for anything else (the log, a file outside)."""
    rel = os.path.relpath(path, ROOT).split(os.sep, 1)
    if len(rel) == 2 and (rel[0] in ("work", ".base") or rel[0].startswith((".candidate-", ".removed-"))):
        return os.path.join(into, rel[1])
    return None


def _reopen_kept_files(into):
    """Open again, in the copy of the working directory `into`, every file kept open from an earlier cell (a
    variable `f = open(...)`). A fork shares open files with its parent: one position for all candidates, and
    the file is wherever the holder opened it, not in this candidate's copy. The holder moves its own to .base
    (the committed files) before a round, each candidate to its copy; same flags, same position, same fd, so
    the Python file objects go on working. A file the code deleted stays as it is."""
    import fcntl
    import stat
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
            path = _copy_of(os.readlink(f"/proc/self/fd/{fd}"), into)
            if path is None or not stat.S_ISREG(st.st_mode) or st.st_nlink == 0:
                continue
            own = _open(path, fcntl.fcntl(fd, fcntl.F_GETFL) & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
        except OSError:  # closed meanwhile (the listing's own fd), or no file at that path in the copy
            continue
        try:
            _lseek(own, _lseek(fd, 0, os.SEEK_CUR), os.SEEK_SET)
            _dup2(own, fd, inheritable=os.get_inheritable(fd))
        except OSError:
            pass
        finally:
            _close(own)


# ---- running a cell ------------------------------------------------------------------------------------------
class FinalAnswer(BaseException):
    """Raised by final_answer() to end the cell at once (a BaseException, so `except Exception` cannot eat it)."""


class BoundedWriter(io.TextIOBase):
    """print() target that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit):
        self.parts, self.kept, self.dropped, self.limit = [], 0, 0, limit

    def write(self, s):
        if not isinstance(s, str):  # as a real text stream does (bytes here broke text() after the cell)
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(s[:room])
            self.kept += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self):
        return "".join(self.parts)


TOOLS = {}            # name -> the function the code calls (the agent's tools and final_answer)
SIGNAL_HANDLERS = {}  # signal -> its handler before any cell ran


_TOOL_CALL = threading.Lock()  # one call on the wire at a time: threads calling tools at once would read
                               # each other's replies


def make_tool(name):
    def tool(*args, **kwargs):
        with _TOOL_CALL:
            send({"op": "call", "tool": name, "args": list(args), "kwargs": kwargs})
            reply = receive()
        if "error" in reply:
            raise RuntimeError(f"{name}() failed: {reply['error']}")
        return reply["ok"]
    tool.__name__ = name
    return tool


def final_answer(answer):
    raise FinalAnswer(answer)


def _short_str(value, limit):
    """str(value) cut to `limit` characters, or None with the error if str() itself fails."""
    try:
        text = str(value)
    except BaseException as e:  # a __str__ that raises, an int too long to print
        return None, type(e).__name__ + _message(e, limit, ": ")
    return _cut(text, limit), None


def _cut(text, limit):
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def _message(e, limit, sep):
    """sep + str(e) cut to `limit` characters ("" when empty); an error's text goes to the model like printed
    output, so it is cut the same way, and one whose __str__ fails must not take the cell's process down."""
    try:
        text = str(e)
    except BaseException as inner:
        text = f"<its message cannot be shown: {type(inner).__name__}>"
    return sep + _cut(text, limit) if text else ""


def run_cell(code, state):
    """Execute `code` in `state`; the value of a trailing expression is the cell's output value."""
    limit = CONFIG["max_output"]
    out = BoundedWriter(limit)
    result = {"op": "result", "output": "", "value": None, "final": None, "error": None, "breach": None,
              "called_final": False}
    state.update(TOOLS)  # a tool name the code rebound in an earlier cell (final_answer = ...) works again
    sys.stdout = sys.stderr = out
    try:
        tree = ast.parse(code)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<code>", "exec"), state)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<code>", "eval"), state)
            if value is not None:
                result["value"], result["error"] = _short_str(value, CONFIG["max_output"])
    except FinalAnswer as fa:
        value = fa.args[0] if fa.args else None
        result["called_final"] = True
        if isinstance(value, (bool, float)) or value is None or (isinstance(value, int) and abs(value) < 1 << 63):
            result["final"] = value
        else:
            result["final"], error = _short_str(value, CONFIG["max_output"])
            if error:
                result["called_final"], result["error"] = False, f"final_answer(): the answer cannot be shown ({error})"
    except MemoryError:
        result["error"] = f"MemoryError: the code exceeded the memory limit of {CONFIG['memory_bytes'] >> 20} MB"
        result["breach"] = "memory"
    except SyntaxError as e:
        result["error"] = f"SyntaxError: {e.msg} (line {e.lineno}): {_cut((e.text or '').strip(), limit)}"
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<code>"]
        where = f" (line {frames[-1].lineno})" if frames else ""
        result["error"] = f"{type(e).__name__}{_message(e, limit, ': ') or ': '}{where}"
    except BaseException as e:  # exit(), sys.exit(), raise KeyboardInterrupt: the cell ends, the sandbox lives
        result["error"] = (f"{type(e).__name__}{_message(e, limit, ': ')}: the code tried to exit; the cell "
                           "was stopped there (call final_answer(x) to finish)")
    finally:
        sys.stdout = sys.stderr = sys.__stdout__
        _reset_signals()
    result["output"], result["dropped"] = out.text(), out.dropped
    return result


def _reset_signals():
    """Cancel timers and restore the signal handlers a cell set (signal.alarm as a "timeout helper"): firing
    later, they would strike this process while it holds the state, between cells."""
    signal.alarm(0)
    for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
        signal.setitimer(timer, 0)
    for sig, handler in SIGNAL_HANDLERS.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


def candidate(msg, state, ctrl_r, done_w):
    global CWD
    try:
        os.chdir(os.path.join(WORK, CWD))
    except OSError:
        os.chdir(WORK)
    _reopen_kept_files(WORK)
    send({"op": "started", "id": msg["id"], "pid": os.getpid()})
    cpu = int(msg["timeout"]) + 2  # a CPU-time backstop; the parent's wall-clock kill is the main limit
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))
    result = run_cell(msg["code"], state)
    _stop_threads_left_running()
    result["id"] = msg["id"]
    send(result)
    _write(done_w, b"1")
    _close(done_w)
    decision = _read(ctrl_r, 1)
    _close(ctrl_r)
    if decision != b"c" or result["breach"]:
        _exit(0)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    CWD = _cwd_in_work()  # the old holder has renamed our copy of the files to WORK by now
    send({"op": "ack", "pid": os.getpid()})  # the parent waits for the old holder, and for us in our turn
    serve(state)  # this process now holds the state


def serve(state):
    pending = {}  # candidate id -> (pid, ctrl fd)
    while True:
        msg = receive()
        op = msg.get("op")  # none: the answer to a tool call of a thread that ended with its cell
        if op == "run":
            FILES.before_candidate()
            ctrl_r, ctrl_w = _pipe()
            done_r, done_w = _pipe()
            pid = _fork()
            if pid == 0:
                _close(ctrl_w)
                _close(done_r)
                for _, fd in pending.values():
                    _close(fd)
                candidate(msg, state, ctrl_r, done_w)
                _exit(0)
            _close(ctrl_r)
            _close(done_w)
            finished = _read(done_r, 1)  # EOF: it died before reporting
            _close(done_r)
            FILES.after_candidate(msg["id"], bool(finished))
            if finished:
                pending[msg["id"]] = (pid, ctrl_w)
            else:
                _close(ctrl_w)
                _, status = _waitpid(pid, 0)
                if not pending:
                    FILES.settle([])
                send({"op": "died", "id": msg["id"], "status": status})
        elif op == "drop":  # one pending candidate is not wanted (it breached a limit)
            pid, fd = pending.pop(msg["id"], (None, None))
            if pid is not None:
                _end(pid, fd, b"d")
                FILES.settle([msg["id"]], pending=bool(pending))
            send({"op": "ack"})
        elif op in ("commit", "discard"):
            keep = msg.get("id") if op == "commit" else None
            keep = keep if keep in pending else None
            for cid, (pid, fd) in pending.items():
                if cid != keep:
                    _end(pid, fd, b"d")
            FILES.settle(list(pending), keep)
            if keep is not None:  # the winner serves from now on: this process is done (waiting for the winner
                _write(pending[keep][1], b"c")  # to exit, as it once did, kept one process per committed cell)
                _exit(0)
            pending = {}
            send({"op": "ack"})


def _end(pid, ctrl_fd, decision):
    """Tell a pending candidate its fate (c: commit, d: drop) and wait for it to exit."""
    _write(ctrl_fd, decision)
    _close(ctrl_fd)
    _waitpid(pid, 0)


def main():
    set_limits()
    network = isolate_network()
    guard_network()
    guard_processes()
    guard_writes()
    guard_memory_files()
    os.environ.update(HOME=WORK, TMPDIR=WORK)
    TOOLS.update({name: make_tool(name) for name in CONFIG["tools"]}, final_answer=final_answer)
    state = {"__name__": "__main__", "__builtins__": builtins, **TOOLS}
    SIGNAL_HANDLERS.update({sig: signal.getsignal(sig) for sig in signal.valid_signals()
                            if signal.getsignal(sig) is not None and sig not in (signal.SIGKILL, signal.SIGSTOP)})
    send({"op": "ready", "network": network, "pid": os.getpid()})
    serve(state)


if __name__ == "__main__":
    main()
