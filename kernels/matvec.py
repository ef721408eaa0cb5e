"""Few-row matrix products on CPU: y = x @ W.T when x holds a handful of rows (decoding, one token per row).

Why this exists. Decoding multiplies each weight matrix by 1-8 vectors, so a step's cost is reading the weights
once. On a 2-core AMD EPYC VM with torch 2.13 (MKL 2024.2), `F.linear` with 1-8 rows runs on one core: it
streams SmolLM2-135M's weights at 5-12 GB/s, while summing the same tensors with both threads reaches 24 GB/s.
Summing proves the memory can go faster; the matrix-vector product is just not spread over the threads.

The fix needs no new kernel. W [N, K] is cut into P row blocks (P = the thread count, views, no copy) and the
blocks go to one batched matmul, which torch runs block-parallel:

    y[:, p*N/P:(p+1)*N/P] = x @ W[p*N/P:(p+1)*N/P].T      for p = 0..P-1, all in one torch.bmm

Each output is still one dot product over K from the same BLAS, so results equal F.linear's up to fp32
rounding (the tests check both orientations against float64). Measured per matrix (GB/s of weights read,
F.linear -> split, 2 threads): SmolLM2's MLP matrices 12-15 -> 19-23 at 1 row and 7-8 -> 10-12 at 8 rows.

Two orientations, because MKL picks different code for each: `x @ Wblock.T` is the faster one for the layer
matrices, `Wblock @ x.T` for a vocabulary head (N >> K: 1.5x the other orientation at 4-8 rows, 113 MB of
weights read at 11-16 GB/s instead of 7-8).

Left to F.linear: small weights (< 2^18 elements: the per-call overhead dominates and splitting loses), more
than MAX_ROWS rows (the BLAS is already threaded there: prefill, training), one thread, non-CPU devices and
dtypes other than fp32 (bf16/fp16 go through oneDNN, which threads on its own).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_ROWS = 8
MIN_WEIGHT_NUMEL = 1 << 18
HEAD_ASPECT = 16  # N >= HEAD_ASPECT * K: a vocabulary head, use the W-side orientation


def split_count(n_out: int) -> int:
    """Row blocks for an [n_out, K] weight: the thread count, or 2 when that does not divide n_out (1 = none)."""
    p = torch.get_num_threads()
    if p > 1 and n_out % p:
        p = 2 if n_out % 2 == 0 else 1
    return p


def wants_split(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when `linear_split` should beat F.linear (see the module docstring for the measurements). Asked for
    every linear layer of every step, so the cheap size tests come first."""
    return (weight.numel() >= MIN_WEIGHT_NUMEL
            and x.numel() <= MAX_ROWS * weight.shape[1]
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == "cpu" and weight.device.type == "cpu"
            and split_count(weight.shape[0]) > 1)


def linear_split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 blocks: int | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) with W's rows cut into `blocks` parallel pieces (default: threads)."""
    N, K = weight.shape
    P = blocks or split_count(N)
    if P <= 1 or N % P:
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    w = weight.view(P, N // P, K)
    if N >= HEAD_ASPECT * K:  # [P, N/P, K] @ [P, K, M] -> [N, M]
        y = torch.bmm(w, x2.t().expand(P, K, M)).reshape(N, M).t()
    else:  # [P, M, K] @ [P, K, N/P] -> [P, M, N/P] -> [M, N]
        y = torch.bmm(x2.expand(P, M, K), w.transpose(1, 2)).transpose(0, 1).reshape(M, N)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, N)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with the thread-split path for few rows on CPU."""
    if wants_split(x, weight):
        return linear_split(x, weight, bias)
    return F.linear(x, weight, bias)
