"""Combining BM25 and dense rankings: reciprocal rank fusion and weighted score fusion.

RRF (Cormack et al. 2009) scores a passage sum(1 / (k + rank)) over the lists it appears in (rank from 1,
k = 60 as in pyserini and Elasticsearch). It needs no score calibration, which is why it is the default:
BM25 scores are unbounded and depend on the query length, cosine similarities are in [-1, 1].
Weighted fusion min-max normalises each list's scores to [0, 1] over its retrieved candidates and takes
weight * bm25 + (1 - weight) * dense; a passage missing from a list gets 0 from it.
Each passage's contributions are added with math.fsum (correctly rounded): two passages with the same
contributions from different lists get exactly the same score, whatever order the lists come in, so they tie
and the lower id wins, as promised (left-to-right float sums of 1/61, 1/65, 1/69 differ in the last bit).
"""

import math

import numpy as np


def reciprocal_rank_fusion(ranked_lists, k=60):
    """ranked_lists: sequences of passage ids, best first. Returns (ids, scores) sorted best first
    (ties by lower id)."""
    if k <= 0:
        raise ValueError(f"RRF k must be > 0, got {k}")
    parts = {}
    for ids in ranked_lists:
        for rank, pid in enumerate(ids, start=1):
            parts.setdefault(int(pid), []).append(1.0 / (k + rank))
    return _sorted(parts)


def weighted_fusion(scored_lists, weights):
    """scored_lists: (ids, scores) pairs; weights: one per list. Returns (ids, scores) best first."""
    if len(scored_lists) != len(weights):
        raise ValueError(f"{len(scored_lists)} lists but {len(weights)} weights")
    parts = {}
    for n, ((ids, scores), w) in enumerate(zip(scored_lists, weights)):
        scores = np.asarray(scores, dtype=np.float64)
        if len(ids) != len(scores):    # zip() would silently drop the unmatched tail
            raise ValueError(f"weighted fusion list {n}: {len(ids)} ids but {len(scores)} scores")
        if len(scores) == 0:
            continue
        lo, hi = scores.min(), scores.max()
        norm = np.ones_like(scores) if hi == lo else (scores - lo) / (hi - lo)
        for pid, s in zip(ids, norm):
            parts.setdefault(int(pid), []).append(w * float(s))
    return _sorted(parts)


def _sorted(parts):
    """parts: passage id -> its score contributions. (ids, summed scores), best first, ties by lower id."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    ids = np.fromiter(parts.keys(), dtype=np.int64, count=len(parts))
    scores = np.fromiter((math.fsum(p) for p in parts.values()), dtype=np.float64, count=len(parts))
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]
