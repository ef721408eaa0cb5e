"""Exact inner-product search over unit vectors (a flat index, like faiss IndexFlatIP), numpy BLAS + torch.topk.

float32 vectors are stored dimension-major, as a [D, N] matrix: a single query is then q @ V, a matrix-vector
product that streams each row of V (one dimension across all passages) in order. That is a pure
memory-bandwidth job at 100k x 384, and this layout runs it 1.26-1.4x faster than faiss's per-vector loop here
(one thread, AMD EPYC machines, bench/RESULTS.md).
Batches are scored against blocks of passages with one matmul per block (numpy's OpenBLAS: ~25% faster than
torch's MKL on AMD CPUs) and each block's k best are kept (_block_topk: group maxima first, then an exact
top-k of the few groups that can hold them), so memory stays bounded at any batch size.
In the fp32 paths (single and batched) and the fp16 batched one that top-k runs on one torch thread: with two
thread pools (OpenBLAS's and torch's OpenMP) taking turns on the same cores, each pool's idle threads spin while
the other works: a 2-thread batch ran 15-20% slower, a single fp32 query 2.6x slower (8.1 ms against 3.0 on the
AMD EPYC, 2026-11-24).

float16 storage (half the memory) keeps passage-major [N, D] rows: a single query is one fp16 matrix-vector
product that picks a shortlist, rescored in float32; batches upcast a block at a time.
"""

import contextlib

import numpy as np
import torch

_BLOCK_BYTES = 64 << 20       # scores computed per block: queries x block passages x 4 bytes (fewer, bigger
                              # blocks measured faster than 4-32 MB ones: each block switches thread pools)
_GROUP = 64                   # columns per group in _block_topk (16, 32, 64 measured: 64 fastest at k=10)


class DenseIndex:
    def __init__(self, dim, dtype="float32"):
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dense index dtype must be 'float32' or 'float16', got {dtype!r}")
        self.dim = int(dim)
        self.dtype = dtype
        # float32: [dim, n] (dimension-major); float16: [n, dim]
        self._data = np.zeros((self.dim, 0) if dtype == "float32" else (0, self.dim), dtype=dtype)

    def __len__(self):
        return self._data.shape[1] if self.dtype == "float32" else self._data.shape[0]

    @property
    def vectors(self):
        """The stored vectors as an [n, dim] array (a view)."""
        return self._data.T if self.dtype == "float32" else self._data

    def check(self, vectors):
        """The vectors as an array, or ValueError if add() would refuse them (callers check before changing
        anything else, so a refusal leaves everything as it was)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape [n, {self.dim}], got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or inf")
        if self.dtype == "float16" and vectors.size and np.abs(vectors).max() > np.finfo(np.float16).max:
            raise ValueError(f"vectors hold values up to {np.abs(vectors).max():g}, beyond float16's "
                             f"{np.finfo(np.float16).max:g}: they would be stored as inf (normalise them)")
        return vectors

    def add(self, vectors):
        vectors = self.check(vectors)
        if self.dtype == "float32":
            self._data = np.ascontiguousarray(np.concatenate([self._data, vectors.astype(np.float32).T], axis=1))
        else:
            self._data = np.concatenate([self._data, vectors.astype(np.float16)])
        return self

    def search(self, queries, k=10, allowed=None):
        """Top-k by inner product.

        queries: [D] or [B, D]. allowed: optional boolean mask over passages; masked-out passages never come
        back. Returns (indices int64 [B, k'], scores float32 [B, k']) with k' = min(k, passages allowed); for a
        1-D query the batch dimension is dropped. Equal scores within the top-k are ordered by passage index.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        q = np.asarray(queries, dtype=np.float32)
        single = q.ndim == 1
        q = q[None] if single else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape [{self.dim}] or [batch, {self.dim}], got {np.shape(queries)}")
        if not np.isfinite(q).all():   # NaN scores would come back as if they were matches
            raise ValueError("queries contain NaN or inf")
        data, ids_map = self._data, None
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (len(self),):
                raise ValueError(f"allowed mask has shape {allowed.shape}, expected ({len(self)},)")
            ids_map = np.flatnonzero(allowed)
            data = data[:, ids_map] if self.dtype == "float32" else data[ids_map]
        n = data.shape[1] if self.dtype == "float32" else data.shape[0]
        k = min(k, n)
        if k == 0 or len(q) == 0:
            empty = np.zeros((len(q), 0))
            out = empty.astype(np.int64), empty.astype(np.float32)
            return (out[0][0], out[1][0]) if single else out
        if self.dtype == "float32":
            idx, scores = _topk_dim_major(np.ascontiguousarray(q), data, k)
        elif single:
            idx, scores = _topk_fp16_single(q, data, k)
        else:
            idx, scores = _topk_rows_batched(q, data, k)
        idx, scores = idx.numpy(), scores.numpy()
        if ids_map is not None:
            idx = ids_map[idx]
        return (idx[0], scores[0]) if single else (idx, scores)


def _topk_dim_major(q, data, k):
    """Top-k of q @ data ([B, D] x [D, n]) over blocks of passages."""
    n = data.shape[1]
    rows = n if len(q) == 1 else max(k, min(n, _BLOCK_BYTES // (4 * len(q))))
    buf = np.empty((len(q), min(rows, n)), np.float32)
    best_s, best_i = [], []
    with _one_torch_thread():
        for start in range(0, n, rows):
            block = data[:, start:start + rows]
            s = np.matmul(q, block, out=buf[:, :block.shape[1]])
            bs, bi = _block_topk(torch.from_numpy(s), k)
            best_s.append(bs.clone())
            best_i.append(bi + start)
    return _keep_best(torch.cat(best_s, 1), torch.cat(best_i, 1), k)


@contextlib.contextmanager
def _one_torch_thread(active=True):
    """Run torch ops on the calling thread only (see the module docstring: OpenBLAS does the matmuls).
    torch's thread count is process-wide, so torch work in another Python thread runs on one thread too while
    a batched search is in progress; minagent's agent searches and generates in turn, never at once."""
    old = torch.get_num_threads()
    if active and old > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _block_topk(s, k, group=None):
    """The k best (scores, column indices) of each row of a score block s [B, n], unsorted; among equal scores at
    the cut, the lowest columns (what _keep_best's order promises: passages of exactly equal score come back in
    index order, the same for k and k + 1. A single query's matrix-vector product may round identical vectors'
    scores an ulp apart; then they are not equal, and the higher wins, as in faiss).

    Exact, and ~2.5x faster than torch.topk over the whole block: the row is cut into groups of `group`
    columns, and the k best values of a row always lie in its k groups with the highest maxima (a value left
    out would sit in a group whose maximum is beaten by k other groups, each holding a value at least as
    large). So: one max per group, top-k of the maxima, top-k of the k x group candidates they cover. A tail
    shorter than a group, and blocks with too few groups, go through plain torch.topk. torch.topk picks among
    ties at the cut arbitrarily, so a row where the k-th score occurs more often than it kept (seen from the
    candidates and the group maxima, no second pass over the block) is redone exactly."""
    b, n = s.shape
    group = group or _GROUP
    groups = n // group
    if groups < 4 * k:
        cs, ci = torch.topk(s, min(k, n), dim=1, sorted=False)
        tied = (s >= cs.amin(1, keepdim=True)).sum(1) > cs.shape[1]
        return _lowest_columns_at_ties(s, cs, ci, tied)
    head = s[:, :groups * group].view(b, groups, group)
    maxima = head.amax(-1)
    top_groups = torch.topk(maxima, k, dim=1, sorted=False).indices                        # [B, k]
    cand = head[torch.arange(b)[:, None], top_groups].reshape(b, k * group)
    cand_cols = (top_groups[:, :, None] * group + torch.arange(group)).reshape(b, k * group)
    if groups * group < n:
        cand = torch.cat([cand, s[:, groups * group:]], 1)
        cand_cols = torch.cat([cand_cols, torch.arange(groups * group, n).expand(b, -1)], 1)
    cs, ci = torch.topk(cand, k, dim=1, sorted=False)
    kth = cs.amin(1, keepdim=True)
    tied = ((cand >= kth).sum(1) > k) | ((maxima >= kth).sum(1) > (torch.gather(maxima, 1, top_groups) >= kth).sum(1))
    return _lowest_columns_at_ties(s, cs, torch.gather(cand_cols, 1, ci), tied)


def _lowest_columns_at_ties(s, cs, ci, tied):
    """Redo the rows flagged `tied` exactly: every column scoring at least the row's k-th score, the k best by
    (descending score, ascending column)."""
    if not bool(tied.any()):
        return cs, ci
    cs, ci = cs.clone(), ci.clone()
    k = cs.shape[1]
    for r in torch.nonzero(tied).flatten().tolist():
        cols = torch.nonzero(s[r] >= cs[r].min()).flatten()  # ascending columns
        order = torch.argsort(s[r, cols], descending=True, stable=True)[:k]
        cs[r], ci[r] = s[r, cols[order]], cols[order]
    return cs, ci


def _topk_rows_batched(q, data, k):
    """Top-k of q @ data.T for fp16 [n, D] rows: each block is upcast once for the whole batch."""
    n = data.shape[0]
    rows = max(k, min(n, _BLOCK_BYTES // (4 * len(q))))
    best_s, best_i = [], []
    with _one_torch_thread():
        for start in range(0, n, rows):
            s = q @ data[start:start + rows].astype(np.float32).T
            bs, bi = _block_topk(torch.from_numpy(s), k)
            best_s.append(bs)
            best_i.append(bi + start)
    return _keep_best(torch.cat(best_s, 1), torch.cat(best_i, 1), k)


def _topk_fp16_single(q, data, k):
    """One query against fp16 rows: an fp16 matrix-vector product (half the bytes of fp32) picks a shortlist,
    which is rescored in float32. Selection can differ from exact scoring only between passages whose scores
    agree to fp16 precision (~1e-3)."""
    base = torch.from_numpy(data)
    qt = torch.from_numpy(q[0])
    rough = base @ qt.to(torch.float16)
    short = torch.topk(rough, min(base.shape[0], 2 * k + 16)).indices
    if (rough >= rough[short].min()).sum() > len(short):  # ties at the shortlist's cut: keep them all (rare)
        short = torch.nonzero(rough >= rough[short].min()).flatten()
    exact = base[short].float() @ qt
    return _keep_best(exact[None], short[None], k)


def _keep_best(s, i, k):
    """Reduce candidate (scores, indices) to the k best per row: returns (indices, scores) sorted by
    descending score, ties by ascending index."""
    order = torch.argsort(i, dim=1)
    s, i = torch.gather(s, 1, order), torch.gather(i, 1, order)
    order = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]
    return torch.gather(i, 1, order), torch.gather(s, 1, order)
