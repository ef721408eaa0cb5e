"""SwiGLU's elementwise core: out = silu(gate) * up, with silu(g) = g * sigmoid(g).

In the MLP, down(silu(gate(x)) * up(x)), the two matmuls dominate the flops, but eager PyTorch spends memory
traffic on the middle: silu writes a [tokens, intermediate] tensor, the multiply reads it back, and autograd
keeps it alive for the backward. The kernel reads gate and up once, writes out once, and saves nothing new: the
backward recomputes sigmoid(gate) from gate, which costs a few flops and no memory.

Backward, with s = sigmoid(g):
    d up   = dout * g * s                     (= dout * silu(g))
    d gate = dout * up * s * (1 + g * (1 - s)) (the derivative of g * s)
Each element is independent, so a program is just a contiguous block of BLOCK elements.
"""
import torch
import torch.nn.functional as F

from ._triton import tl, triton


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


@triton.jit
def _swiglu_fwd(G, U, OUT, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + offs, g * tl.sigmoid(g) * u, mask=mask)


@triton.jit
def _swiglu_bwd(DOUT, G, U, DG, DU, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    dout = tl.load(DOUT + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(g)
    tl.store(DU + offs, dout * g * s, mask=mask)
    tl.store(DG + offs, dout * u * s * (1.0 + g * (1.0 - s)), mask=mask)


_BLOCK = 1024


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have one shape")
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate, dtype=torch.promote_types(gate.dtype, up.dtype))
        n = gate.numel()
        if n:
            _swiglu_fwd[(triton.cdiv(n, _BLOCK),)](gate, up, out, n, BLOCK=_BLOCK, num_warps=4)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, up = ctx.saved_tensors
        dout = dout.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        if n:
            _swiglu_bwd[(triton.cdiv(n, _BLOCK),)](dout, gate, up, dgate, dup, n, BLOCK=_BLOCK, num_warps=4)
        return dgate, dup


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return SwiGLUFunction.apply(gate, up)
