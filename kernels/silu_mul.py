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


class SwiGLUTorchFunction(torch.autograd.Function):
    """The reference's forward with the kernel's memory plan, for CPU training: autograd on the reference keeps
    gate, up *and* silu(gate) (three [tokens, intermediate] tensors per layer); this keeps gate and up and
    recomputes the sigmoid in the backward (the formulas above, in fp32 or wider)."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return swiglu_reference(gate, up)

    @staticmethod
    def backward(ctx, dout):
        gate, up = ctx.saved_tensors
        ct = torch.promote_types(gate.dtype, torch.float32)  # fp32 for half inputs, fp64 stays fp64
        g, u, d = gate.to(ct), up.to(ct), dout.to(ct)
        s = torch.sigmoid(g)
        dgate = d * u * s * (1.0 + g * (1.0 - s)) if ctx.needs_input_grad[0] else None
        dup = d * g * s if ctx.needs_input_grad[1] else None
        return (None if dgate is None else dgate.to(gate.dtype)), (None if dup is None else dup.to(up.dtype))


def swiglu_torch(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The CPU path: the lean autograd Function when a gradient will flow, the plain reference otherwise."""
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return SwiGLUTorchFunction.apply(gate, up)
    return swiglu_reference(gate, up)


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
