"""Every BM25 query path (MaxScore single and batched, bm25_dense's topk_one and topk_block) against a brute-force
float64 oracle written here, and against each other bit for bit, under adversarial settings: float32 dense score
rows, tiny blocks and group counts, routing thresholds moved so an index grown by add() crosses them, queries of
many repeated terms, masks that leave a few passages, identical passages tying at the k-th place, and several
threads querying one index at once."""

import re
import threading

import numpy as np
import pytest

import minagent.retrieval.bm25 as bm25_mod
from minagent.retrieval import bm25_batch, bm25_dense
from minagent.retrieval.bm25 import VARIANTS, BM25Index

PATHS = ("maxscore", "exhaustive")


def force_path(monkeypatch, path):
    """Send every query (single and batched) down one path; an index with zero scores cannot take bm25_dense."""
    def exhaustive(self, volume, single):
        take = path == "exhaustive" and self.positive
        return take if single else np.full(np.shape(volume), take)

    monkeypatch.setattr(BM25Index, "exhaustive", exhaustive)


def oracle_scores(idx, query):
    """Brute force: every passage's score, sum over the query's terms (repeats counted) of count * stored score
    in float64, plus the BM25L/BM25+ baseline of every term; and which passages hold a query term."""
    counts = {}
    for t in query:
        counts[t] = counts.get(t, 0) + 1
    score = np.zeros(idx.n_docs)
    held = np.zeros(idx.n_docs, bool)
    for t, c in counts.items():
        s, e = idx.indptr[t], idx.indptr[t + 1]
        for d, v in zip(idx.doc_ids[s:e].tolist(), idx.scores[s:e].tolist()):
            score[d] += c * float(v)
            held[d] = True
        if idx.baseline is not None:
            score += c * float(idx.baseline[t])
    return score, held


def assert_oracle(idx, query, k, allowed, ids, scores, what):
    """The oracle's top k (score desc, passage asc) over allowed passages holding a query term; passages whose
    oracle scores agree to 1e-9 (sums taken in another order) may swap."""
    score, held = oracle_scores(idx, query)
    if allowed is not None:
        held &= allowed
    cand = np.flatnonzero(held)
    want = cand[np.lexsort((cand, -score[cand]))][:k]
    assert len(ids) == len(want), what
    assert len(set(ids.tolist())) == len(ids), what
    np.testing.assert_allclose(scores, score[want], rtol=1e-9, atol=1e-12, err_msg=what)
    for a, b in zip(ids.tolist(), want.tolist()):
        assert a == b or abs(score[a] - score[b]) <= 1e-9 * max(1.0, abs(score[b])), what


def every_path(monkeypatch, idx, queries, k, allowed):
    """{path name: results} for each forced path, single and batched."""
    out = {}
    for path in PATHS:
        with monkeypatch.context() as m:
            force_path(m, path)
            out[path] = [idx.topk(q, k, allowed) for q in queries]
            out[path + " batch"] = idx.topk_batch(queries, k, allowed)
    out["routed"] = [idx.topk(q, k, allowed) for q in queries]
    out["routed batch"] = idx.topk_batch(queries, k, allowed)
    return out


def assert_paths_agree_with_the_oracle(monkeypatch, idx, queries, k, allowed, what):
    results = every_path(monkeypatch, idx, queries, k, allowed)
    ref = results["maxscore"]
    for i, q in enumerate(queries):
        for name, res in results.items():
            a, s = res[i]
            assert a.tolist() == ref[i][0].tolist() and s.tolist() == ref[i][1].tolist(), f"{name}: {what} q={q}"
        assert_oracle(idx, q, k, allowed, *ref[i], f"{what} q={q} k={k}")


def random_docs(rng, n, vocab):
    docs = [((rng.zipf(1.25, int(rng.integers(0, 16))) - 1) % vocab).tolist() for _ in range(n)]
    for i in rng.integers(0, n, n // 4 + 1).tolist():        # identical passages: ties at the k-th place
        docs[i] = list(docs[0])
    return docs


def build(docs, vocab, parts=1, **params):
    """An index of docs, added in `parts` calls to add()."""
    idx = BM25Index(**params)
    cuts = np.linspace(0, len(docs), parts + 1).astype(int)
    for a, b in zip(cuts[:-1], cuts[1:]):
        chunk = docs[a:b]
        idx.add(np.array([t for d in chunk for t in d], np.int64), [len(d) for d in chunk], vocab)
    return idx


def test_a_repeated_term_with_a_float32_dense_row_is_weighted_in_float64(monkeypatch):
    # A dense score row is float32 on a float32 index too big for the exhaustive path's default routing. Summed in
    # full anyway (routing moved), weight * row was taken in float32 (NumPy keeps the array's dtype against a
    # Python float): the query "t t t" returned float32(3 * score), not 3 * score as MaxScore and the oracle do.
    monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_MAX_DOCS", 10)     # rows float32 from 10 passages on
    rng = np.random.default_rng(0)
    docs = [((rng.zipf(1.3, int(rng.integers(1, 15))) - 1) % 30).tolist() for _ in range(200)]
    idx = build(docs, 30, variant="lucene", dtype="float32")
    t = int(np.flatnonzero(idx.dense_row_of >= 0)[0])
    assert idx.dense_rows.dtype == np.float32
    s, e = idx.indptr[t], idx.indptr[t + 1]
    exact = 3.0 * idx.scores[s:e].astype(np.float64)            # one term: no summation order to argue about
    order = np.lexsort((idx.doc_ids[s:e], -exact))[:5]
    force_path(monkeypatch, "exhaustive")
    for ids, scores in (idx.topk([t, t, t], 5), idx.topk_batch([[t, t, t]] * 3, 5)[0]):
        assert ids.tolist() == idx.doc_ids[s:e][order].tolist()
        assert scores.tolist() == exact[order].tolist()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_path_equals_the_oracle_under_tiny_blocks_groups_and_moved_routing(monkeypatch, variant):
    rng = np.random.default_rng(len(variant) * 7 + 1)
    for trial in range(3):
        monkeypatch.setattr(bm25_dense, "GROUPS", [1, 3, 16][trial])
        monkeypatch.setattr(bm25_dense, "_BLOCK_SLOTS", [1, 100, 1 << 18][trial])   # 1: a block is one query
        monkeypatch.setattr(bm25_batch, "_DENSE_SLOTS", [1, 64, 1 << 22][trial])
        monkeypatch.setattr(bm25_batch, "MAX_TERMS", [2, 64, 64][trial])
        monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_ANY_DOCS", [0, 40, 1 << 14][trial])
        monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_MAX_DOCS", [50, 0, 3 << 14][trial])   # 50: float32 rows above
        monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_BATCH_DOCS", [100, 60, 1 << 15][trial])
        monkeypatch.setattr(bm25_mod, "_MAXSCORE_MIN_BATCH", [0, 3, 32][trial])
        n = [65, 161, 97][trial]
        vocab = int(rng.integers(10, 50))
        docs = random_docs(rng, n, vocab)
        dtype = ("float32", "float64")[trial % 2]
        idf = (None, "bm25l", "lucene")[trial]
        # grown across the routing sizes by add(): every add recomputes the scores and the dense rows
        idx = build(docs, vocab + 2, parts=3, variant=variant, idf=idf, k1=1.2, b=0.75, delta=0.7, dtype=dtype)
        queries = [((rng.zipf(1.2, int(rng.integers(1, 9))) - 1) % (vocab + 2)).tolist() for _ in range(30)]
        queries += [[0] * 70, [1, 1, 2, 2, 2], list(range(vocab + 2)) * 2, [vocab + 1], []]   # repeats, no postings
        few = np.zeros(n, bool)
        few[[0, n - 1]] = True
        for allowed in (None, rng.random(n) < 0.5, few, np.zeros(n, bool)):
            for k in (1, 4, n + 3):
                what = f"{variant} {dtype} idf={idf} n={n} trial={trial} mask={allowed is not None}"
                assert_paths_agree_with_the_oracle(monkeypatch, idx, queries, k, allowed, what)


def test_threads_querying_one_index_get_what_one_thread_gets(monkeypatch):
    rng = np.random.default_rng(11)
    docs = random_docs(rng, 300, 80)
    queries = [((rng.zipf(1.2, int(rng.integers(1, 8))) - 1) % 80).tolist() for _ in range(60)]
    allowed = rng.random(300) < 0.7
    for variant in ("lucene", "bm25+"):
        idx = build(docs, 80, variant=variant)
        for path in PATHS:
            force_path(monkeypatch, path)
            want = [idx.topk(q, 5, allowed) for q in queries]
            for q, (ids, scores) in zip(queries, want):
                assert_oracle(idx, q, 5, allowed, ids, scores, f"{variant} {path} q={q}")
            bad = []

            def work(seed):
                order = np.random.default_rng(seed).permutation(len(queries)).tolist()
                for _ in range(3):
                    got = idx.topk_batch([queries[i] for i in order], 5, allowed)
                    got += [idx.topk(queries[i], 5, allowed) for i in order]
                    for i, (ids, scores) in zip(order + order, got):
                        if ids.tolist() != want[i][0].tolist() or scores.tolist() != want[i][1].tolist():
                            bad.append((path, queries[i]))

            threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert not bad, bad[:3]


@pytest.mark.parametrize("params", [{"k1": float("inf")}, {"variant": "atire", "k1": float("inf")},
                                    {"variant": "bm25+", "delta": float("inf")},
                                    {"variant": "bm25l", "k1": 1e300, "delta": 1e200}])
def test_infinite_or_overflowing_k1_or_delta_is_refused_naming_the_parameter(params):
    # k1 = inf made every tf component inf / inf = nan (atire, bm25l, bm25+) or 0 (lucene), delta = inf every
    # BM25+ score inf - inf = nan, and BM25L's (k1 + 1)(c + delta) overflowed for k1 = 1e300, delta = 1e200: the
    # index was built with nan scores, and topk returned them or (MaxScore) raised IndexError
    name = "k1" if "k1" in params else "delta"
    with pytest.raises(ValueError, match=re.escape(f"{name}={params[name]} (0..1e+30)")):
        BM25Index(**params)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_largest_k1_and_delta_allowed_give_finite_scores(variant):
    # a very long passage next to short ones (c = tf / norm from tiny to large) and b at both ends
    docs = [[0], [0, 1] * 3000, [2, 0, 0], [1]]
    for dtype in ("float32", "float64"):
        for b in (0.0, 1.0):
            for idf in VARIANTS:
                idx = build(docs, 3, variant=variant, idf=idf, k1=1e30, b=b, delta=1e30, dtype=dtype)
                assert np.isfinite(idx.scores).all() and idx.scores.min() >= 0
                assert idx.baseline is None or np.isfinite(idx.baseline).all()
                ids, scores = idx.topk([0, 1, 2], 4)
                assert len(ids) == 4 and np.isfinite(scores).all()


def test_bm25l_with_a_huge_delta_stores_no_negative_score_and_every_path_answers(monkeypatch):
    # BM25L's tf component (k1 + 1)(c + delta) / (k1 + c + delta) grows with c, so a passage's score above the
    # baseline is > 0 in exact arithmetic (checked below with fractions); with delta = 1e10, c + delta rounds
    # away most of c and the rounded score came out 2e-16 *below* 0. MaxScore scales its bounds by a slack
    # factor > 1, which makes a negative partial score smaller still: every candidate was dropped, and
    # topk([0, 1, 2], 1) raised IndexError (index -1 of an empty array).
    from fractions import Fraction

    docs = [[1, 2, 1, 0, 0], [1, 2, 0, 1, 0], [1], [2], [2], [0, 2]]
    k1, b, delta = 0.9, 0.75, 1e10
    idx = build(docs, 3, variant="bm25l", idf="lucene", k1=k1, b=b, delta=delta)
    avg = Fraction(sum(map(len, docs)), len(docs))

    def tfc(tf, dl):
        c = Fraction(tf) / (1 - Fraction(b) + Fraction(b) * dl / avg)
        return (Fraction(k1) + 1) * (c + Fraction(delta)) / (Fraction(k1) + c + Fraction(delta))

    assert all(tfc(d.count(t), len(d)) > tfc(0, len(d)) for d in docs for t in set(d))
    assert idx.scores.min() >= 0
    # the float64 formula, term by term (the oracle for the returned scores)
    n = len(docs)
    df = [sum(t in d for d in docs) for t in range(3)]
    idf = [np.log1p((n - f + 0.5) / (f + 0.5)) for f in df]
    ref = np.array([sum(idf[t] * float(tfc(d.count(t), len(d))) for t in range(3)) for d in docs])
    for path in PATHS:
        force_path(monkeypatch, path)
        for k in (1, 3, 6):
            for ids, scores in (idx.topk([0, 1, 2], k), idx.topk_batch([[0, 1, 2]], k)[0]):
                assert len(ids) == k and len(set(ids.tolist())) == k
                np.testing.assert_allclose(scores, ref[ids], rtol=1e-12)
                assert (np.diff(scores) <= 0).all()
