"""Fused linear + cross-entropy: the language-model loss without the [tokens, vocab] logits tensor.

The last step of training is loss = cross_entropy(hidden @ W^T, targets). With Qwen's 151,936-token vocabulary
and 16k tokens per batch, the logits alone are 2.5 G numbers (5 GB in bf16), and the naive path keeps more
tensors of that size alive (the softmax for the backward, then its gradient). That is often the largest
allocation of a whole training step.

Two facts remove it:
  1. The gradient of mean cross-entropy with respect to a row of logits is known in closed form,
         dlogits = (softmax(logits) - onehot(target)) / n_valid
     so it can be computed in the *forward* pass, right after the loss, and the logits need never be kept.
  2. Rows are independent. Processing CHUNK tokens at a time, only a [CHUNK, vocab] block ever exists:
         logits_c = h_c @ W^T                    (one matmul)
         loss_c, dlogits_c = CE(logits_c)        (in place: the gradient overwrites the logits)
         dh_c  = dlogits_c @ W                   (the hidden-state gradient for these rows, final)
         dW   += dlogits_c^T @ h_c               (summed over chunks, in fp32)
Peak memory is then one chunk of logits plus dW and dh, independent of how many tokens the batch holds; the
backward just scales the stored dh and dW by the incoming gradient (1.0 for a loss).

The per-row CE (the only non-matmul work) is a Triton kernel on GPU: one program per row makes two passes over
the vocabulary: an online max / sum-of-exponentials for the log-sum-exp, then the gradient written over the
logits. A PyTorch version of the same step serves the CPU, so CPU training gets the memory saving too.
Rows whose target is ignore_index add no loss and get zero gradient, so they are dropped before the products
(in SFT most rows are prompts and observations); the mean divides by the valid rows only.

On CPUs whose matvec policy trains on oneDNN (amd-avx512: MKL's sgemm does not use AVX-512 there, oneDNN does),
the two products of a chunk that the head's size makes the step's largest, h_c @ W^T and dlogits_c @ W, run on
oneDNN's linear (the second on a contiguous copy of W^T, made once per call: vocab x hidden floats); the weight
gradient keeps MKL, which reads the transposed chunk as it is.
"""
import numbers

import torch
import torch.nn.functional as F

from . import matvec, onednn_linear
from ._triton import next_power_of_2, tl, triton


def linear_cross_entropy_reference(hidden, weight, targets, ignore_index=-100, reduction="mean"):
    """The naive path: materialise the logits, then torch's cross-entropy."""
    logits = hidden.reshape(-1, hidden.shape[-1]) @ weight.T
    return F.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=ignore_index, reduction=reduction)


def _ce_chunk_torch(logits, targets, ignore_index, grad_scale):
    """Row losses (fp32) of a chunk; overwrites `logits` with d(loss)/d(logits) * grad_scale.

    In place, five passes over the chunk and no [rows, vocab] temporary (fp32 logits): max, subtract and exp,
    sum, scale. On CPU this elementwise work, not the matmuls, used to be most of the loss's time."""
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    rows = torch.arange(len(targets), device=logits.device)
    picked = x[rows, safe]  # the target logits, read before x is overwritten
    m = x.amax(dim=-1, keepdim=True)
    total = x.sub_(m).exp_().sum(dim=-1, keepdim=True)  # x now holds exp(logit - max)
    loss = torch.where(valid, (m + total.log()).squeeze(-1) - picked, 0.0)
    x.mul_((valid[:, None] * grad_scale) / total)  # softmax, times the loss scale; zero on ignored rows
    x[rows, safe] -= valid * grad_scale  # minus the one-hot target
    if x is not logits:
        logits.copy_(x)
    return loss


@triton.jit
def _ce_kernel(LOGITS, TARGETS, LOSS, GRAD_SCALE, stride, V, ignore_index, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride
    target = tl.load(TARGETS + row)
    valid = target != ignore_index
    cols = tl.arange(0, BLOCK_V)
    m = float("-inf")
    s = 0.0
    for start in range(0, V, BLOCK_V):  # pass 1: online log-sum-exp
        x = tl.load(base + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    safe_target = tl.where(valid, target, 0)
    x_target = tl.load(base + safe_target).to(tl.float32)
    tl.store(LOSS + row, tl.where(valid, lse - x_target, 0.0))
    scale = tl.where(valid, tl.load(GRAD_SCALE), 0.0)
    for start in range(0, V, BLOCK_V):  # pass 2: gradient over the logits, in place
        idx = start + cols
        x = tl.load(base + idx, mask=idx < V, other=0.0).to(tl.float32)
        g = tl.exp(x - lse)
        g = tl.where(idx == safe_target, g - 1.0, g) * scale
        tl.store(base + idx, g, mask=idx < V)


def _ce_chunk_triton(logits, targets, ignore_index, grad_scale):
    C, V = logits.shape
    loss = torch.empty(C, dtype=torch.float32, device=logits.device)
    block = min(next_power_of_2(V), 4096 if logits.is_cuda else 1024)
    _ce_kernel[(C,)](logits, targets, loss, grad_scale, logits.stride(0), V, ignore_index,
                     BLOCK_V=block, num_warps=8 if block >= 2048 else 4)
    return loss


def default_chunk_size(n_rows: int, vocab: int, element_size: int) -> int:
    """Rows per chunk: about 512 MiB of logits, a power of two, at least 64 (matmuls want some height)."""
    rows = max(64, (1 << 29) // max(1, vocab * element_size))
    return min(max(1, n_rows), 1 << (rows.bit_length() - 1))


_MIXED_ADDMM = {"cuda": True}  # device types whose torch.addmm takes bf16/fp16 factors into an fp32 sum


def _add_product(acc, a, b):
    """acc += a @ b, acc in fp32 (or fp64) and a, b maybe bf16/fp16: the weight gradient summed over chunks.

    Where torch has it (CUDA), one cuBLAS call multiplies the low-precision factors and adds into the fp32 sum
    (addmm with out_dtype); elsewhere the product is formed in the factors' dtype, then added (one [V, H]
    temporary per chunk)."""
    if acc.dtype == a.dtype:
        acc.addmm_(a, b)
        return
    if _MIXED_ADDMM.get(acc.device.type):
        try:
            torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
            return
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, NotImplementedError):  # an older torch: take the general path from now on
            _MIXED_ADDMM[acc.device.type] = False
    acc += a @ b


def _products_on_onednn(h, w) -> bool:
    """Whether the chunks' products go to oneDNN (see the module docstring): the policy says so, fp32 on CPU,
    oneDNN on, and the product big enough to pay for its call."""
    return (matvec.POLICY.train_on_onednn and h.dtype == torch.float32 and w.dtype == torch.float32
            and h.device.type == "cpu" and w.device.type == "cpu" and onednn_linear.available()
            and torch._C._get_mkldnn_enabled() and h.numel() * w.shape[0] >= matvec.PLAIN_MIN_MACS)


class LinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, chunk_size, ce_chunk, grad_enabled):
        H = hidden.shape[-1]
        if weight.dim() != 2 or weight.shape[1] != H:
            raise ValueError(f"fused_linear_cross_entropy: weight must be [vocab, {H}], got {tuple(weight.shape)}")
        h = hidden.reshape(-1, H)
        t = targets.reshape(-1)
        if t.shape[0] != h.shape[0]:
            raise ValueError(f"fused_linear_cross_entropy: {h.shape[0]} hidden rows but {t.shape[0]} targets")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"fused_linear_cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
                                       or chunk_size < 0):
            # (a negative size made the chunk loop run zero times: a loss of 0 and no gradient, silently)
            raise ValueError(f"fused_linear_cross_entropy: chunk_size must be a positive number of rows "
                             f"(or None/0 for the default), got {chunk_size!r}")
        # Under autocast the products run in the autocast dtype, as they would for `hidden @ weight.T`; autocast
        # itself is switched off inside (a custom Function sees it still on), so every dtype here is explicit.
        dev = h.device.type
        autocast = torch.is_autocast_enabled(dev) and h.dtype != torch.float64  # autocast leaves fp64 alone
        compute = torch.get_autocast_dtype(dev) if autocast else h.dtype
        h, w = h.to(compute), weight.to(compute)
        N, V = h.shape[0], w.shape[0]
        t = t.to(torch.int64).contiguous()
        scale_dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
        if reduction == "mean":  # a tensor, not a Python number; fp64 for fp64 inputs from the start
            grad_scale = 1.0 / (t != ignore_index).sum().to(scale_dtype)
        else:
            grad_scale = torch.ones((), dtype=scale_dtype, device=h.device)
        grad_scale = grad_scale.reshape(1)
        # Rows whose target is ignored add no loss and get zero gradient: leave them out of the products. In SFT
        # that is most rows (prompts, observations), and the head's three products are often the step's largest.
        # (Finding them reads the mask on the host: one device sync per call.)
        kept = (t != ignore_index).nonzero().squeeze(1)
        if len(kept):  # as F.cross_entropy: a target outside the vocabulary is an error, not a wrapped index
            low, high = t[kept].aminmax()
            if low < 0 or high >= V:
                raise IndexError(f"Target {int(low) if low < 0 else int(high)} is out of bounds "
                                 f"(vocabulary of {V}; ignore_index {ignore_index})")
        compact = len(kept) < N
        if compact:
            h, t = h.index_select(0, kept), t.index_select(0, kept)
        chunk = chunk_size or default_chunk_size(len(h), V, h.element_size())
        # Gradients only when a backward can come: under no_grad (evaluation) requires_grad is still set on the
        # weights, and computing them anyway costs two extra products per chunk and a [vocab, hidden] fp32 buffer.
        grad_h = torch.empty_like(h) if grad_enabled and hidden.requires_grad else None
        acc_dtype = torch.promote_types(h.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        grad_w = (torch.zeros(w.shape, dtype=acc_dtype, device=h.device) if grad_enabled and weight.requires_grad
                  else None)
        loss = torch.zeros((), dtype=acc_dtype, device=h.device)
        with torch.autocast(dev, enabled=False):
            loss = LinearCrossEntropyFunction._chunks(h, w, t, ignore_index, chunk, ce_chunk, grad_scale, grad_h,
                                                      grad_w, loss)
        if compact and grad_h is not None:
            grad_h = torch.zeros((N, H), dtype=grad_h.dtype, device=grad_h.device).index_copy_(0, kept, grad_h)
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        return loss * grad_scale[0]

    @staticmethod
    def _chunks(h, w, t, ignore_index, chunk, ce_chunk, grad_scale, grad_h, grad_w, loss):
        """The loss summed over chunks of rows; fills grad_h and adds into grad_w (see the module docstring)."""
        on_onednn = _products_on_onednn(h, w)
        w_t = w.t().contiguous() if on_onednn and grad_h is not None else None  # oneDNN reads no strided weight
        for start in range(0, len(h), chunk):
            hc, tc = h[start:start + chunk], t[start:start + chunk]
            logits = onednn_linear.linear_plain(hc, w) if on_onednn else hc @ w.T
            loss += ce_chunk(logits, tc, ignore_index, grad_scale).sum()
            if w_t is not None:
                grad_h[start:start + chunk] = onednn_linear.linear_plain(logits, w_t)
            elif grad_h is not None:
                torch.matmul(logits, w, out=grad_h[start:start + chunk])
            if grad_w is not None:
                _add_product(grad_w, logits.T, hc)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        if grad_h is not None:
            grad_h = (grad_h * grad_loss.to(grad_h.dtype)).view(ctx.hidden_shape).to(ctx.hidden_dtype)
        if grad_w is not None:
            grad_w = grad_w * grad_loss.to(grad_w.dtype)
        return grad_h, grad_w, None, None, None, None, None, None


def fused_linear_cross_entropy(hidden, weight, targets, ignore_index=-100, reduction="mean", chunk_size=None,
                               use_triton=False):
    """cross_entropy(hidden @ weight.T, targets) in fp32 (fp64 for fp64 inputs) without materialising the logits.

    hidden [..., H], weight [V, H], targets [...] (same leading shape). Returns a 0-dim fp32 tensor.
    """
    ce_chunk = _ce_chunk_triton if use_triton and hidden.dtype != torch.float64 else _ce_chunk_torch
    return LinearCrossEntropyFunction.apply(hidden, weight, targets, ignore_index, reduction, chunk_size, ce_chunk,
                                            torch.is_grad_enabled())  # (inside forward, grad mode is always off)
