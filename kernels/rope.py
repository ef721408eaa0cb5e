"""Rotary position embedding (RoPE), rotate-half layout, applied to q and k in one launch.

RoPE turns each pair of features (x1[i], x2[i]) = (x[i], x[i + D/2]) of a head vector through an angle that
grows with the token's position:
    y1 = x1 * cos1 - x2 * sin1
    y2 = x2 * cos2 + x1 * sin2
(cos = cos1|cos2 and sin = sin1|sin2 are the [.., D] tables; HF's have equal halves, but nothing here relies on
it). Pairing i with i + D/2 instead of 2i with 2i+1 is HF's "rotate half" layout; keeping it means checkpoints
load with no permutation of q_proj/k_proj.

One program handles a few consecutive tokens of one sequence: it loads their cos/sin rows once and rotates
every query head and every key head with them, so the tables are read once instead of once per head, and q and
k share one launch.

Backward. A rotation's inverse is its transpose, which is the same rotation with sin negated and the halves'
sin tables swapped:
    dx1 = dy1 * cos1 + dy2 * sin2
    dx2 = dy2 * cos2 - dy1 * sin1
so the backward is the forward kernel with (sin1, sin2) -> (-sin2, -sin1). cos/sin are tables, not learned:
they get no gradient.
"""
import torch

from ._triton import next_power_of_2, tl, triton


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_reference(x, cos, sin):
    """Every head of x [B, H, T, D] rotated; cos/sin [B, T, D] or [T, D], broadcast over heads."""
    cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)
    return x * cos + _rotate_half(x) * sin


def apply_rope_reference(q, k, cos, sin):
    """q [B, Hq, T, D], k [B, Hk, T, D]; cos/sin [B, T, D] or [T, D], broadcast over heads."""
    return rotate_reference(q, cos, sin), rotate_reference(k, cos, sin)


@triton.jit
def _rotate_heads(X, Y, sxb, sxh, sxt, syb, syh, syt, b, t, t_ok, H, c1, c2, s1, s2,
                  BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, HALF):
    """Rotate rows t (a [BLOCK_T, 1, 1] block of positions of batch row b) of every head of X into Y."""
    heads = tl.arange(0, BLOCK_H)[None, :, None]
    cols = tl.arange(0, BLOCK_HALF)[None, None, :]
    mask = t_ok & (heads < H) & (cols < HALF)
    x_at = X + b * sxb + t * sxt + heads * sxh + cols
    y_at = Y + b * syb + t * syt + heads * syh + cols
    x1 = tl.load(x_at, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_at + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_at, x1 * c1 - x2 * s1, mask=mask)
    tl.store(y_at + HALF, x2 * c2 + x1 * s2, mask=mask)


@triton.jit
def _rope_kernel(Q, K, QO, KO, COS, SIN,
                 sqb, sqh, sqt, sqob, sqoh, sqot,
                 skb, skh, skt, skob, skoh, skot,
                 scb, sct, T, HQ, HK, HALF,
                 BLOCK_T: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr,
                 BLOCK_HALF: tl.constexpr, BACKWARD: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]
    t_ok = t < T
    cols = tl.arange(0, BLOCK_HALF)[None, None, :]
    cmask = t_ok & (cols < HALF)
    table = b * scb + t * sct + cols
    c1 = tl.load(COS + table, mask=cmask, other=0.0).to(tl.float32)
    c2 = tl.load(COS + table + HALF, mask=cmask, other=0.0).to(tl.float32)
    s1 = tl.load(SIN + table, mask=cmask, other=0.0).to(tl.float32)
    s2 = tl.load(SIN + table + HALF, mask=cmask, other=0.0).to(tl.float32)
    if BACKWARD:  # the transposed rotation
        s1, s2 = -s2, -s1
    _rotate_heads(Q, QO, sqb, sqh, sqt, sqob, sqoh, sqot, b, t, t_ok, HQ, c1, c2, s1, s2,
                  BLOCK_HQ, BLOCK_HALF, HALF)
    _rotate_heads(K, KO, skb, skh, skt, skob, skoh, skot, b, t, t_ok, HK, c1, c2, s1, s2,
                  BLOCK_HK, BLOCK_HALF, HALF)


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(q, k, cos, sin, backward: bool):
    B, HQ, T, D = q.shape
    HK = k.shape[1]
    q, k = _last_dim_contiguous(q), _last_dim_contiguous(k)
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    if q.numel() == 0 and k.numel() == 0:
        return qo, ko
    half = D // 2
    block_hq, block_half = next_power_of_2(HQ), next_power_of_2(half)
    # tokens per program: about 4096 query elements per block on a GPU; the interpreter prefers few programs
    block_t = min(next_power_of_2(T), max(1, 4096 // (block_hq * block_half)) if q.is_cuda else 16)
    _rope_kernel[(triton.cdiv(T, block_t), B)](
        q, k, qo, ko, cos, sin,
        q.stride(0), q.stride(1), q.stride(2), qo.stride(0), qo.stride(1), qo.stride(2),
        k.stride(0), k.stride(1), k.stride(2), ko.stride(0), ko.stride(1), ko.stride(2),
        cos.stride(0), cos.stride(1), T, HQ, HK, half,
        BLOCK_T=block_t, BLOCK_HQ=block_hq, BLOCK_HK=next_power_of_2(HK), BLOCK_HALF=block_half,
        BACKWARD=backward, num_warps=4)
    return qo, ko


def _tables(cos, sin, q):
    """cos/sin as [B, T, D] with the real batch stride, or stride 0 when one table serves every row."""
    B, _, T, D = q.shape
    if cos.shape != sin.shape or cos.shape[-2:] != (T, D) or cos.dim() not in (2, 3):
        raise ValueError(f"apply_rope: cos/sin must be [T, D] or [B, T, D] with T={T}, D={D}; "
                         f"got cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")
    if D % 2:
        raise ValueError(f"apply_rope: head_dim must be even for rotate-half RoPE, got {D}")
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = _last_dim_contiguous(cos), _last_dim_contiguous(sin)
    if cos.stride() != sin.stride():  # the kernel reads both tables with cos's strides
        cos, sin = cos.contiguous(), sin.contiguous()
    return cos.expand(B, T, D), sin.expand(B, T, D)


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        if k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
            raise ValueError(f"apply_rope: q {tuple(q.shape)} and k {tuple(k.shape)} must share B, T and D")
        cos, sin = _tables(cos, sin, q)
        ctx.save_for_backward(cos, sin)
        return _launch(q, k, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq, dk = _launch(dq, dk, cos, sin, backward=True)
        return dq, dk, None, None


def apply_rope_triton(q, k, cos, sin):
    return RoPEFunction.apply(q, k, cos, sin)
