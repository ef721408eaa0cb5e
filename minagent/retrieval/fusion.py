"""Combining BM25 and dense rankings: reciprocal rank fusion and weighted score fusion.

RRF (Cormack et al. 2009) scores a passage sum(1 / (k + rank)) over the lists it appears in (rank from 1,
k = 60 as in pyserini and Elasticsearch). It needs no score calibration, which is why it is the default:
BM25 scores are unbounded and depend on the query length, cosine similarities are in [-1, 1].
Weighted fusion min-max normalises each list's scores to [0, 1] over its retrieved candidates and takes
weight * bm25 + (1 - weight) * dense; a passage missing from a list gets 0 from it.
"""

import numpy as np


def reciprocal_rank_fusion(ranked_lists, k=60):
    """ranked_lists: sequences of passage ids, best first. Returns (ids, scores) sorted best first
    (ties by lower id)."""
    if k <= 0:
        raise ValueError(f"RRF k must be > 0, got {k}")
    total = {}
    for ids in ranked_lists:
        for rank, pid in enumerate(ids, start=1):
            total[int(pid)] = total.get(int(pid), 0.0) + 1.0 / (k + rank)
    return _sorted(total)


def weighted_fusion(scored_lists, weights):
    """scored_lists: (ids, scores) pairs; weights: one per list. Returns (ids, scores) best first."""
    if len(scored_lists) != len(weights):
        raise ValueError(f"{len(scored_lists)} lists but {len(weights)} weights")
    total = {}
    for (ids, scores), w in zip(scored_lists, weights):
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) == 0:
            continue
        lo, hi = scores.min(), scores.max()
        norm = np.ones_like(scores) if hi == lo else (scores - lo) / (hi - lo)
        for pid, s in zip(ids, norm):
            total[int(pid)] = total.get(int(pid), 0.0) + w * float(s)
    return _sorted(total)


def _sorted(total):
    if not total:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    ids = np.fromiter(total.keys(), dtype=np.int64, count=len(total))
    scores = np.fromiter(total.values(), dtype=np.float64, count=len(total))
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]
