"""Hand-written kernels and the dispatcher the model calls.

Every op here has a short pure-PyTorch reference; the dispatcher picks the Triton kernel on CUDA and the
reference elsewhere. The model imports only the names below, never a kernel module directly.
Tensor layout follows torch SDPA: q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D].
"""
import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32, cast back before the weight multiply (the order HF uses, so fp32 logits match)."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate-half RoPE. cos/sin are [B, T, D] (or [T, D]) and broadcast over heads."""
    cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def attention(q, k, v, *, causal: bool = True, attn_mask=None, scale=None):
    """Scaled dot-product attention with grouped-query K/V.

    attn_mask: bool [B, 1, Tq, Tk], True = may attend; when given it replaces the causal rule.
    Without a mask and with Tq < Tk, causal queries are the last Tq positions (decode against a cache).
    """
    gqa = q.shape[1] != k.shape[1]
    if attn_mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=gqa)
    tq, tk = q.shape[-2], k.shape[-2]
    if causal and tq == tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if causal and tq > 1:
        mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
