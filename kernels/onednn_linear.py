"""fp32 products on oneDNN: on the plain weight (on AMD CPUs with AVX-512, the default for products of 2 or more
rows under inference mode: kernels/matvec.py), and on its prepacked copy (the opt-in `MINAGENT_MATVEC=onednn`).

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

The packed copy is found by the weight's address, shape and strides, and used only while it belongs to the same
storage (a weak reference: a new model loaded where a freed one lived gets its own copy) at the same version
counter (an in-place update, an optimizer step or a LoRA merge, bumps it and the next call packs again; a write
through `weight.data`, which has its own counter, is not seen: call `clear()` after one). A copy is dropped when
its storage is freed; `clear()` drops them all.
"""
from __future__ import annotations

import weakref

import torch

_PACKED: dict[tuple, tuple] = {}  # (data_ptr, shape, strides) -> (weakref to storage, version, packed weight)


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
    """x [..., K] @ weight[N, K].T (+ bias), oneDNN's linear on the plain weight."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def packed(weight: torch.Tensor) -> torch.Tensor:
    """The weight reordered for oneDNN, packed on first use and again after any in-place change."""
    key = (weight.data_ptr(), tuple(weight.shape), weight.stride())
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
