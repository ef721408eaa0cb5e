"""The `tiny` tier's model: a SentencePiece tokenizer trained on the manuals and a small Llama-shaped decoder
initialised at random, saved as an ordinary HF checkpoint directory (config.json + model.safetensors +
tokenizer.model + tokenizer_config.json) so that every later stage — training, the agent, `infer.py`,
transformers itself — loads it like any downloaded model.

The tokenizer has ChatML's `<|im_start|>`/`<|im_end|>` as control symbols, so the chat template, the loss mask
and the stop ids work exactly as for Qwen or SmolLM2. Digits are not split and the manual's identifiers are
frequent, so a parameter name or a default value is one or a few pieces: copying them from an observation is
what the small agent must learn.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig
from ..model import Transformer
from ..weights import save_model

CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
                   "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|im_start|>assistant\\n' }}{% endif %}")


@dataclass
class TinyShape:
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 2048
    vocab_size: int = 3000


def train_sentencepiece(texts: list[str], out_dir, vocab_size: int = 3000, seed: int = 0) -> Path:
    """tokenizer.model (BPE, byte fallback, ChatML control symbols) + tokenizer_config.json in out_dir."""
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [line for t in texts for line in t.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, split_digits=False, max_sentence_length=16384,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, control_symbols=["<|im_start|>", "<|im_end|>"],
        remove_extra_whitespaces=False, normalization_rule_name="identity", hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    tmp = out / "tokenizer.model.tmp"
    tmp.write_bytes(model.getvalue())
    tmp.replace(out / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "<|im_end|>",
              "unk_token": "<unk>", "pad_token": None, "add_bos_token": False, "add_eos_token": False,
              "chat_template": CHATML_TEMPLATE, "model_max_length": 2048}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out / "tokenizer.model"


def init_tiny_model(out_dir, vocab_size: int, bos_id: int, eos_id: int, shape: TinyShape | None = None,
                    seed: int = 0) -> Path:
    """A random Llama-shaped decoder (GPT-2 style init: N(0, 0.02), residual projections scaled by
    1/sqrt(2 * layers)) written as a HF checkpoint next to the tokenizer files already in out_dir."""
    shape = shape or TinyShape()
    cfg = ModelConfig(architecture="LlamaForCausalLM", vocab_size=vocab_size, hidden_size=shape.hidden_size,
                      intermediate_size=shape.intermediate_size, num_hidden_layers=shape.num_hidden_layers,
                      num_attention_heads=shape.num_attention_heads,
                      num_key_value_heads=shape.num_key_value_heads, rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_position_embeddings=shape.max_position_embeddings, tie_word_embeddings=True,
                      bos_token_id=bos_id, eos_token_id=eos_id)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    resid_std = 0.02 / math.sqrt(2 * cfg.num_hidden_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, resid_std)
            else:
                p.normal_(0.0, 0.02)
    return save_model(model, out_dir)
