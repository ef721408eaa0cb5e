"""MaxScore for a batch of queries as a fixed number of array operations: the engine of BM25Index.topk_batch.

Why a second implementation of the same algorithm: one query's MaxScore (BM25Index.topk) makes ~40 numpy calls
of a few microseconds each, which costs more than the work itself when posting lists are short — on a
10k-passage index a query's essential postings are a few hundred numbers. Here the steps loop over rounds and
distinct terms, never over queries:

1. plan: every query's distinct terms sorted by their largest possible contribution, in [query, term] arrays
   padded to the longest query (the bounds of the remaining terms by one reversed cumsum);
2. the essential postings of all queries summed per (query, passage): by sorting query * N + passage keys when
   a query has few postings, by scattering into a dense row of N sums per query (bincount) when it has many
   (on big indexes such a query takes BM25Index's single-query path instead: a row costs O(N));
3. candidates that cannot reach their query's k-th partial score, even with every remaining term, dropped; a
   query the partial scores cannot settle whose next term's list is short takes it as essential instead;
4. the remaining terms' scores looked up for the remaining candidates — terms in >= 1/4 of the passages from
   the index's dense score rows (one gather for all), the others one search per distinct term of the batch —
   and added term rank by term rank;
5. each query's top-k; a query whose k-th score does not beat the bound of its non-essential terms takes one
   more essential term and goes round again with the others like it.

Scores are summed in the order BM25Index.topk sums them (term by term in plan order, from 0.0: bincount adds in
input order) and ties go to the lower passage, so both return identical passages and identical scores.
"""

import itertools

import numpy as np

from . import bm25_dense

MAX_TERMS = 64            # queries of more term ids take the single-query path (plan arrays are padded)
_PACKED_SORT_MIN = 1024   # sum_by_key packs positions into the keys from this many keys on
_PAD_MAX = 256            # _kth_per_query pads queries with up to this many candidates into one matrix
_DENSE_SLOTS = 1 << 22    # (query, passage) accumulator slots of one dense chunk: 32 MB of float64
_DENSE_SHARE = 16         # a query scatters into a dense row once its essential postings exceed N / this ...
_DENSE_MAX_DOCS = 1 << 15  # ... on indexes up to this size; on bigger ones (a row costs O(N)) such a query
_SINGLE_SHARE = 32        # takes the single-query path once its essential postings exceed N / this
WIDEN = 8                 # (both paths) widen rather than look up when the next list is <= this x the live candidates

_EMPTY_IDS = np.zeros(0, np.int64)
_EMPTY_SCORES = np.zeros(0, np.float64)


def bound_slack(n_terms):
    """Factor that widens a MaxScore bound of n_terms terms over every float64 rounding: the bound is summed
    from the last term back, a passage's score from the first, so a passage holding every term at its maximum
    can score a few ulps above it (the relative error of an n-term sum of non-negative numbers is below
    n * 2**-53; this allows 8x that)."""
    return 1.0 + (n_terms + 2) * 2.0 ** -50      # (no np.asarray: a scalar stays a Python float, fast)


class BatchPlan:
    """Per-query plan arrays, [queries, L] with L the most distinct terms of any query (padding: length-0
    postings, bound 0). Rows are the queries' positions in the batch."""

    def __init__(self, index, queries, k):
        n_q = len(queries)
        lens = np.fromiter(map(len, queries), np.int64, count=n_q)
        flat = list(itertools.chain.from_iterable(queries))
        kinds = set(map(type, flat))    # (a bool among ints would become 0/1 in the array: refused, as topk does)
        has_bool = bool in kinds or np.bool_ in kinds
        flat = np.asarray(flat)
        if len(flat) and (flat.dtype.kind not in "iu" or has_bool):
            raise TypeError(f"query term ids must be integers, got {'bool' if has_bool else flat.dtype}")
        flat = flat.astype(np.int64, copy=False)
        if len(flat) and (flat.min() < 0 or flat.max() >= index.n_terms):
            raise ValueError(f"query term id out of range: {index.term_range()}")
        # distinct (query, term) pairs with repeat counts, then each query's terms by (bound desc, term)
        key, count = np.unique(np.repeat(np.arange(n_q, dtype=np.int64), lens) * index.n_terms + flat,
                               return_counts=True)
        q = key // index.n_terms
        t = key - q * index.n_terms
        w = count.astype(np.float64)
        ub = index.term_max[t] * w
        order = np.lexsort((t, -ub, index.dense_row_of[t] >= 0, q))    # as BM25Index._plan: dense rows last
        q, t, w, ub = q[order], t[order], w[order], ub[order]
        self.n = np.bincount(q, minlength=n_q)
        width = int(self.n.max()) if n_q else 0
        col = np.arange(len(q)) - np.repeat(np.cumsum(self.n) - self.n, self.n)
        shape = (n_q, width)
        self.terms = np.zeros(shape, np.int64)
        self.weights = np.zeros(shape, np.float64)
        self.starts = np.zeros(shape, np.int64)
        self.lengths = np.zeros(shape, np.int64)
        bound = np.zeros((n_q, width + 1), np.float64)
        self.terms[q, col] = t
        self.weights[q, col] = w
        self.starts[q, col] = index.indptr[t]
        self.lengths[q, col] = index.indptr[t + 1] - index.indptr[t]
        bound[q, col] = ub
        # rest[:, j] = the most terms j.. can add, summed from the last term back (as BM25Index._plan does)
        self.slack = bound_slack(self.n)
        self.rest = np.cumsum(bound[:, ::-1], axis=1)[:, ::-1] * self.slack[:, None]
        if index.baseline is None:
            self.base = np.zeros(n_q)
        else:
            base = np.zeros(shape, np.float64)
            base[q, col] = index.baseline[t] * w
            self.base = np.cumsum(base, axis=1)[:, -1] if width else np.zeros(n_q)
        # essential terms to start with (as in _plan): every cheap posting list, and enough postings for k
        cheap = max(4 * k, index.n_docs >> 6)
        before = np.cumsum(self.lengths, axis=1) - self.lengths
        take = ((before < k) | (self.lengths <= cheap)) & (np.arange(width) < self.n[:, None])
        self.m = np.argmin(np.concatenate([take, np.zeros((n_q, 1), bool)], axis=1), axis=1)

    def row(self, r):
        """Query r's plan in the form BM25Index._run_plan takes."""
        n = int(self.n[r])
        starts = self.starts[r, :n]
        return (self.terms[r, :n].tolist(), self.weights[r, :n].tolist(), starts.tolist(),
                (starts + self.lengths[r, :n]).tolist(), self.rest[r, :n + 1].tolist(), float(self.base[r]),
                int(self.m[r]))


def topk_batch(index, queries, k, allowed):
    """A list of (passage indices int64, scores float64), one per query, equal to index.topk's."""
    queries = queries if isinstance(queries, list) else list(queries)
    results = [(_EMPTY_IDS, _EMPTY_SCORES)] * len(queries)
    if index.n_docs == 0 or len(queries) == 0:
        return results
    rows = [i for i, q in enumerate(queries) if len(q) <= MAX_TERMS]
    plan = BatchPlan(index, [queries[i] for i in rows] if len(rows) < len(queries) else queries, k)
    for i in sorted(set(range(len(queries))) - set(rows)):
        results[i] = index.topk(queries[i], k, allowed)
    active = np.flatnonzero(plan.n > 0)
    full = index.exhaustive(plan.lengths[active].sum(axis=1), single=False)
    if np.any(full):          # (small index, lists covering much of it: summed in full, bm25_dense)
        bm25_dense.topk_block(index, plan, active[full], k, allowed, results, rows)
        active = active[~full]
    while len(active):
        if index.n_docs > _DENSE_MAX_DOCS:
            ess = np.arange(plan.terms.shape[1]) < plan.m[active][:, None]
            single = (plan.lengths[active] * ess).sum(axis=1) * _SINGLE_SHARE > index.n_docs
            for r in active[single].tolist():
                results[rows[r]] = index._run_plan(plan.row(r), k, allowed)
            active = active[~single]
            if not len(active):
                break
        active = _round(index, plan, active, k, allowed, results, rows)
        plan.m[active] += 1
    return results


def _round(index, plan, qs, k, allowed, results, rows):
    """One MaxScore round for plan rows qs; fills results[rows[q]] for the queries it settles and returns the
    rows it could not settle."""
    n_docs = index.n_docs
    m = plan.m[qs]
    ess = np.arange(plan.terms.shape[1]) < m[:, None]
    heavy = (plan.lengths[qs] * ess).sum(axis=1) * _DENSE_SHARE > n_docs
    if heavy.any():             # light queries first, so candidates of both kinds stay sorted by query
        order = np.argsort(heavy, kind="stable")
        qs, m, ess, heavy = qs[order], m[order], ess[order], heavy[order]
    n_light = len(qs) - int(heavy.sum())
    # 1. essential postings summed per (query, passage); query = position in qs
    li, lj = np.nonzero(ess)
    lens = plan.lengths[qs[li], lj]
    pos = ranges(plan.starts[qs[li], lj], lens)
    val = np.repeat(plan.weights[qs[li], lj], lens) * index.scores[pos]
    slot = np.repeat(li, lens)
    docs = index.doc_ids[pos]
    cut = int(np.searchsorted(li, n_light))
    cut = int(lens[:cut].sum())
    parts = [_sum_sorted(slot[:cut], docs[:cut], val[:cut], n_docs)] if cut else []
    if cut < len(pos):
        parts += _sum_dense(index, slot[cut:], docs[cut:], val[cut:], n_light, len(qs))
    if not parts:
        cand_q = cand = np.zeros(0, np.int64)
        cand_s = np.zeros(0)
    else:
        cand_q, cand, cand_s = (np.concatenate(x) for x in zip(*parts))
    if allowed is not None:
        keep = allowed[cand]
        cand_q, cand, cand_s = cand_q[keep], cand[keep], cand_s[keep]
    nq = len(qs)
    rest = plan.rest[qs, m]
    # 2. drop candidates that cannot reach their query's k-th partial score even with every remaining term
    bounds = np.searchsorted(cand_q, np.arange(nq + 1))
    # (membership is decided on returned scores, sum + base, as in BM25Index._run_plan)
    base = plan.base[qs] if index.baseline is not None else None
    theta = _kth_per_query(cand_s, bounds, k)
    ub = (cand_s + rest[cand_q]) * plan.slack[qs][cand_q]
    keep = ub >= theta[cand_q] if base is None else ub + base[cand_q] >= theta[cand_q] + base[cand_q]
    # a query its partial scores cannot settle, whose next term's list is short next to its candidates (or
    # that has fewer than k), takes that term as essential next round instead of looking the other terms up
    width = plan.terms.shape[1]
    more = m < plan.n[qs]
    next_len = plan.lengths[qs, np.minimum(m, width - 1)]
    cand_q, cand, cand_s = cand_q[keep], cand[keep], cand_s[keep]
    bounds = np.searchsorted(cand_q, np.arange(nq + 1))
    live = np.diff(bounds)
    settles = theta > rest if base is None else theta + base > rest + base
    widen = more & ((live < k) | (~settles & (next_len <= WIDEN * live)))
    if widen.any():
        keep = ~widen[cand_q]
        cand_q, cand, cand_s = cand_q[keep], cand[keep], cand_s[keep]
        bounds = np.searchsorted(cand_q, np.arange(nq + 1))
    sizes = np.diff(bounds)
    # 3. the remaining terms' scores for the remaining candidates, added rank by rank (topk's order)
    pending = (~ess & (np.arange(width) < plan.n[qs][:, None]) & (rest > 0)[:, None] & (sizes > 0)[:, None])
    pi, pj = np.nonzero(pending)
    if len(pi):
        pair_terms = plan.terms[qs[pi], pj]
        order = np.argsort(pair_terms, kind="stable")      # slots grouped by term: one lookup per term
        pi, pj, pair_terms = pi[order], pj[order], pair_terms[order]
        counts = sizes[pi]
        at = ranges(bounds[pi], counts)
        gain = np.repeat(plan.weights[qs[pi], pj], counts)
        gain *= lookup(index, pair_terms, counts, cand[at])
        rank = np.repeat(pj - m[pi], counts)
        for r in range(int(rank.max()) + 1):
            sel = rank == r
            cand_s += np.bincount(at[sel], weights=gain[sel], minlength=len(cand))
    # 4. each query's top-k by returned score (descending, ties by passage: candidates are in passage order
    # within a query and the sort is stable); only candidates at or above the k-th score need sorting
    if base is not None:
        cand_s = cand_s + base[cand_q]
        rest = rest + base
    kth = _kth_per_query(cand_s, bounds, k)
    top = np.flatnonzero(cand_s >= kth[cand_q])
    top = top[np.lexsort((-cand_s[top], cand_q[top]))]
    cand_q, cand, cand_s = cand_q[top], cand[top], cand_s[top]
    starts = np.searchsorted(cand_q, np.arange(nq))
    got = np.minimum(np.diff(np.append(starts, len(cand_q))), k)
    full = got == k
    last = np.where(full, starts + k - 1, 0)
    settled = m == plan.n[qs]
    if len(cand_s):
        settled |= full & (cand_s[last] > rest)
    for i in np.flatnonzero(settled).tolist():
        a = int(starts[i])
        b = a + int(got[i])
        results[rows[qs[i]]] = (cand[a:b], cand_s[a:b])
    return qs[~settled]


def _sum_sorted(slot, docs, val, n_docs):
    """Few postings: (query, passage, sum) for each distinct (query, passage), summed in input order."""
    key, sums = sum_by_key(slot * n_docs + docs, val, (int(slot[-1]) + 1) * n_docs)    # slot is ascending
    q = key // n_docs
    return q, key - q * n_docs, sums


def sum_by_key(key, val, key_end):
    """(distinct keys ascending, sum of val over each), every sum taken in input order from 0.0; keys are
    non-negative ints below key_end. (np.bincount adds its weights in input order: not documented, but what
    its loop does; the tests comparing both paths bit for bit would catch a change.)

    The keys are sorted with their positions packed into the low bits: a value sort (SIMD in numpy) is 2-5x
    faster than an argsort, and the packing makes it stable. Short arrays (where the extra calls cost more than
    they save) and keys too wide to pack take a stable argsort.
    """
    if len(key) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    shift = max(len(key) - 1, 1).bit_length()
    if len(key) < _PACKED_SORT_MIN or (max(key_end, 1) - 1).bit_length() + shift > 62:
        order = np.argsort(key, kind="stable")
        key = key[order].astype(np.int64)
        first = key[np.concatenate(([True], key[1:] != key[:-1]))]
        return first, np.bincount(np.searchsorted(first, key), weights=val[order])
    packed = np.sort((key.astype(np.int64) << shift) | np.arange(len(key)))
    order = packed & ((1 << shift) - 1)
    key = packed >> shift
    first = np.concatenate(([True], key[1:] != key[:-1]))
    return key[first], np.bincount(np.cumsum(first) - 1, weights=val[order])


def _sum_dense(index, slot, docs, val, first, end):
    """Many postings: each query of rows first..end-1 scatters into a dense row of N sums (chunks of rows)."""
    n_docs = index.n_docs
    per_chunk = max(1, _DENSE_SLOTS // n_docs)
    bounds = np.searchsorted(slot, np.arange(first, end + 1, per_chunk))
    if bounds[-1] != len(slot):
        bounds = np.append(bounds, len(slot))
    parts = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        q0 = int(slot[a])
        key = (slot[a:b] - q0) * n_docs + docs[a:b]
        n_slots = (int(slot[b - 1]) - q0 + 1) * n_docs
        acc = np.bincount(key, weights=val[a:b], minlength=n_slots)
        # all stored scores > 0: a passage was reached iff its sum is > 0; otherwise count the postings
        hit = np.flatnonzero(acc > 0 if index.positive else np.bincount(key, minlength=n_slots))
        q = hit // n_docs
        parts.append((q + q0, hit - q * n_docs, acc[hit]))
    return parts


def lookup(index, terms, counts, docs):
    """Scores (float64, 0 where absent) of passages docs in terms' posting lists: the first counts[0] passages
    in terms[0], the next counts[1] in terms[1], ... (terms sorted). Very common terms: one gather from the dense
    score rows for all of them; the others: one search per distinct term."""
    out = np.zeros(len(docs))
    row = np.repeat(index.dense_row_of[terms], counts)
    dense = row >= 0
    if dense.any():
        out[dense] = index.dense_rows[row[dense], docs[dense]]
    sparse = index.dense_row_of[terms] < 0
    if sparse.any():
        edges = np.concatenate(([0], np.cumsum(counts)))
        first = np.flatnonzero(np.concatenate(([True], terms[1:] != terms[:-1])))
        ends = np.append(first[1:], len(terms))
        first, ends = first[sparse[first]], ends[sparse[first]]
        for t, a, b in zip(terms[first].tolist(), edges[first].tolist(), edges[ends].tolist()):
            out[a:b] = index._lookup(t, docs[a:b])
    return out


def _kth_per_query(scores, bounds, k):
    """The k-th largest of each query's scores (query i owns scores[bounds[i]:bounds[i + 1]]); -inf for a query
    with fewer than k. Queries with up to _PAD_MAX scores are padded with -inf into matrices of power-of-two widths
    (padding at most doubles the work) and partitioned row-wise, one call per width; bigger ones one by one."""
    sizes = np.diff(bounds)
    kth = np.full(len(sizes), -np.inf)
    big = np.flatnonzero(sizes >= k)
    if not len(big):
        return kth
    width = np.left_shift(1, np.ceil(np.log2(sizes[big])).astype(np.int64))
    for w in np.unique(width).tolist():
        sel = big[width == w]
        if w > _PAD_MAX:
            for i in sel.tolist():
                a, b = bounds[i], bounds[i + 1]
                kth[i] = np.partition(scores[a:b], b - a - k)[b - a - k]
            continue
        n = sizes[sel]
        pad = np.full(len(sel) * w, -np.inf)
        pad[ranges(np.arange(len(sel)) * w, n)] = scores[ranges(bounds[sel], n)]
        kth[sel] = np.partition(pad.reshape(len(sel), w), w - k, axis=1)[:, w - k]
    return kth


def ranges(starts, lengths):
    """Concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    offsets = np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + offsets
