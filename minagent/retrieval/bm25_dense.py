"""Exhaustive BM25 top-k for small indexes: every query posting added into a dense row of N sums.

Why a third path next to MaxScore (bm25.py, bm25_batch.py): on an index of ~10k passages a natural query's
posting lists cover the corpus more than once ("the", "how" are in almost every passage), and MaxScore then
spends its time in ~40 numpy calls of a few microseconds each that decide what it may skip. Adding everything
is cheaper there: the terms without a dense score row scattered into a zeroed row of N float64 sums by one
bincount, the others added as whole rows, then an exact top-k by group maxima: the k-th largest of the maxima of
G interleaved groups is a lower bound on the k-th sum (k groups hold a sum that high), so only the passages at
or above it are sorted. The row costs O(N) per query, so BM25Index.exhaustive sends a query here only on small
indexes; on 100k passages MaxScore is faster. (Tried and dropped: adding the dense-row terms only for the
passages that can still make the top-k, as MaxScore does. It saves the row adds but sorts several times more
candidates, and measured no faster.)

Scores are summed term by term in plan order from 0.0 (the plan puts the dense-row terms last, so a batch can
scatter every other term first and add the rows after), exactly as MaxScore sums them: every path returns
identical passages and bit-identical scores, ties by lower passage. A passage is reached iff its sum is > 0,
so this path needs every stored score > 0 (index.positive); masked-out passages are zeroed before the top-k
and never come back.
"""

import numpy as np

from . import bm25_batch

GROUPS = 16               # group maxima: each is the max of every GROUPS-th sum
_BLOCK_SLOTS = 1 << 18    # (query, passage) sums of one batch block: 2 MB of float64
_REACHED = np.nextafter(0.0, 1.0)   # threshold meaning "any sum > 0"


def topk_one(index, info, base, k, allowed):
    """One query's exact top-k (ids int64, scores float64) from its BM25Index._ordered_terms and baseline."""
    n = index.n_docs
    width = -(-n // GROUPS)
    sparse = [x for x in info if not x[0] and x[5] > x[4]]
    if sparse:
        # one bincount: it adds its weights in input order from 0.0, so each passage's sum is taken term by
        # term in plan order
        docs = np.concatenate([index.doc_ids[s:e] for _, _, _, _, s, e in sparse])
        vals = np.concatenate([index.scores[s:e] if w == 1.0 else w * index.scores[s:e].astype(np.float64)
                               for _, _, _, w, s, e in sparse])
        acc = np.bincount(docs, weights=vals, minlength=GROUPS * width)
    else:
        acc = np.zeros(GROUPS * width)
    sums = acc[:n]
    for is_dense, _, t, w, _, _ in info:
        if is_dense:
            row = _row64(index, index.dense_row_of.item(t))
            sums += row if w == 1.0 else w * row
    if allowed is not None:
        sums *= allowed
    return _select(acc, _kth_bound(acc, width, k), k, base)


def _row64(index, r):
    """Dense score row r as float64. BM25Index keeps the rows float64 on the indexes this path serves by default,
    but a float32 row (bigger index, or other routing) times a repeat count would be multiplied in float32
    (NumPy keeps an array's float32 against a Python float) and round differently from MaxScore's
    w * float64(score); astype(copy=False) costs nothing on a float64 row."""
    return index.dense_rows[r].astype(np.float64, copy=False)


def _kth_bound(acc, width, k):
    """A lower bound on the k-th largest sum of a padded row: the k-th largest group maximum (or "any")."""
    if width <= k:
        return _REACHED
    gmax = acc.reshape(GROUPS, width).max(axis=0)
    return max(float(np.partition(gmax, width - k)[width - k]), _REACHED)


def _select(acc, theta, k, base):
    """The k best sums of one padded row (ties to the lower passage), as returned scores (sum + base), given a
    lower bound theta on the k-th."""
    if base:
        # membership on returned scores: sum + base rounds, and a passage whose sum is just below theta can
        # return theta + base and then win on its lower index
        cand = np.flatnonzero((acc + base >= theta + base) & (acc > 0))
    else:
        cand = np.flatnonzero(acc >= theta)
    top = acc[cand] + base if base else acc[cand]
    order = np.argsort(-top, kind="stable")[:k]
    return cand[order], top[order]


def topk_block(index, plan, qs, k, allowed, results, rows):
    """The plan rows qs (BatchPlan) all at once, in blocks of queries whose sums fit _BLOCK_SLOTS: the steps of
    topk_one, each one array operation for the block but the row adds. Fills results[rows[q]]."""
    n = index.n_docs
    width = -(-n // GROUPS)
    span = GROUPS * width
    per_block = max(1, _BLOCK_SLOTS // span)
    for a in range(0, len(qs), per_block):
        block = qs[a:a + per_block]
        nb = len(block)
        real = np.arange(plan.terms.shape[1]) < plan.n[block][:, None]
        dense_row = np.where(real, index.dense_row_of[plan.terms[block]], -1)
        # 1. the terms without a dense row: one bincount (input order: query by query, in plan order)
        bi, bj = np.nonzero(real & (dense_row < 0))
        lens = plan.lengths[block[bi], bj]
        pos = bm25_batch.ranges(plan.starts[block[bi], bj], lens)
        key = np.repeat(bi * span, lens) + index.doc_ids[pos]
        w = plan.weights[block[bi], bj]
        val = index.scores[pos] if (w == 1.0).all() else np.repeat(w, lens) * index.scores[pos]
        acc = (np.bincount(key, weights=val, minlength=nb * span) if len(key) else np.zeros(nb * span))
        acc = acc.reshape(nb, span)       # (bincount of nothing would be int64)
        # 2. the dense-row terms (they close each query's plan) added after, as whole float64 rows
        di, dj = np.nonzero(dense_row >= 0)
        for i, r, wt in zip(di.tolist(), dense_row[di, dj].tolist(), plan.weights[block[di], dj].tolist()):
            row = _row64(index, r)
            acc[i, :n] += row if wt == 1.0 else wt * row
        if allowed is not None:
            acc[:, :n] *= allowed
        # 3. each query's top-k: candidates from the group maxima, then one sort for the block
        acc3 = acc.reshape(nb, GROUPS, width)
        gmax, theta = _kth_bounds(acc3, k)
        base = plan.base[block] if index.baseline is not None else None
        qi, d, vals = _candidates(acc3, gmax, theta, base)
        top = vals if base is None else vals + base[qi]
        order = np.lexsort((d, -top, qi))
        qi, d, top = qi[order], d[order], top[order]
        starts = np.searchsorted(qi, np.arange(nb + 1))
        for i, q in enumerate(block.tolist()):
            s = int(starts[i])
            e = min(int(starts[i + 1]), s + k)
            results[rows[q]] = (d[s:e], top[s:e])


def _kth_bounds(acc3, k):
    """Group maxima [queries, width] of acc3[query, group, column] and each query's k-th largest of them."""
    nb, _, width = acc3.shape
    gmax = acc3.max(axis=1)
    if width <= k:
        return gmax, np.full(nb, _REACHED)
    return gmax, np.maximum(np.partition(gmax, width - k, axis=1)[:, width - k], _REACHED)


def _candidates(acc3, gmax, bar, base):
    """(query, passage, sum) of every sum at or above its query's bar (passage = group * width + column); with a
    baseline, on returned scores (sum + base >= bar + base, sum > 0). Only the columns whose maximum clears
    the bar are gathered."""
    width = acc3.shape[2]
    if base is None:
        hit = np.flatnonzero(gmax >= bar[:, None])     # (flat: a 2-D nonzero costs several times more)
    else:
        hit = np.flatnonzero(gmax + base[:, None] >= (bar + base)[:, None])
    ci = hit // width
    cc = hit - ci * width
    vals = acc3[ci, :, cc]                             # [candidate columns, GROUPS]
    if base is None:
        r, g = np.nonzero(vals >= bar[ci][:, None])
    else:
        r, g = np.nonzero((vals + base[ci][:, None] >= (bar + base)[ci][:, None]) & (vals > 0))
    return ci[r], g * width + cc[r], vals[r, g]
