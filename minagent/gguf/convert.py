"""Converting a GGUF model into a HF-layout checkpoint directory that `minagent.load_model` (and transformers) load.

Three things differ between llama.cpp's layout and HF's:

1. Names: `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj.weight`, and so on (tables below).
2. RoPE layout, Llama only: llama.cpp's converter reorders the rows of every Llama q/k projection, per head,
   from HF's rotate-half order (pairs (i, i + d/2)) to the interleaved order ggml rotates (pairs (2i, 2i+1)):
   row h*d + 2i + j of the GGUF tensor is row h*d + j*d/2 + i of the HF one. `unpermute_rope_rows` undoes
   that. Qwen2/Qwen3 GGUFs are written unpermuted (ggml's "NEOX" RoPE mode is rotate-half already).
3. Config: HF's config.json fields come from `{arch}.*` metadata keys; tied embeddings are implied by the
   absence of an `output.weight` tensor.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .reader import GGUFError, GGUFFile
from .tokenizer import special_token_ids, write_json, write_tokenizer_files

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16, "fp16": torch.float16}
_REQUIRED = object()
FLOAT64 = 12  # the gguf value type id of a float64 metadata value


def _meta(g: GGUFFile, key: str, default=_REQUIRED):
    if key in g.metadata:
        return g.metadata[key]
    if default is _REQUIRED:
        raise GGUFError(f"{g.path}: missing metadata key '{key}'")
    return default


def architecture(g: GGUFFile) -> str:
    arch = _meta(g, "general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{g.path}: general.architecture is '{arch}'; supported: {', '.join(ARCHITECTURES)}")
    return arch


def hf_tensor_name(gguf_name: str, where: str = "gguf") -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; unknown names are an error."""
    stem, _, suffix = gguf_name.rpartition(".")
    parts = stem.split(".")
    if suffix in ("weight", "bias"):
        if len(parts) == 1 and parts[0] in GLOBAL_NAMES:
            return f"{GLOBAL_NAMES[parts[0]]}.{suffix}"
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
            return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}.{suffix}"
    raise GGUFError(f"{where}: tensor '{gguf_name}' has no HF counterpart known to this converter")


def unpermute_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's per-head interleaving of q/k rows (works for a weight [out, in] or a bias [out])."""
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _float_from_f32(x) -> float:
    """A float32 metadata value as the decimal it was written from (9.999999747e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def _float_meta(g: GGUFFile, key: str, default=_REQUIRED) -> float:
    """Metadata `key` as a float: a FLOAT32 as the decimal it was written from; a FLOAT64 as stored (rounding it
    through float32 moved e.g. an rms eps of 1.234567890123e-06 by ~1e-14)."""
    value = _meta(g, key, default)
    if g.metadata_types.get(key) == FLOAT64:
        return float(value)
    return _float_from_f32(value)


def _check_full_rotary(g: GGUFFile, arch: str, head_dim: int):
    """HF's Llama/Qwen2/Qwen3 rotate every dimension of a head; `{arch}.rope.dimension_count` below the head size
    means llama.cpp rotates only that many (qwen2/qwen3) or refuses the file (llama: "invalid n_rot"), so a
    converted model would silently compute something else."""
    key = f"{arch}.rope.dimension_count"
    n_rot = g.metadata.get(key, head_dim)
    if n_rot != head_dim:
        raise GGUFError(f"{g.path}: {key} is {n_rot!r}, expected the head size {head_dim} (partial rotary "
                        "embeddings are not supported)")


def hf_config_from_gguf(g: GGUFFile, dtype: str = "float32") -> dict:
    """HF config.json for the model in `g` (LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM)."""
    arch = architecture(g)
    m = lambda key, default=_REQUIRED: _meta(g, f"{arch}.{key}", default)  # noqa: E731
    f = lambda key, default=_REQUIRED: _float_meta(g, f"{arch}.{key}", default)  # noqa: E731
    if "token_embd.weight" not in g.tensors:
        raise GGUFError(f"{g.path}: no tensor 'token_embd.weight'")
    vocab_size, hidden = g.tensors["token_embd.weight"].shape
    n_head = m("attention.head_count")
    head_dim = m("attention.key_length", hidden // n_head)
    _check_full_rotary(g, arch, head_dim)
    rope_type = m("rope.scaling.type", "none")
    if "rope_freqs.weight" in g.tensors:
        raise GGUFError(f"{g.path}: has tensor 'rope_freqs.weight' (Llama-3.1-style RoPE scaling): GGUF keeps only "
                        f"the precomputed frequencies, not the HF rope_scaling fields; not supported")
    if rope_type not in ("none", "linear"):
        raise GGUFError(f"{g.path}: {arch}.rope.scaling.type is '{rope_type}'; supported: none, linear")
    bos, eos, pad = special_token_ids(g)
    config = {
        "architectures": [ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden),
        "intermediate_size": int(m("feed_forward_length")),
        "num_hidden_layers": int(m("block_count")),
        "num_attention_heads": int(n_head),
        "num_key_value_heads": int(m("attention.head_count_kv", n_head)),
        "head_dim": int(head_dim),
        "max_position_embeddings": int(m("context_length")),
        "rms_norm_eps": f("attention.layer_norm_rms_epsilon"),
        "rope_theta": f("rope.freq_base", 10000.0),
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in g.tensors,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in g.tensors,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": dtype,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if rope_type == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "type": "linear",
                                  "factor": f("rope.scaling.factor")}
    if arch == "qwen2":
        config.pop("attention_bias")  # Qwen2 always has q/k/v bias; its config has no switch
    return config


def hf_state_dict_from_gguf(g: GGUFFile, dtype: torch.dtype = torch.float32,
                            progress: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor dequantised to `dtype`, renamed to HF and, for Llama, with q/k rows back in HF order."""
    arch = architecture(g)
    n_head = _meta(g, f"{arch}.attention.head_count")
    n_kv_head = _meta(g, f"{arch}.attention.head_count_kv", n_head)
    state = {}
    for name in tqdm(g.tensors, desc="dequantising", unit="tensor", disable=not progress):
        hf_name = hf_tensor_name(name, str(g.path))
        w = g.tensor(name, torch.float32)
        if arch == "llama" and ".attn_q." in name:
            w = unpermute_rope_rows(w, n_head)
        elif arch == "llama" and ".attn_k." in name:
            w = unpermute_rope_rows(w, n_kv_head)
        state[hf_name] = w.to(dtype)
    return state


def generation_config(hf_config: dict) -> dict:
    return {k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf_config.get(k) is not None}


def save_weights(state_dict: dict, hf_config: dict, out_dir: Path):
    """The one place that writes weights + config.json (minagent's HF exporter: atomic, shards when large)."""
    from ..weights import save_hf_checkpoint

    save_hf_checkpoint(state_dict, hf_config, out_dir)


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32",
                 tokenizer: bool = True, overwrite: bool = False, progress: bool = False) -> Path:
    """Convert a GGUF file into a HF checkpoint directory: weights, config, generation config, tokenizer files.

    Everything is written into a hidden sibling directory that is renamed to `out_dir` at the end, so
    `out_dir` either does not exist or is complete.
    """
    out_dir = Path(out_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (overwrite=True, or --overwrite, replaces it)")
    if out_dir.exists() and Path(gguf_path).resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"{out_dir}: holds the input {gguf_path}; replacing the directory would delete it "
                         "(convert into another directory)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        from ..weights import CheckpointError, check_state_dict
        g = GGUFFile(gguf_path)
        try:
            config = hf_config_from_gguf(g, str(torch_dtype).removeprefix("torch."))
            if tokenizer:
                write_tokenizer_files(g, tmp)
            state = hf_state_dict_from_gguf(g, torch_dtype, progress)
            check_state_dict(state, config, str(gguf_path))
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, RuntimeError, UnicodeError) as e:
            if isinstance(e, GGUFError):
                raise
            if isinstance(e, CheckpointError):  # (its message names the file already)
                raise GGUFError(str(e)) from None
            # metadata of the wrong type or value (a head count of 0, a string where a number goes, ...)
            raise GGUFError(f"{gguf_path}: cannot convert: {type(e).__name__}: {e}") from None
        save_weights(state, config, tmp)
        write_json(tmp / "generation_config.json", generation_config(config))
        g.close()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
