"""The model's forward for inference, with every weight looked up once: what generation's steps run.

Why it exists: a batch-1 decoding step of SmolLM2-135M streams ~540 MB of weights (~25 ms on the 2-core CPU
this was tuned on) and then runs ~35 small ops per layer of a few microseconds each. The module forward adds
Python around those ops: nn.Module.__call__ for a dozen modules per layer, attribute lookups through
nn.Module.__getattr__, the packing checks of packing.py (per group, per layer, per step) and two RoPE
calls. Together that was ~7 ms of a ~45 ms step. An InferencePlan gathers each layer's tensors once per
generate() call and walks the same math over them, rotating q and k in one op (they are adjacent columns of
the packed q/k/v product).

Same numbers, by construction and by test: the plan calls the same kernels on the same tensors (same views,
same strides) as model.py's modules, so its logits and KV cache equal the module forward's bit for bit
(tests/test_inference.py, every architecture, padded batches). model.py stays the definition; this file is
its inference schedule, as a reader can check line by line against Attention/MLP/DecoderLayer.forward.

It only runs where that equality holds. `InferencePlan.of(model)` returns None (callers then use the model
itself) when gradients are enabled, when any module is not exactly minagent's class (a LoRA wrapper, a
subclass), when any module has forward hooks or a forward replaced on the instance, or when a q/k/v or gate/up
group is not packed (a model moved to another dtype after loading). Head counts and norm eps come from the
modules themselves, as their forwards read them. A plan holds the parameter tensors it found: in-place updates reach it, a
replaced parameter does not, so build one per generation call (it costs well under a millisecond).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

import kernels
from .model import MLP, Attention, Decoder, DecoderLayer, KVCache, Linear, RMSNorm, RotaryEmbedding, Transformer
from .packing import _global_hooks, packed_projection


class _LayerWeights(NamedTuple):
    """One decoder layer's tensors and the settings its modules hold (read from the modules, not the config,
    so a module swapped or edited after loading is followed exactly)."""
    heads: tuple[int, int, int]  # query heads, kv heads, head_dim
    attn_norm: tuple[torch.Tensor, float]  # (RMSNorm weight, eps)
    qkv_weight: torch.Tensor  # q, k and v rows stacked (a view of the packed buffer)
    qkv_bias: torch.Tensor | None
    qk_norms: tuple | None  # Qwen3's per-head RMSNorms: ((q weight, eps), (k weight, eps))
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    mlp_norm: tuple[torch.Tensor, float]
    gate_up_weight: torch.Tensor  # gate rows then up rows
    gate_up_bias: torch.Tensor | None
    down_weight: torch.Tensor
    down_bias: torch.Tensor | None


_EXACT_CLASSES = {"model": Decoder, "lm_head": Linear, "model.embed_tokens": nn.Embedding,
                  "model.norm": RMSNorm, "model.rotary_emb": RotaryEmbedding}
_LAYER_CLASSES = {"": DecoderLayer, "input_layernorm": RMSNorm, "post_attention_layernorm": RMSNorm,
                  "self_attn": Attention, "self_attn.q_proj": Linear, "self_attn.k_proj": Linear,
                  "self_attn.v_proj": Linear, "self_attn.o_proj": Linear, "self_attn.q_norm": RMSNorm,
                  "self_attn.k_norm": RMSNorm, "mlp": MLP, "mlp.gate_proj": Linear, "mlp.up_proj": Linear,
                  "mlp.down_proj": Linear}
_QK_NORMS = {"self_attn.q_norm", "self_attn.k_norm"}  # Qwen3 only: both or neither


def _plain_layer(layer: nn.Module) -> bool:
    """Exactly minagent's modules, each where DecoderLayer puts it: nothing extra, nothing missing (q/k norms
    both or neither), no subclass."""
    classes = {name: type(m) for name, m in layer.named_modules()}
    names = set(classes)
    if not set(_LAYER_CLASSES) - _QK_NORMS <= names <= set(_LAYER_CLASSES):
        return False
    if len(names & _QK_NORMS) == 1:
        return False
    return all(kind is _LAYER_CLASSES[name] for name, kind in classes.items())


def _norm(m: RMSNorm) -> tuple[torch.Tensor, float]:
    return m.weight, m.eps


class InferencePlan:
    """Call it like the model: plan(input_ids, positions=None, cache=None, key_valid=None, last_only=False)
    -> logits [B, T, vocab] (or [B, 1, vocab] with last_only). Under torch.no_grad/inference_mode only."""

    def __init__(self, model: Transformer, layers: list[_LayerWeights]):
        self.model, self.layers = model, layers
        self.final_norm = _norm(model.model.norm)

    @classmethod
    def of(cls, model: nn.Module) -> InferencePlan | None:
        """A plan for this model as it is now, or None when the module forward must run (see the docstring)."""
        if torch.is_grad_enabled() or type(model) is not Transformer or _global_hooks():
            return None
        for m in model.modules():
            # hooks, or a forward replaced on the instance (how accelerate-style wrappers patch a module)
            if m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__:
                return None
        if any(type(model.get_submodule(name)) is not kind for name, kind in _EXACT_CLASSES.items()):
            return None
        layers = []
        for layer in model.model.layers:
            if not _plain_layer(layer):
                return None
            attn, mlp = layer.self_attn, layer.mlp
            qkv = packed_projection((attn.q_proj, attn.k_proj, attn.v_proj), Linear)
            gate_up = packed_projection((mlp.gate_proj, mlp.up_proj), Linear)
            if qkv is None or gate_up is None:
                return None
            qk_norms = (_norm(attn.q_norm), _norm(attn.k_norm)) if hasattr(attn, "q_norm") else None
            layers.append(_LayerWeights(
                (attn.n_heads, attn.n_kv_heads, attn.head_dim), _norm(layer.input_layernorm), *qkv, qk_norms,
                attn.o_proj.weight, attn.o_proj.bias, _norm(layer.post_attention_layernorm), *gate_up,
                mlp.down_proj.weight, mlp.down_proj.bias))
        return cls(model, layers)

    def __call__(self, input_ids, positions=None, cache: KVCache | None = None, key_valid=None,
                 last_only: bool = False) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("InferencePlan runs under torch.no_grad() or torch.inference_mode() only; "
                               "call the model itself when gradients are wanted")
        B, T = input_ids.shape
        x, cos, sin, mask = self.model.embed_inputs(input_ids, positions, cache, key_valid)
        for i, w in enumerate(self.layers):
            H, K, D = w.heads
            # attention (Attention.forward): the packed product seen as H + 2K heads of D features
            qkv = kernels.linear(kernels.rms_norm(x, *w.attn_norm), w.qkv_weight, w.qkv_bias)
            qkv = qkv.view(B, T, H + 2 * K, D)
            if w.qk_norms is not None:
                q = kernels.rms_norm(qkv[:, :, :H], *w.qk_norms[0]).transpose(1, 2)
                k = kernels.rms_norm(qkv[:, :, H:H + K], *w.qk_norms[1]).transpose(1, 2)
                q, k = kernels.apply_rope(q, k, cos, sin)
            else:
                q, k = kernels.apply_rope_joint(qkv[:, :, :H + K].transpose(1, 2), H, cos, sin)
            v = qkv[:, :, H + K:].transpose(1, 2)
            if cache is not None:
                k, v = cache.write(i, k, v)
            y = kernels.attention(q, k, v, causal=True, attn_mask=mask)
            x = x + kernels.linear(y.transpose(1, 2).reshape(B, T, H * D), w.o_weight, w.o_bias)
            # MLP (MLP.forward)
            gate, up = kernels.linear(kernels.rms_norm(x, *w.mlp_norm), w.gate_up_weight,
                                      w.gate_up_bias).chunk(2, dim=-1)
            x = x + kernels.linear(kernels.swiglu(gate, up), w.down_weight, w.down_bias)
        if cache is not None:
            cache.length += T
        x = kernels.rms_norm(x, *self.final_norm)
        head = self.model.lm_head
        return kernels.linear(x[:, -1:] if last_only else x, head.weight, head.bias)


def inference_forward(model: nn.Module):
    """The fastest callable that computes model(...) for inference: its InferencePlan, or the model itself."""
    return InferencePlan.of(model) or model
