"""Projections that read the same input, placed side by side in memory so that one matmul serves them all.

q_proj, k_proj and v_proj multiply the same normed hidden state, and so do gate_proj and up_proj. A decoding
step pays a fixed cost for every matmul call and reads weights fastest in long runs, so one [Nq+Nk+Nv, K]
product beats three small ones (SmolLM2-135M, batch 1, 2 CPU threads: ~3 ms of a ~48 ms step).

Checkpoints store the projections separately and minagent keeps HF's names and layout, so packing is only a
*placement*: the loader copies each layer's q/k/v rows into one buffer (gate/up into another) and makes each
Parameter a view of its rows. The state dict, LoRA, export and the optimizer still see ordinary separate
parameters; a forward that needs no weight gradient reads the buffer as one matrix.

The model checks this on every call and never relies on it. Moving the model to another dtype or device
(which gives each parameter its own new tensor), wrapping a projection with LoRA, a forward or backward
hook on one, torch.func transforms, or training the weights (autograd would send the whole gradient of the
packed view to the first projection) each make `packed_projection` return None, and the separate matmuls run as before.

Numerics: in fp32 the packed product gives transformers' logits within assert_close's fp32 tolerances, as the
separate ones do (tested). In bf16/fp16 on CPU, oneDNN blocks a wider matrix differently, so results differ
from three separate products by bf16 rounding (not bit for bit).
"""
from __future__ import annotations

import torch
import torch.nn as nn

# (submodule of a decoder layer, the projections packed together, in the order their rows are stacked)
GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("mlp", ("gate_proj", "up_proj")))


def pack_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> None:
    """Rewrite, in place, each layer's grouped weights (and biases) as row views of one new buffer per group.

    One group is copied at a time and its separate tensors are dropped as they are replaced, so packing a
    loaded checkpoint costs one group's worth of extra memory, not a second copy of the model.
    """
    for i in range(num_layers):
        for block, names in GROUPS:
            for kind in ("weight", "bias"):
                keys = [f"model.layers.{i}.{block}.{name}.{kind}" for name in names]
                if not all(k in state for k in keys):
                    continue
                parts = [state[k] for k in keys]
                if len({(p.dtype, p.device, p.shape[1:]) for p in parts}) != 1:
                    continue
                buffer = torch.cat(parts)
                for key, view in zip(keys, buffer.split([p.shape[0] for p in parts])):
                    state[key] = view


def packed_projection(linears: tuple[nn.Module, ...], kind: type = nn.Linear):
    """(weight, bias) spanning the given linear layers as one matrix, when they are packed and may be read as
    one; else None. bias is None when the layers have none. Asked by every layer at every step, so it only
    compares integers (~15 us for three projections).

    Each layer must be exactly of class `kind` (a subclass may compute something else, a LoRA wrapper does)
    and carry no forward or backward hooks: the packed product never calls the modules, so anything that
    expects to see their calls (a full backward hook is installed by the module call) keeps the separate path."""
    if _global_hooks() or _global_backward_hooks():
        return None
    weights, biases = [], []
    for m in linears:
        if (type(m) is not kind or m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or m._backward_pre_hooks):
            return None
        weights.append(m.weight)
        biases.append(m.bias)
    weight = _contiguous_run(weights)
    if weight is None:
        return None
    if biases[0] is None:
        return (weight, None) if all(b is None for b in biases) else None
    bias = None if any(b is None for b in biases) else _contiguous_run(biases)
    return None if bias is None else (weight, bias)


def _global_hooks() -> bool:
    """Forward hooks registered for every module (nn.modules.module.register_module_forward_hook)."""
    module = nn.modules.module
    return bool(getattr(module, "_global_forward_hooks", None) or getattr(module, "_global_forward_pre_hooks", None))


def _global_backward_hooks() -> bool:
    """Backward hooks registered for every module (nn.modules.module.register_module_full_backward_hook)."""
    module = nn.modules.module
    return bool(getattr(module, "_global_backward_hooks", None)
                or getattr(module, "_global_backward_pre_hooks", None))


def _contiguous_run(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The tensors, stacked along dim 0, as one view of their shared storage: requires that they lie back to
    back in the same storage, contiguous, with one dtype and row stride, and that no gradient is wanted."""
    first = tensors[0]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    try:
        storage = first.untyped_storage().data_ptr()
    except (NotImplementedError, RuntimeError):  # torch.func's wrapped tensors (vmap, jvp) have no storage
        return None
    start, dtype, stride = first.storage_offset(), first.dtype, first.stride()
    offset, rows = start, 0
    for t in tensors:
        if (t.storage_offset() != offset or t.stride() != stride or t.dtype != dtype or not t.is_contiguous()
                or t.untyped_storage().data_ptr() != storage):
            return None
        offset += t.numel()
        rows += t.shape[0]
    return first.as_strided((rows, *first.shape[1:]), stride, start)
