"""fp32 products on oneDNN: on the plain weight (on AMD CPUs with AVX-512, the default for products of 2 or more
rows under inference mode: kernels/matvec.py), and on its prepacked copy (the opt-in `MINAGENT_MATVEC=onednn`,
which also sends a bf16 model's decoding products to a prepacked bf16 copy: kernels/matvec.py).

The plain path (`linear_plain`) calls oneDNN's linear on the weight as it is: no copy, no cache. oneDNN uses AVX-512
on AMD, where MKL does not: prefill-sized products run 2.1-2.2x faster than F.linear on a 2-core AMD EPYC with
AVX-512 (2026-11-23). For few rows, SmolLM2-shaped weights streamed from memory (30 layers, 478 MB) took 15.9-18.0
ms per pass at 2-8 rows against 20.6-24.8 ms on the thread split and 34-46 ms with F.linear (MKL); at one row the
two are equal (14.8 vs 15.4 ms), so one row stays on the split.

The prepacked path: a forward over 2-8 rows (a greedy step checking prompt-lookup drafts, batch-8 decoding, SAG's
candidates) streams every weight once, like one row does, but MKL's small-M sgemm reads the weights at about half
the rate of its one-row product, even split over the threads (kernels/matvec.py). oneDNN's linear on a weight
reordered once into its blocked layout reads them at 1.5-2.4x the split's rate at 5 rows (SmolLM2's matrices, 2-core
AMD EPYC): a SmolLM2 forward of 5 rows after 800 cached tokens 53-56 -> 39-41 ms, a batch-8 step 54-59 -> 42 ms. At
one row it is no faster than the split, so one row stays there.

Its costs, and why it is opt-in: a second, blocked copy of every weight it serves (the plain weight stays: the
module forward, training and prefill use it), so weight memory doubles; and two torch-internal ops
(`torch.ops.mkldnn._reorder_linear_weight` / `_linear_pointwise`, what torch.compile's CPU backend calls), which
another torch release may rename: `available()` says whether this torch has them. Nothing flows back through a
prepacked weight, so only products run under torch.inference_mode() come here (`usable`).

The training path (`linear_trainable`, amd-avx512 policy): outside inference mode, a product some gradient will be
asked of runs forward and backward on oneDNN's plain-weight linear too, through an autograd.Function (the op has no
autograd formula of its own). The input gradient dy @ W is the same op on W.T copied contiguous (oneDNN reads no
strided weight; the copy is N x K floats, small beside the product). The weight gradient dy.T @ x needs dy and x
both copied transposed for oneDNN: that pays off only when the weight is wide on both sides (GRAD_WEIGHT_MIN_SIDE),
narrower ones keep MKL, which reads the transposed views as they are. Measured at 2 threads on the AMD EPYC with
AVX-512 (2026-11-24, [rows, K] x [N, K], 1024-4096 rows of SmolLM2's and the tiny tier's shapes): forward and input
gradient 1.6-5x faster than MKL; weight gradient 1.2-1.6x faster at 576 x 576 and wider, 0.75-1.17x below.
bench/train.py, SmolLM2-135M, 2 x 512 tokens: LoRA 1.25x -> 1.63-1.71x transformers + peft's tokens/s, full
fine-tuning 1.14x -> 1.34x with the weight gradient on MKL, 1.46x with it here (same losses, same peak memory).
Results differ from MKL's by fp32 rounding (relative 1e-6). A backward that builds a graph (create_graph=True,
for a second derivative) runs on torch's own differentiable ops; forward-mode AD, torch.func transforms and no_grad
code keep F.linear. The fused loss (kernels/cross_entropy.py) forms its own gradients and calls linear_plain.

The packed copy is found by the weight's address, shape and strides, and used only while it belongs to the same
storage (a weak reference: a new model loaded where a freed one lived gets its own copy) at the same version
counter (an in-place update, an optimizer step or a LoRA merge, bumps it and the next call packs again; a write
through `weight.data`, which has its own counter, is not seen: call `clear()` after one). A copy is dropped when
its storage is freed; `clear()` drops them all.
"""
from __future__ import annotations

import weakref

import torch
import torch.autograd.forward_ad as forward_ad

GRAD_WEIGHT_MIN_SIDE = 576  # the training path's weight gradient goes to oneDNN from [576, 576] weights on
_PACKED: dict[tuple, tuple] = {}  # (data_ptr, shape, strides, dtype) -> (weakref to storage, version, packed weight)


def available() -> bool:
    """Whether this torch has the two ops (CPU builds with oneDNN do; the pinned torch 2.13.0 does)."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Only under torch.inference_mode() (generation runs there), without autocast, on a weight that is not itself
    an inference tensor: then no gradient, forward-mode tangent or functorch transform can be asked of the product
    (the packed copy is outside autograd), autocast's dtype rules do not apply, and the weight has a version
    counter to tell in-place changes by. The bias must be what oneDNN reads it as (see `_plain_bias`)."""
    return _inference_gate(weight, bias) and not weight.is_inference()


def usable_plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """The plain path: under inference mode (nothing can ask for a gradient or tangent of the op, whose autograd
    support is not what the rest of the library is tested on), no autocast, oneDNN not switched off
    (`torch.backends.mkldnn.flags(enabled=False)`), a contiguous weight (oneDNN would copy a strided one on every
    call) and a bias it reads correctly."""
    return _inference_gate(weight, bias) and weight.is_contiguous()


def usable_training(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """The training path: outside inference mode, with autograd recording and some input needing a gradient
    (no_grad evaluation keeps MKL, so it stays bit-equal to transformers' forward), no autocast, oneDNN on, a
    contiguous weight, a bias oneDNN reads correctly, and no forward-mode AD or torch.func transform around, which
    the autograd.Function below does not implement."""
    grads = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    return (grads and torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            and not torch.is_autocast_enabled("cpu") and torch._C._get_mkldnn_enabled()
            and weight.is_contiguous() and _plain_bias(bias, weight.shape[0])
            and forward_ad._current_level < 0 and not torch._C._are_functorch_transforms_active()
            and not any(t is not None and torch._C._functorch.is_functorch_wrapped_tensor(t)
                        for t in (x, weight, bias)))


def _inference_gate(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """What both paths need: inference mode, no CPU autocast, oneDNN on, a bias oneDNN reads correctly."""
    return (torch.is_inference_mode_enabled() and not torch.is_autocast_enabled("cpu")
            and torch._C._get_mkldnn_enabled() and _plain_bias(bias, weight.shape[0]))


def _plain_bias(bias: torch.Tensor | None, n_out: int) -> bool:
    """oneDNN reads a bias as n_out contiguous fp32 values: a strided or 0-dim one (which F.linear broadcasts) would
    be read wrongly, without an error. Anything else keeps the other paths."""
    return bias is None or (bias.dim() == 1 and bias.shape[0] == n_out and bias.dtype == torch.float32
                            and bias.is_contiguous())


def linear_plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias), oneDNN's linear on the plain weight (no gate and no autograd: callers
    check usable_plain, or form their own gradients as the fused loss does)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


class _TrainableLinear(torch.autograd.Function):
    """y = x @ W.T (+ b) on oneDNN, with the input gradient on oneDNN as well (see the module docstring)."""

    @staticmethod
    def forward(ctx, x2, weight, bias):
        # what F.linear keeps: x only for a weight gradient, the weight only for an input gradient (a frozen
        # projection must not hold its input until the backward)
        ctx.save_for_backward(x2 if weight.requires_grad else None, weight if x2.requires_grad else None)
        ctx.has_bias, ctx.wide = bias is not None, min(weight.shape) >= GRAD_WEIGHT_MIN_SIDE
        return torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad_y):
        x2, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if torch.is_grad_enabled():  # create_graph=True: a second derivative will be asked, so torch's own ops
            grad_x = grad_y @ weight if ctx.needs_input_grad[0] else None
            grad_w = grad_y.t() @ x2 if ctx.needs_input_grad[1] else None
            grad_b = grad_y.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
            return grad_x, grad_w, grad_b
        grad_y = grad_y.contiguous()
        if ctx.needs_input_grad[0]:  # dy [M, N] @ W [N, K]: oneDNN's linear on W.T [K, N]
            grad_x = torch.ops.mkldnn._linear_pointwise(grad_y, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:  # dy.T [N, M] @ x [M, K]: oneDNN needs both copied, which pays off at width
            if ctx.wide:
                grad_w = torch.ops.mkldnn._linear_pointwise(grad_y.t().contiguous(), x2.t().contiguous(), None,
                                                            "none", [], "")
            else:
                grad_w = grad_y.t().mm(x2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(0)
        return grad_x, grad_w, grad_b


def linear_trainable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) on oneDNN, differentiable (the training path)."""
    lead = x.shape[:-1]
    y = _TrainableLinear.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight, bias)
    return y.reshape(*lead, weight.shape[0])


def packed(weight: torch.Tensor) -> torch.Tensor:
    """The weight reordered for oneDNN, packed on first use and again after any in-place change."""
    key = (weight.data_ptr(), tuple(weight.shape), weight.stride(), weight.dtype)  # a bf16 and an fp32 view may share the rest
    storage, version = weight.untyped_storage(), weight._version
    entry = _PACKED.get(key)
    if entry is not None and entry[0]() is storage and entry[1] == version:
        return entry[2]
    p = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
    if entry is not None and entry[0]() is storage:  # a new version of the same weight: replace, same finalizer
        _PACKED[key] = (entry[0], version, p)
    else:  # first sight of this storage here (or a freed one's address reused)
        _PACKED[key] = (weakref.ref(storage), version, p)
        weakref.finalize(storage, _forget, key, _PACKED[key][0])
    return p


def _forget(key, storage_ref) -> None:
    """A storage was freed: drop its packed copy (unless the key now holds another storage's)."""
    entry = _PACKED.get(key)
    if entry is not None and entry[0] is storage_ref:
        del _PACKED[key]


def clear() -> None:
    _PACKED.clear()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) on the packed weight."""
    b = None if bias is None else bias.detach()
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed(weight), b, "none", [], "")
