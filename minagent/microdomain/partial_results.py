"""An exam's answers so far, kept on disk as they come, so an interrupted `infer.py exam` resumes.

A long exam (hundreds of agent runs, SAG's N samples a step) can take hours on a CPU; a kill, a crash or a
laptop lid must not cost the questions already answered. Each answered question is appended to
RESULTS.jsonl.partial as {"item": the exam line, "row": its result} and flushed. A rerun with the same
arguments reuses every row whose exam line is unchanged (a question whose text, choices or gold answer were
edited is asked again) and asks only the rest; the finished results are then written to RESULTS.jsonl (a
temporary name, renamed) and the partial file removed.

The partial file's first line holds the run's settings (model, mode, index, search k, system prompt, agent
settings): answers from a different run are never mixed in. A rerun with other settings is refused, naming
what differs, rather than deleting hours of work: delete the .partial file to start over. A last line cut
short by the kill is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

try:
    import fcntl  # the lock that keeps two runs off one file (POSIX; elsewhere runs are trusted not to collide)
except ImportError:
    fcntl = None

FORMAT = "minagent-exam-partial-1"


def files_fingerprint(path) -> str | None:
    """A digest of the names, sizes and modification times of the files at `path` (a file or a directory
    tree), None when it is no path (an http:// model): a model retrained or an index rebuilt at the same path
    changes the answers, so it is part of the settings."""
    root = Path(str(path))
    if not root.exists():
        return None
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _flat(settings, prefix: str = "") -> dict:
    """Nested settings as dotted keys ({"agent": {"max_steps": 4}} -> {"agent.max_steps": 4}): a refusal then
    names the one agent setting that differs, not two copies of the whole agent configuration to compare."""
    if not isinstance(settings, dict):
        return {prefix: settings}
    out = {}
    for key, value in settings.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flat(value, name) if isinstance(value, dict) and value else {name: value})
    return out


class PartialResults:
    def __init__(self, out_path, settings: dict):
        self.path = Path(out_path).with_name(Path(out_path).name + ".partial")
        self.settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the file
        self.done: dict[str, tuple[dict, dict]] = {}  # question id -> (exam item, result row)

    def load(self) -> int:
        """Read the answers of an earlier, interrupted run with these settings; the number found."""
        if not self.path.is_file():
            return 0
        self._refuse_if_in_use()
        lines = self.path.read_bytes().split(b"\n")
        try:
            head = json.loads(lines[0])
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a minagent exam's partial results (first line: {lines[0][:80]!r}); "
                             "move it away or choose another --out")
        theirs, ours = _flat(head.get("settings", {})), _flat(self.settings)
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if differ:
            what = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in differ)
            raise ValueError(f"{self.path} holds the answers of an interrupted run with other settings ({what}). "
                             "Rerun with those settings to resume it, or delete the file to start over")
        for n, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self.done[str(entry["item"]["id"])] = (entry["item"], entry["row"])
            except (ValueError, KeyError, TypeError):
                if n < len(lines):  # only the last line, with no newline after it, may be cut short
                    raise ValueError(f"{self.path}:{n}: not a result line; delete the file to start over") from None
        return len(self.done)

    def answered(self, item: dict) -> dict | None:
        """The earlier result for this exam line, if it was asked exactly as it stands now."""
        got = self.done.get(str(item["id"]))
        return got[1] if got is not None and got[0] == json.loads(json.dumps(item, default=str)) else None

    def _refuse_if_in_use(self):
        """A run appending to the file holds a lock on it: a second run on the same --out would replace the file
        under it (and both would lose answers)."""
        if fcntl is None or not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"{self.path}: another exam run is writing these results now; wait for it to "
                                 "end or choose another --out") from None

    def open(self):
        """Start appending: the kept answers are rewritten after the settings line (dropping a torn line)."""
        self._refuse_if_in_use()
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)  # as write_jsonl makes RESULTS.jsonl's
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"format": FORMAT, "settings": self.settings}) + "\n")
            for item, row in self.done.values():
                f.write(json.dumps({"item": item, "row": row}, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        if fcntl is not None:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file is closed
        return self

    def add(self, item: dict, row: dict):
        self._file.write(json.dumps({"item": item, "row": row}, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def finish(self):
        """The results file is written: the partial answers are no longer needed."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def close(self):
        if getattr(self, "_file", None) is not None and not self._file.closed:
            self._file.close()
