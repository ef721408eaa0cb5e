"""CPU fp32 products y = x @ W.T (kernels.linear): which code runs them. First written for few rows (decoding, one
token per row), where the thread split below was the win; on AMD CPUs with AVX-512 oneDNN now takes most.

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

Which path a product takes depends on the CPU, because MKL's speed does (`POLICY`, chosen at import from
/proc/cpuinfo):

    generic (AMD EPYC, measured above: MKL takes its generic code path, one core per few-row product; also
        any CPU not named below): 1-8 rows split into one block per thread (2 blocks on 2 threads; 4 blocks
        measured slower at 8 rows).
    amd-avx512 (an AMD CPU with AVX-512, where this torch has oneDNN's linear): 1-4 rows of a narrow weight go
        to W @ X.T (below); other 1-row products split as above. Every other product of at least
        PLAIN_MIN_MACS multiply-adds goes to oneDNN's linear on the plain weight (kernels/onednn_linear.py; no
        extra memory), under torch.inference_mode() (generation and the agent
        run there; no_grad code keeps MKL, and products that need gradients take oneDNN's training path,
        kernels/onednn_linear.py), and so do 2-8-row products of any size (a decode step
        streams its weights from memory, where oneDNN reads even the small ones faster). MKL's sgemm on AMD
        does not use AVX-512, oneDNN does: on a 2-core AMD EPYC with AVX-512 (2026-11-23),
        prefill-sized products ([512, 576] x SmolLM2's matrices) ran at 430-460 GFLOP/s against 190-210 with
        F.linear (2.1-2.2x; 1.9-2.5x at 16 rows), and a 30-layer SmolLM2-shaped pass at 2-8 rows took 16-18 ms
        against 21-25 ms split (the weights streamed faster than MKL's small-M sgemm reads them, split or
        not). Below ~2M multiply-adds oneDNN's ~10 us a call loses to MKL on data in cache (16 rows x 192 x
        576: 1.0x; 2 rows x 576 x 576: 0.5-0.9x).
        Before either of those, 1-4 rows of a narrow weight go to MKL as W @ X.T (linear_columns): written that
        way, with an even column count, MKL's sgemm streams the weight at 35-51 GB/s on 1-2 threads, where the
        split reads 26-33 and oneDNN 20-33 at 2-4 rows (the same machine, 2026-11-23, weights streamed from
        memory, GB/s of weight read; X.T as a contiguous [K, M] matrix, 1 column, or 5+ columns fall back to
        9-22). It holds while K is small: up to K = 1280 for 3-4 rows, up to 1536 for 1-2; at K >= 1792 the
        same call drops to ~16 GB/s at 3-4 rows and gains nothing at 1-2. Measured on 1 and 2 threads only
        (COLUMNS_MAX_THREADS): more threads keep the paths above. A SmolLM2-135M forward after 1000
        tokens: 1 row 23.3 -> 20.4-21.2 ms, 2 rows 28.8 -> 21.3-22.0, 3 rows 32.0 -> 24.1-24.7 (a 1-row
        vocabulary head keeps the split, which reads it at ~48 GB/s against ~44).
    intel (a 2-core Xeon with AVX-512: MKL's own kernels thread a 1-row product and read the weights at
        22-28 GB/s, the machine's ~24 GB/s plus some L3 hits): splitting 1-2 rows made a SmolLM2 decode step
        slower (28.6 -> 38.5 ms at batch 1), so those stay with F.linear; at 4-8 rows MKL's small-M sgemm reads
        only ~12 GB/s and two blocks per thread help (batch 8: 61.9 -> 54.5 ms a step; one per thread: 59.3).

    onednn (opt-in, MINAGENT_MATVEC=onednn): as amd-avx512 without W @ X.T and without the training path, and
        2-8 rows run on oneDNN's prepacked copy of the weight (kernels/onednn_linear.py: 1.3-1.4x faster forwards
        of 5-8 rows, 2x the weight memory). So do a bf16 model's products of 1-8 rows (wants_prepacked_bf16):
        F.linear and the split read bf16 weights at ~22 GB/s, the prepacked copy at ~31 (SmolLM2's matrices,
        1-5 rows, 2 threads, 2026-11-24), where fp32's best paths read 25-38: only packed does bf16's halved
        bytes show.

Left to F.linear: no_grad code outside inference mode, training outside amd-avx512, small products (weights
under 2^18 elements for the split, under PLAIN_MIN_MACS multiply-adds for oneDNN), prefill outside amd-avx512,
the Intel policy's 1-3 rows, one thread for few rows (but amd-avx512's W @ X.T), non-CPU devices and dtypes
other than fp32 (bf16/fp16 go through oneDNN already, which threads on its own; but the onednn policy's bf16 copy).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import onednn_linear

MAX_ROWS = 8
MIN_WEIGHT_NUMEL = 1 << 18
PLAIN_MIN_MACS = 1 << 21  # below ~2M multiply-adds oneDNN's ~10 us a call loses to MKL (see the docstring)
HEAD_ASPECT = 16  # N >= HEAD_ASPECT * K: a vocabulary head, use the W-side orientation
COLUMNS_MAX_THREADS = 2  # linear_columns was measured at 1 and 2 threads only


class SplitPolicy(NamedTuple):
    """Which path a CPU fp32 product takes. Few rows (up to MAX_ROWS) split from `min_rows` rows on, into
    `blocks_per_thread` blocks per thread; from `prepacked_from` rows on, oneDNN's prepacked copy of the weight
    takes them instead. From `plain_from` rows on (None: never), oneDNN's linear on the plain weight takes any
    product not sent elsewhere, of any number of rows, when it is big enough to pay for the call (PLAIN_MIN_MACS).
    `columns` sends a product of up to r rows whose K is at most k, for any (r, k) listed, to MKL's
    weight-times-columns product (linear_columns), on up to COLUMNS_MAX_THREADS threads. The module docstring has
    the measurements behind each."""
    name: str
    min_rows: int
    blocks_per_thread: int
    prepacked_from: int = MAX_ROWS + 1
    plain_from: int | None = None
    columns: tuple[tuple[int, int], ...] = ()  # (most rows, largest K) pairs that linear_columns takes
    train_on_onednn: bool = False  # products that need gradients, of plain_from rows and PLAIN_MIN_MACS on
    prepacked_bf16: bool = False  # bf16 products of 1-8 rows on oneDNN's prepacked copy (wants_prepacked_bf16)


GENERIC = SplitPolicy("generic", min_rows=1, blocks_per_thread=1)
AMD_AVX512 = SplitPolicy("amd-avx512", min_rows=1, blocks_per_thread=1, plain_from=2,
                         columns=((2, 1536), (4, 1280)), train_on_onednn=True)
INTEL = SplitPolicy("intel", min_rows=4, blocks_per_thread=2)
OFF = SplitPolicy("off", min_rows=MAX_ROWS + 1, blocks_per_thread=1)
ONEDNN = SplitPolicy("onednn", min_rows=1, blocks_per_thread=1, prepacked_from=2, plain_from=MAX_ROWS + 1,
                     prepacked_bf16=True)
POLICIES = {p.name: p for p in (GENERIC, AMD_AVX512, INTEL, OFF, ONEDNN)}


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` of /proc/cpuinfo, or "" where there is none (not Linux, not x86)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The vendor_id from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD", ...), or "" where there is none."""
    return _cpuinfo_field("vendor_id")


def measured_policy() -> SplitPolicy:
    """The policy for this CPU from what was measured: Intel; AMD with AVX-512 (MKL does not use it there,
    oneDNN does) when this torch has oneDNN's linear; anything else (AMD without AVX-512, ARM, no
    /proc/cpuinfo) keeps the generic split, the one measured to beat MKL there without new risk."""
    vendor = cpu_vendor()
    if vendor == "GenuineIntel":
        return INTEL
    if vendor == "AuthenticAMD" and "avx512f" in _cpuinfo_field("flags").split() and onednn_linear.available():
        return AMD_AVX512
    return GENERIC


def default_policy() -> SplitPolicy:
    """MINAGENT_MATVEC=generic|amd-avx512|intel|off|onednn when set (to compare on a new machine), else
    measured_policy()."""
    name = os.environ.get("MINAGENT_MATVEC", "").strip().lower()
    if name:
        if name not in POLICIES:
            raise ValueError(f"environment variable MINAGENT_MATVEC must be one of {', '.join(POLICIES)}; "
                             f"got {name!r}")
        if name in ("onednn", "amd-avx512") and not onednn_linear.available():
            raise ValueError(f"environment variable MINAGENT_MATVEC={name}: this torch has no oneDNN linear ops "
                             "(torch.ops.mkldnn._linear_pointwise); use generic, intel or off")
        return POLICIES[name]
    return measured_policy()


POLICY = default_policy()  # tests and benchmarks may assign another


def split_count(n_out: int, policy: SplitPolicy | None = None) -> int:
    """Row blocks for an [n_out, K] weight: the policy's blocks per thread times the threads, or 2 when that
    does not divide n_out (1 = no split)."""
    threads = torch.get_num_threads()
    if threads <= 1:
        return 1
    for p in (threads * (policy or POLICY).blocks_per_thread, 2):
        if n_out % p == 0:
            return p
    return 1


def wants_split(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when a few-row path (the split, or oneDNN by policy) should beat F.linear (see the module docstring for
    the measurements). Asked for every linear layer of every step, so the cheap size tests come first."""
    policy = POLICY
    return (weight.dim() == 2 and weight.numel() >= MIN_WEIGHT_NUMEL and not torch.is_autocast_enabled("cpu")
            and policy.min_rows * weight.shape[1] <= x.numel() <= MAX_ROWS * weight.shape[1]
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == "cpu" and weight.device.type == "cpu"
            and split_count(weight.shape[0], policy) > 1)


def linear_split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 blocks: int | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) with W's rows cut into `blocks` parallel pieces (default: split_count)."""
    N, K = weight.shape
    P = blocks or split_count(N)
    if P <= 1 or N % P:
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    w = weight.view(P, N // P, K)
    if N >= HEAD_ASPECT * K:  # [P, N/P, K] @ [P, K, M] -> [N, M]; copied into [M, N] (F.linear's layout)
        y = torch.bmm(w, x2.t().expand(P, K, M)).reshape(N, M).t()
        y = y if M == 1 else y.contiguous()
    else:  # [P, M, K] @ [P, K, N/P] -> [P, M, N/P] -> [M, N]
        y = torch.bmm(x2.expand(P, M, K), w.transpose(1, 2)).transpose(0, 1).reshape(M, N)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, N)


def wants_columns(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when the policy sends this few-row product to linear_columns (see the module docstring)."""
    limits = POLICY.columns
    if not limits or weight.dim() != 2 or torch.get_num_threads() > COLUMNS_MAX_THREADS:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False  # F.linear applies autocast's dtype to the bias too
    N, K = weight.shape
    if x.dim() == 0 or x.shape[-1] != K or weight.numel() < MIN_WEIGHT_NUMEL or x.numel() == 0:
        return False
    rows = x.numel() // K
    if rows == 1 and N >= HEAD_ASPECT * K:
        return False  # a vocabulary head: the split streams one row faster
    return (any(rows <= r and K <= k for r, k in limits)
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == "cpu" and weight.device.type == "cpu" and weight.is_contiguous())


def linear_columns(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T (+ bias) as W @ X.T: the rows of x become the columns of the right-hand matrix,
    padded with a zero row to an even count (MKL's product of a weight by 2 or 4 such columns is the fast one;
    1 or 3 are not). The [N, M] result is copied into [M, N] (at most 4 x N floats)."""
    N, K = weight.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K).contiguous()
    M = x2.shape[0]
    if M % 2:
        x2 = torch.cat([x2, x2.new_zeros(1, K)])
    y = torch.mm(weight, x2.t())[:, :M].t().contiguous()
    if bias is not None:  # before the reshape, as linear_split and F.linear broadcast it
        y = y + bias
    return y.reshape(*lead, N)


def wants_plain(x: torch.Tensor, weight: torch.Tensor, min_macs: int = PLAIN_MIN_MACS) -> bool:
    """True when the policy sends this product to oneDNN's linear on the plain weight: enough rows, enough
    multiply-adds to pay for oneDNN's call, fp32 on CPU."""
    rows_from = POLICY.plain_from
    return (rows_from is not None and weight.dim() == 2 and rows_from * weight.shape[1] <= x.numel()
            and x.numel() * weight.shape[0] >= min_macs
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == "cpu" and weight.device.type == "cpu")


def wants_prepacked_bf16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when the policy sends this bf16 product of 1-8 rows to oneDNN's prepacked copy of the weight. bf16
    weights are half the bytes to stream, but F.linear reads them at ~22 GB/s at 1-8 rows (the split no faster);
    the prepacked copy at ~31 GB/s on the 2-core AMD EPYC with AVX-512 (bench/RESULTS.md, sixteenth session).
    Opt-in with the onednn policy, for the same reason as its fp32 copies: the copy doubles weight memory."""
    return (POLICY.prepacked_bf16 and weight.dim() == 2 and weight.dtype == torch.bfloat16
            and x.dtype == torch.bfloat16 and weight.numel() >= MIN_WEIGHT_NUMEL and x.dim() > 0
            and x.shape[-1] == weight.shape[1] and 0 < x.numel() <= MAX_ROWS * weight.shape[1]
            and x.device.type == "cpu" and weight.device.type == "cpu")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with faster CPU fp32 paths by policy: for few rows W @ X.T, the thread split, oneDNN's linear on the
    plain weight, or on its prepacked copy (opt-in); for more rows (prefill), oneDNN's linear on the plain
    weight. The oneDNN paths run under torch.inference_mode() only (see onednn_linear.usable_plain).
    A bias other than [N] of the weight's dtype (one F.linear broadcasts over leading dims, or would refuse for
    its dtype) is left to F.linear: the fast paths add the bias to the flattened [M, N] product. So are shapes that
    do not fit (x's last dim not weight's K): F.linear says so, where the fast paths would fail in a reshape or
    inside oneDNN with a message that names neither tensor."""
    if bias is not None and (bias.dim() != 1 or bias.dtype != weight.dtype):
        return F.linear(x, weight, bias)
    if weight.dim() != 2 or x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        return F.linear(x, weight, bias)  # raises torch's "mat1 and mat2 shapes cannot be multiplied (AxB and CxD)"
    if wants_prepacked_bf16(x, weight) and onednn_linear.usable(x, weight, None):
        y = onednn_linear.linear(x, weight, None)  # (oneDNN reads only an fp32 bias: a bf16 one is added here)
        return y if bias is None else y + bias
    if wants_columns(x, weight):
        return linear_columns(x, weight, bias)
    if wants_split(x, weight):
        if POLICY.prepacked_from * weight.shape[1] <= x.numel() and onednn_linear.usable(x, weight, bias):
            return onednn_linear.linear(x, weight, bias)
        # few rows stream the weights from memory: oneDNN reads even the small matrices faster then, so no
        # PLAIN_MIN_MACS here (a SmolLM2 decode step of 2, 5 or 8 rows was equal or faster without it)
        if wants_plain(x, weight, min_macs=0) and onednn_linear.usable_plain(x, weight, bias):
            return onednn_linear.linear_plain(x, weight, bias)
        return linear_split(x, weight, bias)
    if wants_plain(x, weight):
        if onednn_linear.usable_plain(x, weight, bias):
            return onednn_linear.linear_plain(x, weight, bias)
        if POLICY.train_on_onednn and onednn_linear.usable_training(x, weight, bias):
            return onednn_linear.linear_trainable(x, weight, bias)
    return F.linear(x, weight, bias)
