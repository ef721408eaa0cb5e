"""Model configuration: one dataclass for the four decoder families minagent loads.

Llama, Mistral, Qwen2 and Qwen3 are the same decoder with small switches (q/k/v bias, per-head q/k RMSNorm,
explicit head_dim, tied embeddings, RoPE scaling), so one config and one model cover them all. `from_hf` reads a
HF `config.json` written by transformers 4.x (`torch_dtype`, `rope_theta`, `rope_scaling`) or 5.x (`dtype`,
`rope_parameters`) and `to_hf_dict` writes one that transformers loads back.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
# transformers' defaults for the window settings a config.json leaves out (MistralConfig, Qwen2Config, Qwen3Config)
_HF_DEFAULT_SLIDING_WINDOW = 4096
_HF_DEFAULT_MAX_WINDOW_LAYERS = 28
# Qwen3Config's head_dim when config.json leaves it out: a fixed 128, not hidden_size / num_attention_heads as the
# other three families derive it
_HF_DEFAULT_QWEN3_HEAD_DIM = 128
# hidden_act values transformers maps to x * sigmoid(x), the gate of the SwiGLU MLP
_SILU_NAMES = ("silu", "swish")


class ConfigError(ValueError):
    """A config.json that minagent cannot build a model from; the message names the file and the field."""


@dataclass
class ModelConfig:
    architecture: str = "LlamaForCausalLM"
    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1376
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None  # None = num_attention_heads (no grouping)
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "linear"|"llama3", "factor": ..., ...}; None = default RoPE
    max_position_embeddings: int = 4096
    qkv_bias: bool = False  # bias on q/k/v (Qwen2 always; Llama/Qwen3 when `attention_bias`)
    o_bias: bool = False  # bias on o_proj (Llama/Qwen3 when `attention_bias`; never Qwen2)
    mlp_bias: bool = False  # bias on gate/up/down (Llama's `mlp_bias`)
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    tie_word_embeddings: bool = False
    torch_dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict)  # unknown HF keys, kept so an export round-trips them

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads={self.num_key_value_heads}")

    @property
    def rope_type(self) -> str:
        return (self.rope_scaling or {}).get("rope_type", "default")

    @property
    def attention_window(self) -> int | None:
        """The sliding-window span transformers applies (Mistral's sliding_window; Qwen2/Qwen3 only with
        use_sliding_window), or None. minagent attends to every key, which equals the window for sequences of up
        to this many tokens: the model refuses longer ones rather than diverge from the reference."""
        # A key left out of config.json is not "no window": transformers fills in its defaults (4096, and for Qwen
        # max_window_layers=28), so a Mistral config without `sliding_window` slides over 4096 tokens there.
        window = self.extra.get("sliding_window", _HF_DEFAULT_SLIDING_WINDOW)
        if window is None:
            return None
        if self.architecture != "MistralForCausalLM":
            # Qwen2/Qwen3: only with use_sliding_window, and only if some layer slides (transformers' layer_types,
            # or the layers from max_window_layers on)
            layer_types = self.extra.get("layer_types")
            slides = ("sliding_attention" in layer_types if layer_types is not None
                      else self.num_hidden_layers > self.extra.get("max_window_layers", _HF_DEFAULT_MAX_WINDOW_LAYERS))
            if not (self.extra.get("use_sliding_window") and slides):
                return None
        return int(window)

    # ---- HF config.json <-> ModelConfig ------------------------------------------------------------------

    @classmethod
    def from_hf(cls, source: str | Path | dict) -> "ModelConfig":
        """Build from a HF config dict, a config.json path, or a checkpoint directory holding one."""
        where = "config dict"
        if not isinstance(source, dict):
            path = Path(source)
            if path.is_dir():
                path = path / "config.json"
            where = str(path)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no config.json (expected a HF checkpoint directory)")
            try:
                source = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(source, dict):
            raise ConfigError(f"{where}: expected a JSON object of settings, got {type(source).__name__}")
        return cls._from_hf_dict(dict(source), where)

    @classmethod
    def _from_hf_dict(cls, hf: dict, where: str) -> "ModelConfig":
        archs = hf.get("architectures") or []
        if isinstance(archs, str):  # a list of one, written as a bare string
            archs = [archs]
        # transformers' AutoModelForCausalLM builds the class of the model_type (through AutoConfig), whatever
        # `architectures` lists; that list decides only where model_type is not one of ours
        by_model_type = {v: k for k, v in _MODEL_TYPES.items()}.get(hf.get("model_type"))
        arch = by_model_type or (archs[0] if archs else None)
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"{where}: field 'architectures' is {archs or hf.get('model_type')!r}; "
                              f"minagent supports {', '.join(SUPPORTED_ARCHITECTURES)}")

        def need(key):
            if key not in hf:
                raise ConfigError(f"{where}: missing required field '{key}'")
            return hf[key]

        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = hf.get(key)  # (a JSON 257.0 or "257" would reach torch as a size and fail far from here)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{where}: field '{key}' is {value!r}; expected a positive integer")
        eps = hf.get("rms_norm_eps", 1e-6)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ConfigError(f"{where}: field 'rms_norm_eps' is {eps!r}; expected a positive number")

        if arch == "Qwen3ForCausalLM" and "head_dim" in hf and hf["head_dim"] is None:
            # (Qwen3Config refuses it too: its head_dim is not hidden_size / heads, so null has no safe meaning)
            raise ConfigError(f"{where}: field 'head_dim' is null; Qwen3 needs it as a positive integer "
                              f"(left out, it means {_HF_DEFAULT_QWEN3_HEAD_DIM})")
        heads, kv_heads = hf.get("num_attention_heads"), hf.get("num_key_value_heads")
        if heads and kv_heads and heads % kv_heads:
            raise ConfigError(f"{where}: field 'num_key_value_heads' is {kv_heads}; it must divide "
                              f"num_attention_heads={heads} (each key/value head serves a whole group of queries)")
        if hf.get("hidden_act", "silu") not in _SILU_NAMES:
            raise ConfigError(f"{where}: field 'hidden_act' is {hf['hidden_act']!r}; the SwiGLU MLP needs 'silu' "
                              f"(or its other name, 'swish')")
        rope_theta, rope_scaling = _read_rope(hf, where)
        known = {f for f in cls.__dataclass_fields__} | {"architectures", "model_type", "dtype", "rope_parameters",
                                                          "rope_scaling", "attention_bias", "mlp_bias"}
        cfg = cls(
            architecture=arch,
            vocab_size=need("vocab_size"),
            hidden_size=need("hidden_size"),
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=need("num_attention_heads"),
            num_key_value_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim", _HF_DEFAULT_QWEN3_HEAD_DIM if arch == "Qwen3ForCausalLM" else None),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            qkv_bias=arch == "Qwen2ForCausalLM" or (arch != "MistralForCausalLM" and bool(hf.get("attention_bias"))),
            o_bias=arch in ("LlamaForCausalLM", "Qwen3ForCausalLM") and bool(hf.get("attention_bias")),
            mlp_bias=arch == "LlamaForCausalLM" and bool(hf.get("mlp_bias")),
            qk_norm=arch == "Qwen3ForCausalLM",
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            torch_dtype=str(hf.get("dtype") or hf.get("torch_dtype") or "float32"),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            extra={k: v for k, v in hf.items() if k not in known},
        )
        if cfg.head_dim % 2:
            raise ConfigError(f"{where}: head_dim={cfg.head_dim} must be even for rotate-half RoPE")
        return cfg

    def to_hf_dict(self) -> dict:
        """A config.json transformers 4.x and 5.x both read (5.x folds rope_theta/rope_scaling into rope_parameters)."""
        d = asdict(self)
        extra = d.pop("extra")
        arch = d.pop("architecture")
        d.pop("qk_norm")
        d.pop("qkv_bias")  # implied by the architecture (Qwen2) or by attention_bias
        o_bias, mlp_bias = d.pop("o_bias"), d.pop("mlp_bias")
        if arch in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
            d["attention_bias"] = o_bias
        if arch == "LlamaForCausalLM":
            d["mlp_bias"] = mlp_bias
        if d["rope_scaling"] is None:
            d.pop("rope_scaling")
        else:
            d["rope_scaling"] = dict(d["rope_scaling"], type=d["rope_scaling"]["rope_type"])
        d["dtype"] = d["torch_dtype"]
        return {"architectures": [arch], "model_type": _MODEL_TYPES[arch], **extra, **d}


def _read_rope(hf: dict, where: str) -> tuple[float, dict | None]:
    """rope_theta and the scaling dict, from 4.x (`rope_theta` + `rope_scaling`) or 5.x (`rope_parameters`)."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:  # per-layer-type form: one type here
        params = params["full_attention"]
    for name, value in (("rope_parameters", params), ("rope_scaling", hf.get("rope_scaling"))):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} must be an object, got {value!r:.60}")

    def spelled_once(d):  # 4.x wrote "type", 5.x writes "rope_type"
        d = dict(d or {})
        kind = d.pop("rope_type", None) or d.pop("type", None)
        d.pop("type", None)
        return {**d, "rope_type": kind} if kind else d
    # both present (a 5.x config with a rope_scaling added): the scaling wins, as in transformers
    scaling = {**spelled_once(params), **spelled_once(hf.get("rope_scaling"))}
    theta = scaling.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0
    _need_positive_number(theta, "rope_theta", where)
    rope_type = scaling.pop("rope_type", None) or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{where}: rope type {rope_type!r} is not supported (supported: "
                          f"{', '.join(SUPPORTED_ROPE_TYPES)})")
    if rope_type == "default":
        return float(theta), None
    if rope_type == "llama3" and hf.get("original_max_position_embeddings") is not None:
        # transformers 5 lets a top-level original_max_position_embeddings (Phi-3's place for it) override the one
        # in the scaling dict, or stand in for it
        scaling["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
    elif rope_type == "llama3" and "original_max_position_embeddings" not in scaling and \
            hf.get("max_position_embeddings") is not None:
        # and where neither place has it, transformers 5 takes max_position_embeddings (with a warning)
        scaling["original_max_position_embeddings"] = hf["max_position_embeddings"]
    for key in ("factor",) + (("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                              if rope_type == "llama3" else ()):
        if key not in scaling:
            raise ConfigError(f"{where}: {rope_type} RoPE scaling needs field '{key}'")
        _need_positive_number(scaling[key], key, where)
    return float(theta), {"rope_type": rope_type, **scaling}


def _need_positive_number(value, key: str, where: str):
    """ConfigError unless `value` is a positive JSON number: a string or null would fail as a TypeError deep in
    the RoPE tables, and zero or a negative value would make their frequencies infinite or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{where}: field '{key}' is {value!r}; expected a positive number")


def rope_inverse_frequencies(cfg: ModelConfig):
    """Per-pair rotation frequencies, with linear or llama3 scaling applied (the formulas HF and Meta use)."""
    import torch

    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))
    s = cfg.rope_scaling or {}
    if cfg.rope_type == "linear":
        inv_freq = inv_freq / s["factor"]
    elif cfg.rope_type == "llama3":
        # Long wavelengths are stretched by `factor`, short ones kept, the band between interpolated smoothly.
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_ctx = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_ctx / lo, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_ctx / hi) & ~(wavelen > old_ctx / lo)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq
