"""Training test fixtures: a tiny random Llama built by transformers, with a real byte-level BPE tokenizer.

The tokenizer is the Qwen2-layout BPE that HF `tokenizers` trains in tests/tokenizer_tiny.py (NFC, Qwen's split
regex, byte-level; ChatML special tokens) with Qwen2.5's published chat template, so the data path runs a real
tokenizer.json and template. Its 2,000-token vocabulary keeps the loss cheap: a training step of the 2-layer,
width-32 model takes milliseconds on a CPU. (The loss-mask test also runs SmolLM2's real tokenizer.)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers

import tokenizer_templates as templates
import tokenizer_tiny

DATA = Path(__file__).parent / "data"
TRAJECTORIES = DATA / "trajectories.jsonl"
MANUALS = DATA / "manuals"


def tiny_checkpoint(out: Path, seed: int = 0) -> Path:
    """config.json + model.safetensors + tokenizer.json + tokenizer_config.json in `out` (built once)."""
    if (out / "tokenizer_config.json").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    spec = tokenizer_tiny.qwen_style()
    (tmp / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    vocab = max(t["id"] for t in spec["added_tokens"]) + 1
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": templates.QWEN25, "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>"}), encoding="utf-8")
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0, 0.05)
    model.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # built concurrently by another test module
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path
