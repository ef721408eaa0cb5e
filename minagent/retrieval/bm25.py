"""BM25 as a numpy sparse matrix of precomputed per-(term, passage) scores, with exact MaxScore top-k.

Index: like bm25s we score eagerly — every (term, passage) pair gets its BM25 contribution at build time, stored
column-wise (CSC: one sorted posting list of passage ids and scores per term), so a query is a sum of a few
slices. The raw term frequencies and passage lengths are kept too, which is what makes adding passages possible:
new postings are merged in and every score recomputed from tf (idf and the average length change for all).

Query: bm25s spends most of a query in argpartition over a score vector as long as the corpus, almost all zeros.
We never build that vector. MaxScore (Turtle & Flood 1995): sort the query terms by their largest possible
contribution; the rarest terms are "essential" and their posting lists give the candidate passages; the common
terms ("the", "how") are only looked up for those candidates (binary search into their posting lists, or one
gather from a dense score column for terms in >= 1/4 of the passages). A passage that contains none of the
essential terms scores at most the sum of the other terms' maxima, so once the k-th best candidate beats that
sum the top-k is exact; otherwise one more term becomes essential and we retry. Candidates that cannot reach
the k-th partial score even with every remaining term are dropped before the lookups. topk_batch runs the same
algorithm for many queries with a fixed number of large array operations. Ties are broken by lower passage
index, so results are deterministic. On small indexes (~10k passages) a query's lists often cover the corpus
and MaxScore's bookkeeping costs more than the sums it saves: there every posting is summed into a dense row
instead (bm25_dense; BM25Index.exhaustive decides). All paths add a passage's scores in one order, the plan's
(terms with a dense score row last, the others by bound), and return bit-identical results.

Variants (formulas as in Kamphuis et al. 2020, matching bm25s and rank_bm25 exactly):
  lucene     idf = ln(1 + (N - df + .5)/(df + .5))   tfc = tf / (tf + k1 (1 - b + b dl/avgdl))
  robertson  idf = ln(max(1, (N - df + .5)/(df + .5)))  tfc as lucene
  atire      idf = ln(N / df)                        tfc = tf (k1 + 1) / (tf + k1 (1 - b + b dl/avgdl))
  bm25l      idf = ln((N + 1)/(df + .5))             tfc = (k1 + 1)(c + d)/(k1 + c + d), c = tf/(1 - b + b dl/avgdl)
  bm25+      idf = ln((N + 1)/df)                    tfc = atire's + delta
BM25L and BM25+ give a passage credit for a term even when tf = 0; we store the score *above* that baseline
(>= 0) and add the baseline back to the scores we return, so ranking work stays sparse. Every stored score is
>= 0; it is 0 where the idf is (robertson's clamp for terms in half the passages or more, atire's for a term in
every passage). Ranking is by the returned score (with the baseline) and then passage index.
rank_bm25's BM25Okapi with epsilon=0 is variant="atire" with idf="robertson".
"""

import threading

import numpy as np

from . import bm25_batch, bm25_dense

VARIANTS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
_PARAM_MAX = 1e30         # the largest k1 and delta (far beyond any useful value; see BM25Index)
_CHUNK = 1 << 18          # tokens / postings per slice while building: temporaries stay ~10x below the index
# when a query is summed in full (bm25_dense) rather than by MaxScore (measured: see BM25Index.exhaustive)
_EXHAUSTIVE_ANY_DOCS = 1 << 14   # one query, any postings: indexes up to this size
_EXHAUSTIVE_MAX_DOCS = 3 << 14   # one query whose postings reach N / 2: up to this size
_EXHAUSTIVE_BATCH_DOCS = 1 << 15  # a batch's queries whose postings reach N / _EXHAUSTIVE_BATCH_SHARE: up to
_EXHAUSTIVE_BATCH_SHARE = 8      # this size (all of the batch's queries when fewer than _MAXSCORE_MIN_BATCH
_MAXSCORE_MIN_BATCH = 32         # would be left for MaxScore: a MaxScore round costs ~40 numpy calls)


def idf_values(variant, df, n_docs):
    """idf of each term (float64) from its document frequency."""
    df = np.asarray(df, dtype=np.float64)
    n = float(n_docs)
    with np.errstate(divide="ignore"):
        if variant == "lucene":
            out = np.log1p((n - df + 0.5) / (df + 0.5))
        elif variant == "robertson":
            out = np.log(np.maximum(1.0, (n - df + 0.5) / (df + 0.5)))
        elif variant == "atire":
            out = np.log(n / df)
        elif variant == "bm25l":
            out = np.log((n + 1) / (df + 0.5))
        elif variant == "bm25+":
            out = np.log((n + 1) / df)
        else:
            raise ValueError(f"unknown BM25 idf variant {variant!r}; expected one of {VARIANTS}")
    return np.where(df > 0, out, 0.0)


def tf_component(variant, tf, doc_len, avg_len, k1, b, delta):
    """Term-frequency component (float64). Works on arrays; tf may be 0 (BM25L/BM25+ baselines)."""
    tf = np.asarray(tf, dtype=np.float64)
    norm = 1 - b + b * np.asarray(doc_len, dtype=np.float64) / avg_len
    if variant in ("lucene", "robertson"):
        return tf / (tf + k1 * norm)
    if variant == "atire":
        return tf * (k1 + 1) / (tf + k1 * norm)
    if variant == "bm25l":
        c = tf / norm
        return (k1 + 1) * (c + delta) / (k1 + c + delta)
    if variant == "bm25+":
        return tf * (k1 + 1) / (k1 * norm + tf) + delta
    raise ValueError(f"unknown BM25 variant {variant!r}; expected one of {VARIANTS}")


class BM25Index:
    """Eager BM25 over passages 0..n_docs-1 whose text was analysed into term ids 0..n_terms-1."""

    def __init__(self, variant="lucene", k1=0.9, b=0.4, delta=0.5, idf=None, dtype="float32"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown BM25 variant {variant!r}; expected one of {VARIANTS}")
        if idf is not None and idf not in VARIANTS:
            raise ValueError(f"unknown BM25 idf variant {idf!r}; expected one of {VARIANTS}")
        # (bounded: k1 = inf makes a tf component inf / inf = nan, and so do k1 = 1e300 with delta = 1e200, whose
        # product (k1 + 1)(c + delta) overflows; up to _PARAM_MAX every intermediate stays finite in float64 and
        # every score, below idf * (k1 + 1 + delta), in float32)
        if not (0 <= k1 <= _PARAM_MAX and 0 <= b <= 1 and 0 <= delta <= _PARAM_MAX):
            raise ValueError(f"BM25 parameters out of range: k1={k1} (0..{_PARAM_MAX:g}), b={b} (0..1), "
                             f"delta={delta} (0..{_PARAM_MAX:g})")
        if k1 == 0 and (variant == "bm25+" or (variant == "bm25l" and delta == 0)):
            raise ValueError(f"BM25 variant {variant!r} needs k1 > 0 (with k1=0 its tf=0 baseline is 0/0)")
        self.variant, self.k1, self.b, self.delta = variant, float(k1), float(b), float(delta)
        self.idf_variant = idf or variant
        self.dtype = np.dtype(dtype)
        self.n_docs = 0
        self.n_terms = 0
        self.indptr = np.zeros(1, np.int64)       # term t's postings are [indptr[t], indptr[t+1])
        self.doc_ids = np.zeros(0, np.int32)      # passage index of each posting (sorted within a term)
        self.tf = np.zeros(0, np.int32)           # term frequency of each posting
        self.scores = np.zeros(0, self.dtype)     # BM25 contribution of each posting (above the baseline)
        self.doc_len = np.zeros(0, np.int64)      # analysed length of each passage
        self.term_max = np.zeros(0, np.float64)   # largest score of each term (MaxScore upper bound)
        self.baseline = None                      # BM25L/BM25+: per-term score of a passage without the term
        self.dense_rows = np.zeros((0, 0), self.dtype)  # very common terms: a dense score row each
        self.dense_row_of = np.zeros(0, np.int64)  # term -> its row in dense_rows, -1 if none
        self.positive = True                      # every stored score > 0
        self._tls = threading.local()             # per-thread scratch arrays for queries

    def params(self):
        return {"variant": self.variant, "k1": self.k1, "b": self.b, "delta": self.delta,
                "idf": self.idf_variant, "dtype": self.dtype.name}

    # -- building -------------------------------------------------------------------------------------------
    def add(self, flat_ids, lengths, n_terms=None):
        """Add passages given as one flat array of term ids and the number of ids in each passage.

        Works on an empty or an existing index: postings are merged and all scores recomputed (adding documents
        changes N, every df and the average length, so every stored score changes). Work is done in slices of
        about _CHUNK tokens/postings so temporary arrays stay small next to the index itself.
        """
        flat = _integer_vector(flat_ids, "flat_ids", "term ids")
        lengths = _integer_vector(lengths, "lengths", "passage lengths").astype(np.int64, copy=False)
        if len(lengths) and lengths.min() < 0:
            raise ValueError(f"lengths: passage lengths must be >= 0, got {int(lengths.min())}")
        if int(lengths.sum()) != len(flat):
            raise ValueError(f"flat_ids ({len(flat)} ids) and lengths (sum {int(lengths.sum())}) disagree")
        if len(flat) and (flat.min() < 0):
            raise ValueError("term ids must be >= 0")
        n_terms = max(int(n_terms or 0), int(flat.max()) + 1 if len(flat) else 0, self.n_terms)
        n_new = len(lengths)
        if n_new == 0:
            return self
        span = self.n_docs + n_new
        if span >= 2**31 or n_terms >= 2**31:
            raise ValueError("more than 2**31 passages or terms: out of int32 range")
        # (term, passage, tf) of the new passages, one slice of whole passages at a time: np.unique over
        # term * span + passage keys sorts the slice by (term, passage) and counts repeats
        terms_parts, docs_parts, tf_parts = [], [], []
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        cut = np.searchsorted(bounds, np.arange(0, len(flat), _CHUNK), side="right") - 1
        doc_starts = sorted(set(cut.tolist()) | {n_new})
        for a, b in zip(doc_starts[:-1], doc_starts[1:]):
            docs = np.repeat(np.arange(self.n_docs + a, self.n_docs + b, dtype=np.int64), lengths[a:b])
            keys, tf = np.unique(flat[bounds[a]:bounds[b]].astype(np.int64) * span + docs, return_counts=True)
            t = keys // span
            terms_parts.append(t.astype(np.int32))
            docs_parts.append((keys - t * span).astype(np.int32))
            tf_parts.append(tf.astype(np.int32))
            del docs, keys, tf, t
        if self.n_docs:           # the existing postings come first: they hold the lower passage ids
            terms_parts.insert(0, np.repeat(np.arange(self.n_terms, dtype=np.int32), np.diff(self.indptr)))
            docs_parts.insert(0, self.doc_ids)
            tf_parts.insert(0, self.tf)
        if not terms_parts:               # only empty passages, added to an empty index
            terms_parts, docs_parts, tf_parts = ([np.zeros(0, np.int32)] for _ in range(3))
        terms = np.concatenate(terms_parts)
        del terms_parts
        # each part is sorted by (term, passage) and parts hold increasing passages: a stable sort by term
        # (timsort merging the sorted runs) gives the CSC order
        order = np.argsort(terms, kind="stable") if len(docs_parts) > 1 else None
        doc_ids = np.concatenate(docs_parts)
        tf = np.concatenate(tf_parts)
        del docs_parts, tf_parts
        if order is not None:
            doc_ids, tf, terms = doc_ids[order], tf[order], terms[order]
            del order
        self.indptr = np.zeros(n_terms + 1, np.int64)
        np.cumsum(np.bincount(terms, minlength=n_terms), out=self.indptr[1:])
        del terms
        self.doc_ids, self.tf = doc_ids, tf
        self.doc_len = np.concatenate([self.doc_len, lengths])
        self.n_docs, self.n_terms = span, n_terms
        self._score()
        return self

    def _score(self):
        """(Re)compute every posting's score from tf, df and passage lengths (in slices of postings)."""
        df = np.diff(self.indptr)
        avg_len = float(self.doc_len.mean()) if self.n_docs else 1.0
        if avg_len == 0:
            avg_len = 1.0        # every passage empty: all tf are 0 anyway
        idf = idf_values(self.idf_variant, df, self.n_docs)
        if self.variant in ("bm25l", "bm25+"):
            # baseline at tf=0 (independent of length for both variants)
            self.baseline = idf * tf_component(self.variant, 0.0, avg_len, avg_len, self.k1, self.b, self.delta)
        else:
            self.baseline = None
        self.scores = np.empty(len(self.doc_ids), self.dtype)
        nnz = len(self.doc_ids)
        for a in range(0, nnz, _CHUNK):
            b = min(nnz, a + _CHUNK)
            # term of each posting in this slice, from indptr
            first, last = np.searchsorted(self.indptr, [a, b - 1], side="right") - 1
            counts = np.minimum(self.indptr[first + 1:last + 2], b) - np.maximum(self.indptr[first:last + 1], a)
            terms = np.repeat(np.arange(first, last + 1), counts)
            tfc = tf_component(self.variant, self.tf[a:b], self.doc_len[self.doc_ids[a:b]], avg_len, self.k1,
                               self.b, self.delta)
            part = idf[terms] * tfc
            if self.baseline is not None:
                part -= self.baseline[terms]
                # BM25L's tf component grows with tf, but rounded it can come out an ulp below its tf=0 value
                # when c is tiny next to delta: a score a few 1e-16 below 0, which MaxScore's bounds (scaled
                # by bound_slack) and the "every stored score >= 0" above do not allow for
                np.maximum(part, 0.0, out=part)
            self.scores[a:b] = part
        # terms in >= 1/4 of the passages also get a dense score row (no more bytes than their postings hold):
        # looking up candidates in them is one gather instead of a binary search
        self.dense_row_of = np.full(self.n_terms, -1, np.int64)
        common = np.flatnonzero(df * 4 >= self.n_docs) if self.n_docs >= 64 else np.zeros(0, np.int64)
        # (float64 on the indexes the exhaustive path may serve: it adds whole rows, and a float32 row added to
        # float64 sums costs twice as much; a float64 row holds the float32 score exactly)
        row_dtype = np.float64 if self.n_docs <= _EXHAUSTIVE_MAX_DOCS else self.dtype
        self.dense_rows = np.zeros((len(common), self.n_docs), row_dtype)
        for r, t in enumerate(common.tolist()):
            s, e = self.indptr[t], self.indptr[t + 1]
            self.dense_rows[r, self.doc_ids[s:e]] = self.scores[s:e]
            self.dense_row_of[t] = r
        # every stored score > 0 (not so where an idf is 0): a passage's sum over the terms it holds is then
        # > 0, which the batch path uses to find the passages it reached
        self.positive = bool(nnz == 0 or self.scores.min() > 0)
        term_max = np.zeros(self.n_terms, np.float64)
        nonempty = df > 0
        if nonempty.any():
            term_max[nonempty] = np.maximum.reduceat(self.scores, self.indptr[:-1][nonempty])
        self.term_max = np.maximum(term_max, 0.0)

    # -- querying -------------------------------------------------------------------------------------------
    def _query_terms(self, term_ids):
        ids = np.asarray(term_ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n_terms):
            raise ValueError(f"query term id out of range: {self.term_range()}")
        terms, counts = np.unique(ids, return_counts=True)
        return terms, counts.astype(np.float64)

    def _base(self, info):
        """BM25L/BM25+: what every passage gets from the query's terms it lacks (0.0 for the other variants)."""
        return 0.0 if self.baseline is None else sum(float(self.baseline[x[2]]) * x[3] for x in info)

    def score_all(self, term_ids):
        """BM25 score of every passage (float64 vector). The simple, slow reference; used by parity tests."""
        terms, counts = self._query_terms(term_ids)
        out = np.zeros(self.n_docs, np.float64)
        for t, c in zip(terms, counts):
            s, e = self.indptr[t], self.indptr[t + 1]
            out[self.doc_ids[s:e]] += c * self.scores[s:e].astype(np.float64)
        return out + (0.0 if self.baseline is None else float(self.baseline[terms] @ counts))

    def topk(self, term_ids, k=10, allowed=None):
        """Exact top-k passages containing at least one query term: (passage indices int64, scores float64).

        allowed: optional boolean mask over passages; masked-out passages are never returned.
        Returns fewer than k results when fewer passages match.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        allowed = self._mask(allowed)
        info = self._ordered_terms(term_ids)
        if info is None:
            return _EMPTY
        if self.exhaustive(sum(x[5] - x[4] for x in info), single=True):
            return bm25_dense.topk_one(self, info, self._base(info), k, allowed)
        return self._run_plan(self._plan_of(info, k), k, allowed)

    def exhaustive(self, volume, single):
        """Whether a query of `volume` postings (a batch: an array of volumes, one answer each) is cheaper summed
        in full (bm25_dense) than by MaxScore.

        Measured on bench/retrieval.py's synthetic corpora, one thread, us a query (summed in full / MaxScore):
        10k passages: one at a time 21 / 49 (natural queries), 20 / 21 (rare terms); batched 15 / 24 and
        4 / 4. 30k: 42 / 56 one at a time and 35 / 38 batched (natural). 45k: 55 / 72 and 51 / 46. The full sum
        costs ~11 us plus ~1 us per thousand passages; MaxScore ~20-25 us for a query of rare terms alone, ~50-70
        us for one whose lists cover the corpus, and a few us a query in a batch of rare terms.
        """
        n = self.n_docs
        if single:
            return self.positive and (n <= _EXHAUSTIVE_ANY_DOCS or (2 * volume >= n and n <= _EXHAUSTIVE_MAX_DOCS))
        full = _EXHAUSTIVE_BATCH_SHARE * np.asarray(volume) >= n
        if not self.positive or n > _EXHAUSTIVE_BATCH_DOCS:
            full[:] = False
        elif np.count_nonzero(~full) < _MAXSCORE_MIN_BATCH:
            full[:] = True
        return full

    def term_range(self):
        """The valid term ids, in words (for errors)."""
        return f"ids 0..{self.n_terms - 1}" if self.n_terms else "the index has no terms (only empty passages)"

    def _mask(self, allowed):
        """allowed as a boolean mask of n_docs entries: a 0/1 integer array would index passages, not mask them."""
        if allowed is None:
            return None
        mask = np.asarray(allowed)
        if mask.dtype != bool:
            if mask.size and not np.isin(mask, (0, 1)).all():
                raise ValueError("allowed must be a boolean mask over passages (True = may be returned), "
                                 f"got {mask.dtype} values other than 0 and 1")
            mask = mask.astype(bool)
        if mask.shape != (self.n_docs,):
            raise ValueError(f"allowed mask has shape {mask.shape}, expected ({self.n_docs},)")
        return mask

    def _plan(self, term_ids, k):
        """Per-query facts in plain Python (a query has a handful of terms; numpy calls cost microseconds):
        terms sorted by their largest possible contribution (rarest first), weights (repeat counts), posting
        ranges, rest_ub[m] = the most terms m.. can add, the baseline, and how many terms start essential."""
        info = self._ordered_terms(term_ids)
        return None if info is None else self._plan_of(info, k)

    def _ordered_terms(self, term_ids):
        """The query's distinct terms in plan order as (dense-row?, -bound, term, weight, start, end) tuples;
        None for an empty query or index."""
        counts = {}
        for t in term_ids:
            counts[t] = counts.get(t, 0) + 1
        if not counts or self.n_docs == 0:
            return None
        try:
            if min(counts) < 0 or max(counts) >= self.n_terms:
                raise ValueError(f"query term id out of range: {self.term_range()}")
            # (.item gives Python numbers: numpy scalars would make each lookup and each comparison of the sort
            # several times slower; it also refuses floats and bools, which are not term ids)
            pos, bound, row = self.indptr.item, self.term_max.item, self.dense_row_of.item
            # (terms with a dense score row go last whatever their bound: they are the commonest, and the
            # exhaustive batch path scatters every other term first and adds the rows after, in this same order)
            return sorted((row(t) >= 0, -bound(t) * c, int(t), float(c), pos(t), pos(t + 1))
                          for t, c in counts.items())
        except TypeError:  # the same words as the batched path's (BatchPlan)
            bad = next((t for t in counts if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer))),
                       None)
            if bad is None:
                raise
            raise TypeError(f"query term ids must be integers, got {type(bad).__name__}") from None

    def _plan_of(self, info, k):
        n = len(info)
        terms = [x[2] for x in info]
        weights = [x[3] for x in info]
        starts = [x[4] for x in info]
        ends = [x[5] for x in info]
        rest_ub = [0.0] * (n + 1)
        for j in range(n - 1, -1, -1):
            rest_ub[j] = rest_ub[j + 1] - info[j][1]
        slack = bm25_batch.bound_slack(n)       # a passage's sum may round a few ulps above the bound's
        rest_ub = [r * slack for r in rest_ub]
        base = self._base(info)
        # essential terms to start with: every cheap (short) posting list, and enough postings for k candidates
        cheap = max(4 * k, self.n_docs >> 6)
        m, volume = 0, 0
        while m < n and (volume < k or ends[m] - starts[m] <= cheap):
            volume += ends[m] - starts[m]
            m += 1
        return terms, weights, starts, ends, rest_ub, base, m

    def _run_plan(self, plan, k, allowed):
        """MaxScore for one query (see module docstring).

        Every comparison that decides membership is made on returned scores (sum + base: BM25L/BM25+ add their
        baseline, which can round two different sums to one score, and then the lower passage must win) and
        on bounds widened by bound_slack (float sums taken in another order than the bound's).
        """
        terms, weights, starts, ends, rest_ub, base, m = plan
        n = len(terms)
        slack = bm25_batch.bound_slack(n)
        union = _Union(self)
        try:
            while True:
                cand, cand_s = union.upto(weights, starts, ends, m)
                if allowed is not None:
                    keep = allowed[cand]
                    cand, cand_s = cand[keep], cand_s[keep]
                if m == n:
                    break
                if len(cand) >= k:
                    theta = np.partition(cand_s, len(cand) - k)[len(cand) - k]
                    # partial scores are lower bounds: when the k-th beats everything the other terms can give a
                    # passage holding none of the essential ones, the full k-th score does too
                    settled = theta + base > rest_ub[m] + base
                    # a candidate whose partial score plus everything the other terms could add stays below
                    # the k-th partial score cannot make the top-k: look the others up for the rest only
                    live = (cand_s + rest_ub[m]) * slack + base >= theta + base
                    n_live = int(np.count_nonzero(live))
                    if settled or ends[m] - starts[m] > bm25_batch.WIDEN * n_live:
                        c, cs = cand[live], cand_s[live]
                        self._add_rest(c, cs, terms[m:], weights[m:], rest_ub[m])
                        # (when not settled by the partial scores, widening would touch many postings: first
                        # see whether the full scores settle it)
                        if settled or np.partition(cs, len(cs) - k)[len(cs) - k] + base > rest_ub[m] + base:
                            cand, cand_s = c, cs
                            break
                m += 1
        finally:
            union.release()
        if len(cand) == 0:
            return _EMPTY
        return _top_k_sorted(cand, cand_s + base, k)

    def topk_batch(self, queries, k=10, allowed=None):
        """topk for many queries at once: a list of (indices, scores), exactly as topk would return them.

        The same MaxScore as topk, run for all queries together as a fixed number of large array operations
        (bm25_batch): topk's per-query numpy calls cost more than the work itself when posting lists are short.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return bm25_batch.topk_batch(self, queries, k, self._mask(allowed))

    def _lookup(self, t, docs):
        """Score of term t in each of `docs` (0 where absent), float64."""
        s, e = int(self.indptr[t]), int(self.indptr[t + 1])
        plist = self.doc_ids[s:e]
        if len(docs) * 16 > e - s:
            # many lookups: scatter the posting list into a dense scratch column and gather (linear time)
            col = self._scratch_col()
            try:
                col[plist] = self.scores[s:e]
                return col[docs].astype(np.float64)
            finally:
                col[plist] = 0.0
        pos = np.searchsorted(plist, docs)
        np.minimum(pos, len(plist) - 1, out=pos)
        out = self.scores[s:e][pos].astype(np.float64)
        out[plist[pos] != docs] = 0.0
        return out

    def _scratch_col(self):
        tls = self._tls
        col = getattr(tls, "col", None)
        if col is None or len(col) != self.n_docs:
            tls.col = col = np.zeros(self.n_docs, self.dtype)
        return col

    def _scratch(self):
        """Per-thread zeroed work arrays of length n_docs (reset after each use, so queries are thread-safe)."""
        tls = self._tls
        acc = getattr(tls, "acc", None)
        if acc is None or len(acc) != self.n_docs:
            tls.acc = acc = np.zeros(self.n_docs, np.float64)
            tls.seen = np.zeros(self.n_docs, bool)
        return acc, tls.seen

    def _add_rest(self, cand, cand_s, terms, weights, rest_ub):
        """Add the non-essential terms' scores for the candidates only (in place)."""
        if rest_ub == 0 or len(cand) == 0:
            return                            # only idf-0 terms left: they add nothing
        rows, row_of = self.dense_rows, self.dense_row_of
        for t, w in zip(terms, weights):
            r = row_of[t]
            if r >= 0:                        # very common term: its scores as a dense row, one gather
                cand_s += w * rows[r, cand].astype(np.float64)
                continue
            cand_s += w * self._lookup(t, cand)


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float64))


def _integer_vector(values, field, what):
    """values as a 1-D integer array; an empty list is fine. Floats are refused rather than truncated: a term id
    of 1.7 would otherwise be indexed as term 1."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D array of {what}, got shape {arr.shape}")
    if len(arr) and arr.dtype.kind not in "iu":
        raise TypeError(f"{field}: {what} must be integers, got {arr.dtype}")
    return arr


class _Union:
    """Candidates and partial scores of the first m (essential) terms of a query, grown one term at a time.

    Short posting lists are merged by sorting their concatenation; once the volume is a good part of the corpus,
    postings are scattered into the index's per-thread dense scratch arrays instead (no sort; each new term
    only adds its own postings). The passages touched are kept as a list in first-seen order (not sorted), so
    neither listing them nor release() zeroing them again has to scan the whole scratch array.
    """

    def __init__(self, index):
        self.index = index
        self.acc = self.seen = None
        self.touched = []
        self.added = 0

    def upto(self, weights, starts, ends, m):
        ix = self.index
        doc_ids, scores = ix.doc_ids, ix.scores
        if m == 1:
            s, e = starts[0], ends[0]
            return doc_ids[s:e].astype(np.int64), weights[0] * scores[s:e].astype(np.float64)
        if self.acc is None and (sum(ends[:m]) - sum(starts[:m])) * 32 > ix.n_docs:
            self.acc, self.seen = ix._scratch()
        if self.acc is not None:
            for j in range(self.added, m):
                d = doc_ids[starts[j]:ends[j]]  # one posting list: no passage twice, so += is safe
                new = d[~self.seen[d]].astype(np.int64)
                self.touched.append(new)         # recorded before anything is written: release() finds it all
                self.seen[new] = True
                self.acc[d] += weights[j] * scores[starts[j]:ends[j]].astype(np.float64)
            self.added = m
            self.touched = [np.concatenate(self.touched)]
            cand = self.touched[0]
            return cand, self.acc[cand]
        d = np.concatenate([doc_ids[s:e] for s, e in zip(starts[:m], ends[:m])])
        v = np.concatenate([w * scores[s:e].astype(np.float64) for w, s, e in zip(weights[:m], starts[:m], ends[:m])])
        # summed term by term from 0.0, like the scatter path and the batch path (np.add.reduceat would not:
        # it sums a segment's tail pairwise)
        return bm25_batch.sum_by_key(d, v, ix.n_docs)

    def release(self):
        """Zero what this query wrote into the scratch arrays (also after an error half-way through upto)."""
        if self.acc is not None and self.touched:
            touched = np.concatenate(self.touched)
            self.acc[touched] = 0.0
            self.seen[touched] = False
            self.touched = []


def _top_k_sorted(ids, scores, k):
    """The k best (ids, scores) by descending score; ties go to the smaller id (ids in any order)."""
    n = len(scores)
    if n > k:
        theta = np.partition(scores, n - k)[n - k]
        above = np.flatnonzero(scores > theta)
        ties = np.flatnonzero(scores == theta)
        ties = ties[np.argsort(ids[ties], kind="stable")][: k - len(above)]
        sel = np.concatenate([above, ties])
    else:
        sel = np.arange(n)
    order = np.lexsort((ids[sel], -scores[sel]))
    sel = sel[order]
    return ids[sel], scores[sel]
