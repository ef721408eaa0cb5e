"""Flash attention (the FlashAttention-2 algorithm) in Triton: forward, backward and a decode path.

Attention is softmax(q k^T * scale) v. Written plainly it builds the [Tq, Tk] score matrix per head: 16k tokens
make 256M scores per head, far more than the q, k, v they come from. Flash attention never builds it.

Forward: online softmax. A program owns a block of BLOCK_M query rows and walks the keys in blocks of
BLOCK_N, keeping for each row only a running max m, a running sum of exponentials l, and an unnormalised
output accumulator acc. For each key block with scores s:
    m_new = max(m, rowmax(s));  p = exp(s - m_new);  alpha = exp(m - m_new)
    l = l * alpha + rowsum(p);  acc = acc * alpha + p @ v;  m = m_new
Rescaling by alpha keeps every earlier term as if it had been computed with the final max, so after the last
block out = acc / l is the exact softmax average. Memory is O(T) per head instead of O(T^2), and q, the
running state and each k/v block stay in fast on-chip memory. Exponentials use exp2 with log2(e) folded into the
scale (one multiply cheaper per score), so m and l live in base-2 units.

The forward also stores one number per row, the log-sum-exp lse = m + log2(l). That is all the backward
needs to *recompute* every probability exactly, p = exp2(s - lse), instead of having saved the [T, T]
matrix: it pays a second q k^T to save O(T^2) memory.

Backward. With dO the output gradient and delta = rowsum(dO * O):
    dV = P^T dO        dP = dO V^T        dS = P * (dP - delta)        dQ = dS K * scale    dK = dS^T Q * scale
Two kernels split the work so nothing needs atomics: one owns a block of keys and loops over the queries that
can see it (accumulating dK and dV), the other owns a block of queries and loops over keys (accumulating dQ).

Causal masking. A query block only needs the key blocks up to its diagonal, so the loops stop there and the
upper triangle is never computed (half the flops). Only the blocks that straddle the diagonal (or a ragged end)
need the element-wise mask, so each loop runs in two parts: full blocks without masking, then the masked ones.
When Tq < Tk the queries are the *last* Tq positions (decoding against a cache): query i sits at i + Tk - Tq.

Grouped-query attention (Hq query heads share Hk = Hq / G key/value heads). Query head h reads kv head
h // G straight from K and V; nothing is repeated in memory. The dK/dV kernel owns a kv head and loops over its
group's query heads, so each key block's gradient is summed over the group in registers (optionally split over
a few programs when the batch is too small to fill the GPU, then added up by torch).

Packed documents. Pretraining and SFT batches pack several documents into one row. `doc_ids` [B, Tk] labels
each key position; every run of equal ids is one document, and a token attends only inside its own run. Runs
are contiguous, so a query block's keys start at its first token's document start: the loops skip everything
before it, and packing costs less than one long sequence instead of more.

Decode. Generating one token (or a few) gives Tq * G tiny query rows per kv head. The decode path packs all
query heads of a group into one block (K/V are read once for the group) and splits the cache into chunks that
run in parallel ("flash decoding"); each chunk returns its partial output and lse, and a few torch ops merge
them: out = sum_i exp(lse_i - lse) * out_i with lse = logsumexp_i(lse_i).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._triton import INTERPRETER, next_power_of_2, tl, triton

LOG2E = 1.4426950408889634


def attention_reference(q, k, v, *, causal=True, scale=None, doc_ids=None, attn_mask=None):
    """Plain softmax attention in the inputs' dtype: the math every path must reproduce (tests use float64)."""
    B, HQ, TQ, D = q.shape
    group = HQ // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else D ** -0.5)
    allowed = attention_mask(B, TQ, k.shape[2], q.device, causal, doc_ids, attn_mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


def attention_mask(B, TQ, TK, device, causal, doc_ids=None, attn_mask=None):
    """The bool mask [B, 1, Tq, Tk] (True = may attend) that causal/doc_ids/attn_mask describe, or None; an
    additive float attn_mask stays additive (-inf where doc_ids forbid)."""
    allowed = None
    if attn_mask is not None:
        allowed = attn_mask
    elif causal:
        allowed = torch.ones(TQ, TK, dtype=torch.bool, device=device).tril(TK - TQ)
    if doc_ids is not None:
        seg = document_runs(doc_ids)[0]
        same = seg[:, TK - TQ:, None] == seg[:, None, :]
        if allowed is None:
            allowed = same[:, None]
        elif allowed.dtype == torch.bool:
            allowed = allowed & same[:, None]
        else:
            allowed = allowed.masked_fill(~same[:, None], float("-inf"))
    return allowed


def document_runs(doc_ids: torch.Tensor):
    """For doc_ids [B, T]: run index, run start and run end (exclusive) of every position, int32 [B, T] each."""
    B, T = doc_ids.shape
    pos = torch.arange(T, device=doc_ids.device).expand(B, T)
    new = torch.ones_like(doc_ids, dtype=torch.bool)
    new[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    seg = new.cumsum(dim=1) - 1
    start = torch.where(new, pos, 0).cummax(dim=1).values
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    end = torch.where(last, pos + 1, T).flip(1).cummin(dim=1).values.flip(1)
    return seg.int().contiguous(), start.int().contiguous(), end.int().contiguous()


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """RoPE positions for a packed row: each document counts from 0 again (int64 [B, T])."""
    _, start, _ = document_runs(doc_ids)
    return torch.arange(doc_ids.shape[1], device=doc_ids.device) - start.long()


# ----------------------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------------------

@triton.jit
def _key_range(SEG_START, SEG_END, b, m0, TQ, TK, OFF, CAUSAL: tl.constexpr, DOCS: tl.constexpr,
               HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys [lo, hi) that rows m0..m0+BLOCK_M may see; blocks from `mid` on need the element-wise mask."""
    lo = m0 * 0  # tensors from the start (TK may arrive as a compile-time 1)
    hi = lo + TK
    if CAUSAL:
        hi = tl.minimum(hi, OFF + m0 + BLOCK_M)
    if DOCS:  # runs are contiguous: nothing before the first row's document start, nothing after the last's end
        lo = tl.load(SEG_START + b * TK + OFF + m0)
        hi = tl.minimum(hi, tl.load(SEG_END + b * TK + OFF + tl.minimum(m0 + BLOCK_M, TQ) - 1))
        lo = (lo // BLOCK_N) * BLOCK_N
    if DOCS:  # a block may hold two documents: mask them all
        mid = lo
    elif HAS_MASK:
        mid = lo
    elif CAUSAL:
        mid = tl.maximum(lo, ((OFF + m0) // BLOCK_N) * BLOCK_N)
    else:
        mid = (TK // BLOCK_N) * BLOCK_N  # only the ragged end needs a mask
    return lo, tl.minimum(mid, hi), hi


@triton.jit
def _allowed(ok, qi, kj, OFF, q_seg, SEG, seg_base, kin, MASK, mask_rows, smk,
             CAUSAL: tl.constexpr, DOCS: tl.constexpr, HAS_MASK: tl.constexpr):
    """Which (query, key) pairs of a tile may attend: `ok` (keys in range) and the causal, document and explicit-mask
    rules. One definition for the forward and the dQ pass, so the two can never disagree."""
    if CAUSAL:
        ok = ok & (kj[None, :] <= (qi + OFF)[:, None])
    if DOCS:
        k_seg = tl.load(SEG + seg_base + kj, mask=kin, other=-2)
        ok = ok & (q_seg[:, None] == k_seg[None, :])
    if HAS_MASK:
        allowed = tl.load(MASK + mask_rows[:, None] + kj[None, :] * smk, mask=kin[None, :], other=0)
        ok = ok & (allowed != 0)
    return ok


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, k_base, v_base, skt, svt, qi, q_seg, SEG, seg_base,
               MASK, mask_rows, smk, lo, hi, TK, OFF, scale_log2, d, dmask,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOCS: tl.constexpr, HAS_MASK: tl.constexpr,
               BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        kj = start_n + tl.arange(0, BLOCK_N)
        kin = kj < TK
        k = tl.load(K + k_base + kj[None, :] * skt + d[:, None], mask=dmask[:, None] & kin[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * scale_log2
        if MASKED:
            ok = _allowed((kj < hi)[None, :], qi, kj, OFF, q_seg, SEG, seg_base, kin, MASK, mask_rows, smk,
                          CAUSAL, DOCS, HAS_MASK)
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + v_base + kj[:, None] * svt + d[None, :], mask=kin[:, None] & dmask[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, SEG, SEG_START, SEG_END, MASK,
              sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
              sob, soh, sot, sos, slb, slh, slt, sls, smb, smh, smq, smk,
              HK, TQ, TK, D, OFF, scale_log2, keys_per_split,
              GROUP: tl.constexpr, CAUSAL: tl.constexpr, DOCS: tl.constexpr, HAS_MASK: tl.constexpr,
              PACK_GQA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    split = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    if PACK_GQA:  # rows are (query head in the group, query) pairs of one kv head
        b = pid_bh // HK
        hk = pid_bh % HK
        head = hk * GROUP + rows // TQ
        qi = rows % TQ
        row_ok = rows < GROUP * TQ
    else:  # rows are consecutive queries of one query head
        b = pid_bh // (HK * GROUP)
        h = pid_bh % (HK * GROUP)
        hk = h // GROUP
        head = tl.zeros([BLOCK_M], dtype=tl.int32) + h
        qi = rows
        row_ok = rows < TQ
    b = b.to(tl.int64)
    head = head.to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D

    q = tl.load(Q + b * sqb + head[:, None] * sqh + qi[:, None] * sqt + d[None, :],
                mask=row_ok[:, None] & dmask[None, :], other=0.0)
    k_base = b * skb + hk * skh
    v_base = b * svb + hk * svh
    seg_base = b * TK
    q_seg = tl.load(SEG + seg_base + OFF + qi, mask=row_ok, other=-1) if DOCS else qi
    mask_rows = tl.where(row_ok, b * smb + head * smh + qi * smq, 0)  # padded rows: read a real row

    if PACK_GQA:  # few rows, all blocks masked; this program handles one chunk of the keys
        lo = split * keys_per_split
        mid = lo
        hi = tl.minimum(TK, lo + keys_per_split)
    else:
        lo, mid, hi = _key_range(SEG_START, SEG_END, b, pid_m * BLOCK_M, TQ, TK, OFF, CAUSAL, DOCS, HAS_MASK,
                                 BLOCK_M, BLOCK_N)

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30  # finite: a row may see no key in a block
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, k_base, v_base, skt, svt, qi, q_seg, SEG, seg_base,
                               MASK, mask_rows, smk, lo, mid, TK, OFF, scale_log2, d, dmask,
                               False, CAUSAL, DOCS, HAS_MASK, BLOCK_N, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, k_base, v_base, skt, svt, qi, q_seg, SEG, seg_base,
                               MASK, mask_rows, smk, mid, hi, TK, OFF, scale_log2, d, dmask,
                               True, CAUSAL, DOCS, HAS_MASK, BLOCK_N, PRECISION)

    empty = l_i == 0.0  # a row that saw no key (only possible with a mask or a key chunk past its diagonal)
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(l_safe))
    o_rows = b * sob + head * soh + qi * sot + split * sos
    tl.store(O + o_rows[:, None] + d[None, :], out, mask=row_ok[:, None] & dmask[None, :])
    tl.store(LSE + b * slb + head * slh + qi * slt + split * sls, lse, mask=row_ok)


# ----------------------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------------------

@triton.jit
def _attn_bwd_delta(O, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, HQ, TQ, D,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta = rowsum(dO * O), the softmax backward's per-row correction."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HQ).to(tl.int64)
    h = (pid_bh % HQ).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    mask = (rows < TQ)[:, None] & (d < D)[None, :]
    o = tl.load(O + b * sob + h * soh + rows[:, None] * sot + d[None, :], mask=mask, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdt + d[None, :], mask=mask, other=0.0)
    tl.store(DELTA + pid_bh * TQ + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < TQ)


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, q_base, do_base, stat_base, sqt, sdt,
                kj, k_seg, SEG, seg_base, MASK, mask_base, smq, smk, lo, hi, TQ, TK, OFF, scale_log2, d, dmask,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOCS: tl.constexpr, HAS_MASK: tl.constexpr,
                BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):
    # Works on the transposed scores sT = k q^T [BLOCK_N, BLOCK_M] so dV and dK come out as plain dots.
    for start_m in range(lo, hi, BLOCK_M):
        qi = start_m + tl.arange(0, BLOCK_M)
        qin = qi < TQ
        q = tl.load(Q + q_base + qi[:, None] * sqt + d[None, :], mask=qin[:, None] & dmask[None, :], other=0.0)
        do = tl.load(DO + do_base + qi[:, None] * sdt + d[None, :], mask=qin[:, None] & dmask[None, :], other=0.0)
        lse = tl.load(LSE + stat_base + qi, mask=qin, other=0.0)
        delta = tl.load(DELTA + stat_base + qi, mask=qin, other=0.0)
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION) * scale_log2
        pT = tl.math.exp2(sT - lse[None, :])  # padded query rows have q = dO = 0: they add nothing
        if MASKED:
            ok = qin[None, :] & (kj < TK)[:, None]
            if CAUSAL:
                ok = ok & (kj[:, None] <= (qi + OFF)[None, :])
            if DOCS:
                q_seg = tl.load(SEG + seg_base + OFF + qi, mask=qin, other=-1)
                ok = ok & (k_seg[:, None] == q_seg[None, :])
            if HAS_MASK:
                allowed = tl.load(MASK + mask_base + qi[None, :] * smq + kj[:, None] * smk,
                                  mask=qin[None, :] & (kj < TK)[:, None], other=0)
                ok = ok & (allowed != 0)
            pT = tl.where(ok, pT, 0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision=PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, SEG, SEG_START, SEG_END, MASK,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                   sdkb, sdkh, sdkt, sdks, sdvb, sdvh, sdvt, sdvs, smb, smh, smq, smk,
                   HK, TQ, TK, D, OFF, scale, scale_log2,
                   GROUP: tl.constexpr, HEADS_PER_PROGRAM: tl.constexpr, CAUSAL: tl.constexpr,
                   DOCS: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    part = tl.program_id(2)  # which slice of the group's query heads this program sums over
    b = (pid_bh // HK).to(tl.int64)
    hk = (pid_bh % HK).to(tl.int64)
    n0 = pid_n * BLOCK_N
    kj = n0 + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    kv_mask = (kj < TK)[:, None] & dmask[None, :]
    k = tl.load(K + b * skb + hk * skh + kj[:, None] * skt + d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + hk * svh + kj[:, None] * svt + d[None, :], mask=kv_mask, other=0.0)
    seg_base = b * TK
    k_seg = tl.load(SEG + seg_base + kj, mask=kj < TK, other=-2) if DOCS else kj

    # The queries that can see this key block: [lo, hi), the first ones (up to mid) straddle the diagonal.
    lo = n0 * 0
    hi = lo + TQ
    if CAUSAL:
        lo = tl.maximum(lo, n0 - OFF)
    if DOCS:
        lo = tl.maximum(lo, tl.load(SEG_START + seg_base + n0) - OFF)
        hi = tl.minimum(hi, tl.load(SEG_END + seg_base + tl.minimum(n0 + BLOCK_N, TK) - 1) - OFF)
    lo = (lo // BLOCK_M) * BLOCK_M
    if DOCS:
        mid = hi
    elif HAS_MASK:
        mid = hi
    elif CAUSAL:
        mid = tl.minimum(hi, lo + tl.cdiv(tl.maximum(n0 + BLOCK_N - OFF - lo, 0), BLOCK_M) * BLOCK_M)
    else:
        mid = lo

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for g in range(HEADS_PER_PROGRAM):
        h = hk * GROUP + part * HEADS_PER_PROGRAM + g
        q_base = b * sqb + h * sqh
        do_base = b * sdb + h * sdh
        stat_base = (b * HK * GROUP + h) * TQ
        mask_base = b * smb + h * smh
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, q_base, do_base, stat_base, sqt, sdt,
                             kj, k_seg, SEG, seg_base, MASK, mask_base, smq, smk, lo, mid, TQ, TK, OFF,
                             scale_log2, d, dmask, True, CAUSAL, DOCS, HAS_MASK, BLOCK_M, PRECISION)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, q_base, do_base, stat_base, sqt, sdt,
                             kj, k_seg, SEG, seg_base, MASK, mask_base, smq, smk, mid, hi, TQ, TK, OFF,
                             scale_log2, d, dmask, False, CAUSAL, DOCS, HAS_MASK, BLOCK_M, PRECISION)
    tl.store(DK + b * sdkb + hk * sdkh + part * sdks + kj[:, None] * sdkt + d[None, :], dk * scale, mask=kv_mask)
    tl.store(DV + b * sdvb + hk * sdvh + part * sdvs + kj[:, None] * sdvt + d[None, :], dv, mask=kv_mask)


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, SEG, SEG_START, SEG_END, MASK,
                 sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sdqb, sdqh, sdqt,
                 smb, smh, smq, smk, HK, TQ, TK, D, OFF, scale, scale_log2,
                 GROUP: tl.constexpr, CAUSAL: tl.constexpr, DOCS: tl.constexpr, HAS_MASK: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // (HK * GROUP)).to(tl.int64)
    h = (pid_bh % (HK * GROUP)).to(tl.int64)
    hk = h // GROUP
    m0 = pid_m * BLOCK_M
    qi = m0 + tl.arange(0, BLOCK_M)
    qin = qi < TQ
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    rows_mask = qin[:, None] & dmask[None, :]
    q = tl.load(Q + b * sqb + h * sqh + qi[:, None] * sqt + d[None, :], mask=rows_mask, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + qi[:, None] * sdt + d[None, :], mask=rows_mask, other=0.0)
    lse = tl.load(LSE + pid_bh * TQ + qi, mask=qin, other=0.0)
    delta = tl.load(DELTA + pid_bh * TQ + qi, mask=qin, other=0.0)
    seg_base = b * TK
    q_seg = tl.load(SEG + seg_base + OFF + qi, mask=qin, other=-1) if DOCS else qi
    mask_rows = tl.where(qin, b * smb + h * smh + qi * smq, 0)
    k_base = b * skb + hk * skh
    v_base = b * svb + hk * svh

    lo, mid, hi = _key_range(SEG_START, SEG_END, b, m0, TQ, TK, OFF, CAUSAL, DOCS, HAS_MASK, BLOCK_M, BLOCK_N)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        kj = start_n + tl.arange(0, BLOCK_N)
        kin = kj < TK
        kv_mask = kin[:, None] & dmask[None, :]
        k = tl.load(K + k_base + kj[:, None] * skt + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + v_base + kj[:, None] * svt + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
        p = tl.math.exp2(s - lse[:, None])  # padded keys have k = v = 0: they add nothing to dQ
        if start_n >= mid:  # a block on the diagonal, a document edge or a ragged end
            ok = _allowed(kin[None, :], qi, kj, OFF, q_seg, SEG, seg_base, kin, MASK, mask_rows, smk,
                          CAUSAL, DOCS, HAS_MASK)
            p = tl.where(ok, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    tl.store(DQ + b * sdqb + h * sdqh + qi[:, None] * sdqt + d[None, :], dq * scale, mask=rows_mask)


# ----------------------------------------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------------------------------------

def _configs(pairs):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in pairs]


_TUNE_KEY = ["BLOCK_D", "CAUSAL", "DOCS", "HAS_MASK", "PRECISION"]
if INTERPRETER:  # the interpreter runs one configuration; small blocks exercise the multi-block paths
    _fwd = _dq = _dkdv = None
else:
    # (BLOCK_M queries, BLOCK_N keys, warps, stages). Kept to the ones `python -m kernels.compile_check` shows
    # spilling little or nothing at head_dim 64 and 128 on sm_90: each extra config costs compile time.
    _fwd = triton.autotune(_configs([(128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 3), (64, 32, 4, 4)]),
                           key=_TUNE_KEY)(_attn_fwd)
    _dq = triton.autotune(_configs([(128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (128, 32, 8, 4)]),
                          key=_TUNE_KEY)(_attn_bwd_dq)
    _dkdv = triton.autotune(_configs([(64, 128, 8, 3), (32, 128, 8, 4), (32, 64, 4, 3), (64, 64, 4, 3)]),
                            key=_TUNE_KEY + ["HEADS_PER_PROGRAM"])(_attn_bwd_dkdv)

INTERPRETER_BLOCK = 16


FP32_BLOCK = 32  # fp32 on a GPU (tests, not training): small fixed blocks, 3xTF32 dots, no autotuning


def _launch(tuned, kernel, grid_fn, args, consts, blocks=None):
    """Run the autotuned kernel on a GPU, or the plain one with fixed blocks (interpreter, fp32, decode)."""
    if tuned is not None and blocks is None:
        tuned[lambda meta: grid_fn(meta["BLOCK_M"], meta["BLOCK_N"])](*args, **consts)
    else:
        bm, bn = blocks or (INTERPRETER_BLOCK, INTERPRETER_BLOCK)
        kernel[grid_fn(bm, bn)](*args, **consts, BLOCK_M=bm, BLOCK_N=bn, num_warps=4, num_stages=2)


def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def backward_head_splits(B, HK, group, TK, device) -> int:
    """How many programs share one kv head's group in dK/dV: more when B*HK key blocks can't fill the GPU."""
    if device.type != "cuda":
        return 1
    blocks = B * HK * triton.cdiv(TK, 128)
    target = 2 * _sm_count(device)
    for splits in range(1, group + 1):
        if group % splits == 0 and blocks * splits >= target:
            return splits
    return group


def decode_splits(B, HK, TK, device) -> int:
    """How many key chunks decode runs in parallel (flash decoding): enough programs to fill the GPU."""
    if device.type != "cuda":
        return max(1, min(4, triton.cdiv(TK, 64)))
    return max(1, min(triton.cdiv(2 * _sm_count(device), B * HK), triton.cdiv(TK, 256), 64))


# ----------------------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------------------

class _Problem:
    """Shapes, flags and the auxiliary tensors (document runs, mask) shared by forward and backward."""

    def __init__(self, q, k, v, causal, scale, doc_ids, attn_mask):
        if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
            raise ValueError(f"attention: q [B, Hq, Tq, D] and k == v [B, Hk, Tk, D] expected; "
                             f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        B, HQ, TQ, D = q.shape
        _, HK, TK, Dk = k.shape
        if k.shape[0] != B or Dk != D or HQ % HK:
            raise ValueError(f"attention: q {tuple(q.shape)} does not fit k/v {tuple(k.shape)} "
                             f"(same B and D, Hq a multiple of Hk)")
        if not (q.dtype == k.dtype == v.dtype):
            raise ValueError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
        if D > 256:
            raise ValueError(f"attention: head_dim {D} > 256 is not supported by the Triton kernel")
        self.causal = causal and attn_mask is None  # an explicit mask replaces the causal rule
        if doc_ids is not None and TQ > TK:
            raise ValueError(f"attention: doc_ids with more queries ({TQ}) than keys ({TK})")
        if self.causal and TQ > TK:
            raise ValueError(f"attention: causal with more queries ({TQ}) than keys ({TK})")
        self.B, self.HQ, self.HK, self.TQ, self.TK, self.D = B, HQ, HK, TQ, TK, D
        self.group = HQ // HK
        self.offset = TK - TQ
        self.scale = scale if scale is not None else D ** -0.5
        self.block_d = max(16, next_power_of_2(D))
        fp32 = q.dtype == torch.float32
        # fp32 dots: 3xTF32 on tensor cores (about fp32 accuracy; plain "ieee" spills badly), exact in the
        # interpreter. fp16/bf16 ignore the setting.
        self.precision = ("tf32x3" if q.is_cuda else "ieee") if fp32 else "tf32"
        self.blocks = (FP32_BLOCK, FP32_BLOCK) if fp32 and q.is_cuda else None
        dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
        self.docs = doc_ids is not None
        if self.docs:
            if doc_ids.shape != (B, TK):
                raise ValueError(f"attention: doc_ids must be [B, Tk] = [{B}, {TK}], got {tuple(doc_ids.shape)}")
            self.seg, self.seg_start, self.seg_end = document_runs(doc_ids.to(q.device))
        else:
            self.seg = self.seg_start = self.seg_end = dummy
        self.has_mask = attn_mask is not None
        if self.has_mask:
            if attn_mask.dtype != torch.bool or attn_mask.dim() != 4:
                raise ValueError(f"attention: attn_mask must be bool [B|1, H|1, Tq, Tk], "
                                 f"got {attn_mask.dtype} {tuple(attn_mask.shape)}")
            self.mask = attn_mask.expand(B, HQ, TQ, TK).view(torch.uint8)
        else:
            self.mask = torch.zeros((1, 1, 1, 1), dtype=torch.uint8, device=q.device)

    def aux(self):
        return (self.seg, self.seg_start, self.seg_end, self.mask)

    def mask_strides(self):
        return tuple(self.mask.stride()) if self.has_mask else (0, 0, 0, 0)

    def flags(self):
        return dict(GROUP=self.group, CAUSAL=self.causal, DOCS=self.docs, HAS_MASK=self.has_mask,
                    BLOCK_D=self.block_d, PRECISION=self.precision)


def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward(p: _Problem, q, k, v):
    B, HQ, TQ, D = q.shape
    # [B, Tq, Hq, D] memory seen as [B, Hq, Tq, D]: the caller's transpose(1, 2).reshape is then free
    o = torch.empty((B, TQ, HQ, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    lse = torch.empty((B, HQ, TQ), dtype=torch.float32, device=q.device)
    args = (q, k, v, o, lse, *p.aux(), *_strides(q), *_strides(k), *_strides(v), *_strides(o), 0,
            *lse.stride(), 0, *p.mask_strides(), p.HK, TQ, p.TK, D, p.offset, p.scale * LOG2E, p.TK)
    _launch(_fwd, _attn_fwd, lambda bm, bn: (triton.cdiv(TQ, bm), B * HQ, 1), args,
            dict(PACK_GQA=False, **p.flags()), p.blocks)
    return o, lse


def _backward(p: _Problem, q, k, v, o, lse, do):
    B, HQ, TQ, D = q.shape
    do = _last_dim_contiguous(do)
    delta = torch.empty_like(lse)
    _attn_bwd_delta[(triton.cdiv(TQ, 64), B * HQ)](o, do, delta, *_strides(o), *_strides(do), HQ, TQ, D,
                                                    BLOCK_M=64, BLOCK_D=p.block_d)
    dq = torch.empty_like(q)
    _launch(_dq, _attn_bwd_dq, lambda bm, bn: (triton.cdiv(TQ, bm), B * HQ),
            (q, k, v, do, lse, delta, dq, *p.aux(), *_strides(q), *_strides(k), *_strides(v), *_strides(do),
             *_strides(dq), *p.mask_strides(), p.HK, TQ, p.TK, D, p.offset, p.scale, p.scale * LOG2E),
            p.flags(), p.blocks)

    splits = backward_head_splits(B, p.HK, p.group, p.TK, q.device)
    if splits == 1:
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        dk_split = dv_split = 0
    else:  # fp32 partial sums, one per slice of the group, added up below
        dk = torch.empty((B, p.HK, splits, p.TK, D), dtype=torch.float32, device=q.device)
        dv = torch.empty_like(dk)
        dk_split = dv_split = dk.stride(2)
    dk_strides = (dk.stride(0), dk.stride(1), dk.stride(-2), dk_split)
    dv_strides = (dv.stride(0), dv.stride(1), dv.stride(-2), dv_split)
    _launch(_dkdv, _attn_bwd_dkdv, lambda bm, bn: (triton.cdiv(p.TK, bn), B * p.HK, splits),
            (q, k, v, do, lse, delta, dk, dv, *p.aux(), *_strides(q), *_strides(k), *_strides(v),
             *_strides(do), *dk_strides, *dv_strides, *p.mask_strides(), p.HK, TQ, p.TK, D, p.offset,
             p.scale, p.scale * LOG2E),
            dict(HEADS_PER_PROGRAM=p.group // splits, **p.flags()), p.blocks)
    if splits > 1:
        dk, dv = dk.sum(2).to(k.dtype), dv.sum(2).to(v.dtype)
    return dq, dk, dv


def _decode(p: _Problem, q, k, v):
    """Few queries against a long cache: a group's query heads share one block; the keys split into chunks."""
    B, HQ, TQ, D = q.shape
    rows = p.group * TQ
    block_m = max(16, min(64, next_power_of_2(rows)))
    block_n = 64 if q.is_cuda else INTERPRETER_BLOCK
    splits = decode_splits(B, p.HK, p.TK, q.device)
    if p.TK == 0:  # no keys: zeros, as the training path gives
        return q.new_zeros(q.shape)
    keys_per_split = max(block_n, triton.cdiv(triton.cdiv(p.TK, splits), block_n) * block_n)
    splits = triton.cdiv(p.TK, keys_per_split)
    o_part = torch.empty((B, HQ, TQ, splits, D), dtype=torch.float32, device=q.device)
    lse_part = torch.empty((B, HQ, TQ, splits), dtype=torch.float32, device=q.device)
    args = (q, k, v, o_part, lse_part, *p.aux(), *_strides(q), *_strides(k), *_strides(v),
            o_part.stride(0), o_part.stride(1), o_part.stride(2), o_part.stride(3), *lse_part.stride(),
            *p.mask_strides(), p.HK, TQ, p.TK, D, p.offset, p.scale * LOG2E, keys_per_split)
    _launch(None, _attn_fwd, lambda bm, bn: (triton.cdiv(rows, bm), B * p.HK, splits), args,
            dict(PACK_GQA=True, **p.flags()), (block_m, block_n))
    if splits == 1:
        return o_part[:, :, :, 0].to(q.dtype)
    lse_part = lse_part * math.log(2.0)  # base 2 -> natural
    lse = torch.logsumexp(lse_part, dim=-1, keepdim=True)
    weights = torch.exp(lse_part - lse).nan_to_num(0.0)  # a row with no key anywhere: -inf - -inf
    return (weights[..., None] * o_part).sum(dim=3).to(q.dtype)


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, doc_ids, attn_mask):
        q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
        p = _Problem(q, k, v, causal, scale, doc_ids, attn_mask)
        o, lse = _forward(p, q, k, v)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.problem = p
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(ctx.problem, q, k, v, o, lse, do)
        return dq, dk, dv, None, None, None, None


def flash_attention(q, k, v, *, causal=True, scale=None, doc_ids=None, attn_mask=None):
    """Triton attention. Few queries without autograd take the decode path; everything else the FA2 kernels."""
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if not needs_grad and q.shape[2] <= 16 and doc_ids is None:
        q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
        return _decode(_Problem(q, k, v, causal, scale, doc_ids, attn_mask), q, k, v)
    return FlashAttentionFunction.apply(q, k, v, causal, scale, doc_ids, attn_mask)


def attention_sdpa(q, k, v, *, causal=True, scale=None, doc_ids=None, attn_mask=None):
    """The PyTorch path: torch's fused scaled_dot_product_attention; packed documents run one causal call each
    (or, when there are many short ones, as one call with doc_ids turned into a bool mask)."""
    gqa = q.shape[1] != k.shape[1]
    TQ, TK = q.shape[2], k.shape[2]
    if causal and attn_mask is None and TQ > TK:  # (aligned bottom-right, the first rows would see no key)
        raise ValueError(f"attention: causal with more queries ({TQ}) than keys ({TK})")
    if doc_ids is not None and TQ > TK:  # as the Triton path refuses it (queries are the last Tq of the keys)
        raise ValueError(f"attention: doc_ids with more queries ({TQ}) than keys ({TK})")
    if doc_ids is not None and attn_mask is None and causal and TQ == TK:
        starts = _document_starts(doc_ids)
        if starts is not None:
            return _per_document(q, k, v, starts, scale, gqa)
    if attn_mask is None and doc_ids is None:
        if not causal or TQ == 1:  # one query at the end sees every key
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
        if TQ == TK:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        if _prefix_split_applies(q, k, v):
            return _after_cached_prefix(q, k, v, scale)
    mask = attention_mask(q.shape[0], TQ, TK, q.device, causal and attn_mask is None, doc_ids, attn_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _prefix_split_applies(q, k, v) -> bool:
    """Causal queries after a cached prefix (1 < Tq < Tk, no mask), fp32 on CPU, nothing needing a gradient (the
    merge below reads the kernel's log-sum-exp, which autograd does not differentiate)."""
    return (_FLASH_CPU is not None and 1 < q.shape[2] < k.shape[2] and q.device.type == "cpu"
            and q.dtype == k.dtype == v.dtype == torch.float32 and k.shape[1] == v.shape[1]
            and q.shape[1] % k.shape[1] == 0
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)))


def _after_cached_prefix(q, k, v, scale):
    """Tq new queries over Tk = P + Tq keys, the last Tq of them their own (causal, aligned bottom-right): what a
    chunk prefilled after a cached conversation, or a forward over drafted tokens, computes.

    torch's is_causal aligns the triangle top-left when Tq != Tk, so this case used to build a [Tq, Tk] mask in
    every layer, which the fused kernel turns into an additive mask and reads in full, working through the
    masked-out corner too. Instead: the P cached keys, which every new query sees, in one call without a mask
    (query heads folded onto their shared K/V head: [B, Hkv, G*Tq, D], no copy of K/V), the Tq new keys in a
    square causal call, and the two softmaxes merged by their log-sum-exps (exactly how a flash kernel merges
    key blocks). After 4000 cached tokens a 900-token chunk's attention took 53 ms a layer instead of 61, and
    a SmolLM2 prefill of that chunk 2.47 -> 2.19 s (2-core AMD EPYC)."""
    B, H, TQ, D = q.shape
    HK, P = k.shape[1], k.shape[2] - TQ
    G = H // HK
    kw = {} if scale is None else {"scale": scale}
    out_prefix, lse_prefix = _FLASH_CPU(q.reshape(B, HK, G * TQ, D), k[:, :, :P], v[:, :, :P], **kw)
    out_prefix, lse_prefix = out_prefix.reshape(B, H, TQ, D), lse_prefix.reshape(B, H, TQ)
    k_new, v_new = k[:, :, P:], v[:, :, P:]
    if G > 1:
        k_new, v_new = k_new.repeat_interleave(G, dim=1), v_new.repeat_interleave(G, dim=1)
    out_new, lse_new = _FLASH_CPU(q, k_new, v_new, is_causal=True, **kw)
    lse = torch.logaddexp(lse_prefix, lse_new)
    return (out_prefix * (lse_prefix - lse).exp().unsqueeze(-1)
            + out_new * (lse_new - lse).exp().unsqueeze(-1))


MAX_DOCUMENTS_PER_ROW = 8  # beyond this, per-document calls cost more in launches than the mask costs in work


def _document_starts(doc_ids):
    """Start positions of each row's documents (lists, each ending with T), or None when a row holds too many,
    or when there is no token (B or T of 0: the mask path handles that; here max() and cat() would fail)."""
    B, T = doc_ids.shape
    if doc_ids.numel() == 0:
        return None
    new = torch.ones_like(doc_ids, dtype=torch.bool)
    new[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    if int(new.sum(1).max()) > MAX_DOCUMENTS_PER_ROW:
        return None
    return [row.nonzero().squeeze(1).tolist() + [T] for row in new]


def _per_document(q, k, v, starts, scale, gqa):
    """Packed rows as one causal attention per document. A [T, T] block-diagonal mask makes torch's fused kernel
    compute every block and mask it away; causal calls over each document skip the upper triangle and every
    other document: sum(len^2) / 2 instead of T^2 score work (1024 tokens of three documents: 6x less)."""
    # unbind/split, not indexing: their backward is one stack/cat, where each slice's backward would fill a
    # zero gradient the size of the whole input
    rows = []
    for cuts, qb, kb, vb in zip(starts, q.unbind(0), k.unbind(0), v.unbind(0)):
        lengths = [e - s for s, e in zip(cuts[:-1], cuts[1:])]
        pieces = [F.scaled_dot_product_attention(qd[None], kd[None], vd[None], is_causal=True, scale=scale,
                                                 enable_gqa=gqa)[0]  # 4-d: torch's fused CPU kernel wants it
                  for qd, kd, vd in zip(qb.split(lengths, 1), kb.split(lengths, 1), vb.split(lengths, 1))]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1))
    return torch.stack(rows)
