"""On-disk index format: a directory of .npy arrays and JSON files, described by a versioned manifest.

Writing is atomic at the directory level: everything goes into a temporary sibling directory first and the
finished directory is swapped into place, so a crash or an error leaves the old index or the new one — never a
half-written one, and never none where Linux can exchange two paths in one step (renameat2, Linux 3.15+;
elsewhere a kill between the two renames leaves the old index at `.NAME.old-*` beside it, and opening NAME says
so). The manifest, written last, records the format name and version and each file's size and CRC32; loading
checks all of them, so a truncated, corrupted or foreign file is reported by name instead of
producing wrong search results. Arrays are plain .npy read with allow_pickle=False (no code execution).
"""

import ctypes
import glob
import json
import os
import shutil
import tempfile
import zlib

import numpy as np

from .errors import IndexFormatError, IndexVersionError

FORMAT = "minagent-retrieval-index"
VERSION = 1
MANIFEST = "manifest.json"


def _crc32(path):
    crc = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                return crc
            crc = zlib.crc32(chunk, crc)


def is_index_dir(path):
    return os.path.isfile(os.path.join(path, MANIFEST))


def write_index(out_dir, meta, arrays, json_files):
    """Write arrays (name -> ndarray, saved as name.npy) and json_files (name -> JSON-able object or a list of
    dicts for names ending in .jsonl) plus the manifest, atomically replacing out_dir."""
    # A symlinked out_dir (index -> /data/index-v3) is written where it points: swapping the link itself would
    # leave a real directory in its place and the link at a hidden temporary name beside it.
    out_dir = os.path.realpath(out_dir) if os.path.islink(out_dir) else os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise IndexFormatError(f"index path {out_dir!r} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not is_index_dir(out_dir):
        raise IndexFormatError(f"{out_dir!r} is a non-empty directory that is not a minagent index; "
                               "refusing to overwrite it (choose another --out)")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)        # mkdtemp makes it private; the index should look like any dir
        files = {}
        for name, arr in arrays.items():
            fname = f"{name}.npy"
            np.save(os.path.join(tmp, fname), np.ascontiguousarray(arr), allow_pickle=False)
            files[fname] = None
        for fname, obj in json_files.items():
            with open(os.path.join(tmp, fname), "w", encoding="utf-8") as f:
                if fname.endswith(".jsonl"):
                    for row in obj:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                else:
                    json.dump(obj, f, ensure_ascii=False)
            files[fname] = None
        for fname in files:
            p = os.path.join(tmp, fname)
            files[fname] = {"bytes": os.path.getsize(p), "crc32": _crc32(p)}
        manifest = {"format": FORMAT, "version": VERSION, **meta, "files": files}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, ensure_ascii=False)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a, b) -> bool:
    """Swap two existing paths in one system call (Linux renameat2 RENAME_EXCHANGE); False where the C library,
    kernel or file system cannot, and the caller falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # (TypeError: Windows' CDLL takes no None)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _swap_into_place(tmp, out_dir):
    if not os.path.exists(out_dir):
        os.rename(tmp, out_dir)
        return
    if _exchange(tmp, out_dir):  # out_dir is the new index now, tmp the old one
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(index_dir):
    """The manifest of an index directory, after checking format and version."""
    if not os.path.isdir(index_dir):
        parent, name = os.path.split(os.path.abspath(index_dir))
        set_aside = sorted(glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.old-*")))
        if set_aside:  # a rebuild was killed between its two renames (systems without an atomic exchange)
            raise FileNotFoundError(f"index directory {index_dir!r} does not exist, but {set_aside[-1]!r} holds "
                                    f"the index a killed rebuild set aside: rename it back to {index_dir!r}")
        raise FileNotFoundError(f"index directory {index_dir!r} does not exist "
                                "(build one with `python infer.py index --corpus DIR --out INDEX_DIR`)")
    path = os.path.join(index_dir, MANIFEST)
    if not os.path.isfile(path):
        raise IndexFormatError(f"{index_dir!r} has no {MANIFEST}: not a minagent retrieval index")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path}: corrupt manifest ({e}); rebuild the index") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexFormatError(f"{path}: field 'format' is {found!r}, expected {FORMAT!r}")
    version = manifest.get("version")
    if version != VERSION:
        raise IndexVersionError(f"{path}: index format version {version!r}, this minagent reads version {VERSION}; "
                                "rebuild it with `python infer.py index --corpus DIR --out INDEX_DIR`")
    if not isinstance(manifest.get("files"), dict):
        raise IndexFormatError(f"{path}: field 'files' missing or not an object")
    return manifest


def _checked_path(index_dir, manifest, fname):
    info = manifest["files"].get(fname)
    path = os.path.join(index_dir, fname)
    if not isinstance(info, dict):
        raise IndexFormatError(f"{os.path.join(index_dir, MANIFEST)}: "
                               + (f"no entry for {fname}" if info is None else
                                  f"entry for {fname} is {info!r}, expected an object with bytes and crc32"))
    if not os.path.isfile(path):
        raise IndexFormatError(f"{path}: file missing from the index")
    size = os.path.getsize(path)
    if size != info.get("bytes"):
        raise IndexFormatError(f"{path}: {size} bytes, manifest says {info.get('bytes')} (truncated or modified)")
    if _crc32(path) != info.get("crc32"):
        raise IndexFormatError(f"{path}: checksum mismatch (file corrupted or modified); rebuild the index")
    return path


def load_array(index_dir, manifest, name):
    path = _checked_path(index_dir, manifest, f"{name}.npy")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise IndexFormatError(f"{path}: not a readable .npy array ({e})") from None


def load_json(index_dir, manifest, fname):
    path = _checked_path(index_dir, manifest, fname)
    try:
        with open(path, encoding="utf-8") as f:
            if fname.endswith(".jsonl"):
                return [json.loads(line) for line in f if line.strip()]
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path}: corrupt JSON ({e})") from None
