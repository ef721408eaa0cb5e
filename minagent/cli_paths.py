"""Output paths given on the command line, checked before any work starts.

Why: `--out runs/x/results.jsonl` where `runs/x` is a file used to end (after a whole exam, or after the
recipe's first stages) in a bare FileExistsError / NotADirectoryError traceback from deep inside mkdir that
named neither the flag nor which part of the path was the problem.
"""
from __future__ import annotations

from pathlib import Path


def file_in_the_way(path: str | Path) -> Path | None:
    """The nearest existing ancestor of `path` (not `path` itself) when it is not a directory: nothing can be
    created under it. None when the path can be made (missing ancestors are created by the writers)."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_path_problem(flag: str, path: str | Path) -> str | None:
    """One line naming the flag, the path and the file in the way; None when nothing is in the way."""
    blocker = file_in_the_way(path)
    if blocker is None:
        return None
    return f"{flag} {path}: {blocker} is a file, not a directory; nothing can be written under it"
