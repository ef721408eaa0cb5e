"""Reading a user's JSONL file (trajectories, CPT documents, exam questions) one checked line at a time.

Why one reader: these files are written by other tools (a teacher's log, a scraper, a spreadsheet export) and
a bad line in a 10k-line file must come back as `file:line: what is wrong`, never as a bare UnicodeDecodeError
or TypeError from somewhere inside, and `on_bad_line="skip"` must be able to step over every kind of bad line.
Each line is decoded on its own (one stray Latin-1 byte spoils its line, not the file), a UTF-8 byte-order
mark on the first line is dropped (as Windows editors write it), and strings with lone surrogates (what
`\\ud800` escapes in JSON give, and what some tools log) are refused here rather than failing later, far from
the line, when the text is encoded for the tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

ON_BAD_LINE = ("fail", "skip")


def read_jsonl(path: str | Path, check: Callable, *, on_bad_line: str = "fail", log=print,
               error: type[Exception] = ValueError, hint: str = "") -> tuple[list, int]:
    """([(where, check(obj)) for each usable line], number of bad lines skipped); blank lines are ignored.

    check(obj) returns what to keep (None: keep nothing, silently) or raises ValueError / TypeError saying
    what is wrong with the line. on_bad_line "fail" raises `error("file:line: ..." + hint)` at the first bad
    line; "skip" logs it and goes on.
    """
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: " + ("a directory, not" if path.is_dir() else "no such file; expected")
                                + " a JSONL file (one JSON object per line)")
    out, bad = [], 0
    with open(path, "rb") as f:
        # bytes.splitlines ends a line at \n, \r\n or a lone \r, as text mode would (old Mac exports)
        for n, raw in enumerate((line for chunk in f for line in chunk.splitlines()), 1):
            where = f"{path}:{n}"
            try:
                obj = _parse(raw, first=n == 1)
                if obj is _BLANK:
                    continue
                kept = check(obj)
            except (ValueError, TypeError) as e:
                if on_bad_line == "fail":
                    raise error(f"{where}: {e}{hint}") from None
                log(f"skipped {where}: {e}")
                bad += 1
                continue
            if kept is not None:
                out.append((where, kept))
    return out, bad


_BLANK = object()


def parse_jsonl_line(raw: bytes, first: bool = False):
    """One line's JSON value, checked as read_jsonl checks it (None for a blank line); ValueError saying what
    is wrong. first: the file's first line (a UTF-8 byte-order mark is dropped there)."""
    obj = _parse(raw, first)
    return None if obj is _BLANK else obj


def _parse(raw: bytes, first: bool):
    """One line's JSON value, or _BLANK; ValueError saying what is wrong."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    if first and line.startswith("\ufeff"):
        line = line[1:]
    if not line.strip():
        return _BLANK
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ValueError("not usable JSON (nested too deeply)") from None
    if "\\u" in line:  # only escapes can make a lone surrogate: decoded text cannot hold one
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone surrogate escape (\\ud800-\\udfff): not encodable text") from None
    return obj
