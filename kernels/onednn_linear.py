"""Few-row fp32 products on oneDNN's prepacked weights: the opt-in `MINAGENT_MATVEC=onednn` policy.

Why. A forward over 2-8 rows (a greedy step checking prompt-lookup drafts, batch-8 decoding, SAG's candidates)
streams every weight once, like one row does, but MKL's small-M sgemm reads the weights at about half the rate
of its one-row product, even split over the threads (kernels/matvec.py). oneDNN's linear on a weight reordered
once into its blocked layout reads them at 1.5-2.4x the split's rate at 5 rows (SmolLM2's matrices, 2-core AMD
EPYC): a SmolLM2 forward of 5 rows after 800 cached tokens 53-56 -> 39-41 ms, a batch-8 step 54-59 -> 42 ms. At
one row it is no faster than the split, so one row stays there.

Costs, and why this is opt-in: a second, blocked copy of every weight it serves (the plain weight stays: the
module forward, training and prefill use it), so weight memory doubles; and two torch-internal ops
(`torch.ops.mkldnn._reorder_linear_weight` / `_linear_pointwise`, what torch.compile's CPU backend calls), which
another torch release may rename: `available()` says whether this torch has them. No gradients flow through a
prepacked weight, so only products that need none come here.

The packed copy is keyed by the weight's address, shape, strides and version counter: an in-place update (an
optimizer step, a LoRA merge) bumps the version, and the next call packs again, replacing the old copy.
`clear()` frees every packed copy.
"""
from __future__ import annotations

import torch

_PACKED: dict[tuple, torch.Tensor] = {}


def available() -> bool:
    """Whether this torch has the two ops (CPU builds with oneDNN do; the pinned torch 2.13.0 does)."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """No gradient is asked of this product (the packed copy is not part of autograd's graph)."""
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _version(weight: torch.Tensor) -> int:
    try:
        return weight._version
    except RuntimeError:  # an inference tensor has no version counter: it cannot change outside inference mode
        return -1


def packed(weight: torch.Tensor) -> torch.Tensor:
    """The weight reordered for oneDNN, packed on first use and again after any in-place change."""
    key = (weight.data_ptr(), tuple(weight.shape), weight.stride(), _version(weight))
    p = _PACKED.get(key)
    if p is None:
        for old in [k for k in _PACKED if k[0] == key[0]]:  # an older version of this buffer
            del _PACKED[old]
        p = _PACKED[key] = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
    return p


def clear() -> None:
    _PACKED.clear()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) on the packed weight."""
    b = None if bias is None else bias.detach()
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed(weight), b, "none", [], "")
