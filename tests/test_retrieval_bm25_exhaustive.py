"""The exhaustive BM25 path (bm25_dense) against MaxScore and a brute-force float64 oracle.

Small indexes answer queries by summing every posting into a dense row of sums (bm25_dense); bigger ones by
MaxScore. Both must return the same passages with bit-identical scores, single and batched, and the brute-force
score of every passage (score_all, ranked by score then passage index) is the oracle for what they return.
"""

import numpy as np
import pytest

import minagent.retrieval.bm25 as bm25_mod
from minagent.retrieval import bm25_dense
from minagent.retrieval.bm25 import BM25Index


def random_index(rng, n_docs, vocab, variant, dtype):
    lengths = rng.integers(0, 14, n_docs)
    flat = (rng.zipf(1.25, int(lengths.sum())) - 1) % vocab
    if n_docs > 8:                       # a few identical passages, so ties reach the k-th place
        flat_docs = np.split(flat, np.cumsum(lengths)[:-1])
        for i in rng.integers(0, n_docs, 4):
            flat_docs[i] = flat_docs[0]
        lengths = np.array([len(d) for d in flat_docs])
        flat = np.concatenate(flat_docs) if len(flat_docs) else flat
    return BM25Index(variant, k1=1.2, b=0.75, delta=0.7, dtype=dtype).add(flat, lengths, vocab)


def assert_matches_oracle(idx, q, k, allowed, ids, scores, what):
    """Brute force: every passage's float64 score (score_all), over the passages holding a query term, ranked by
    (score desc, index asc). Scores summed in another order may differ in the last bits, so only passages whose
    oracle scores agree to 1e-9 may swap places."""
    ref = idx.score_all(q)
    held = np.zeros(idx.n_docs, bool)
    for t in set(q):
        held[idx.doc_ids[idx.indptr[t]:idx.indptr[t + 1]]] = True
    if allowed is not None:
        held &= allowed
    cand = np.flatnonzero(held)
    want = cand[np.lexsort((cand, -ref[cand]))][:k]
    assert len(ids) == len(want), what
    np.testing.assert_allclose(scores, ref[want], rtol=1e-9, atol=1e-12, err_msg=what)
    for a, b in zip(ids.tolist(), want.tolist()):
        assert a == b or abs(ref[a] - ref[b]) <= 1e-9 * max(1.0, abs(ref[b])), what


def run_both_paths(monkeypatch, idx, queries, k, allowed):
    """(single, batch) results with the index's own routing, then with MaxScore forced."""
    got = ([idx.topk(q, k, allowed) for q in queries], idx.topk_batch(queries, k, allowed))
    with monkeypatch.context() as m:
        m.setattr(BM25Index, "exhaustive",
                  lambda self, volume, single: False if single else np.zeros(np.shape(volume), bool))
        ref = ([idx.topk(q, k, allowed) for q in queries], idx.topk_batch(queries, k, allowed))
    return got, ref


@pytest.mark.parametrize("variant", ["lucene", "atire", "bm25l", "bm25+", "robertson"])
@pytest.mark.parametrize("n_docs", [5, 17, 150, 161, 1200])
def test_exhaustive_equals_maxscore_bit_for_bit_and_the_brute_force_oracle(monkeypatch, variant, n_docs):
    rng = np.random.default_rng(n_docs * 31 + len(variant))
    calls = {"one": 0, "block": 0}
    real_one, real_block = bm25_dense.topk_one, bm25_dense.topk_block

    def one(*a):
        calls["one"] += 1
        return real_one(*a)

    def block(index, plan, qs, *a):
        calls["block"] += len(qs)
        return real_block(index, plan, qs, *a)

    monkeypatch.setattr(bm25_dense, "topk_one", one)
    monkeypatch.setattr(bm25_dense, "topk_block", block)
    for dtype in ("float32", "float64"):
        vocab = int(rng.integers(8, 60))
        idx = random_index(rng, n_docs, vocab, variant, dtype)
        queries = [list((rng.zipf(1.2, int(rng.integers(1, 9))) - 1) % vocab) for _ in range(45)]
        queries += [[0, 0, 0, 1], [1, 1], [vocab - 1]]          # repeated terms weigh more
        for allowed in (None, rng.random(n_docs) < 0.5):
            for k in (1, 10, 3 * n_docs):
                (single, batch), (ms_single, ms_batch) = run_both_paths(monkeypatch, idx, queries, k, allowed)
                for i, q in enumerate(queries):
                    what = f"{variant} {dtype} n={n_docs} k={k} mask={allowed is not None} query {q}"
                    for (a, s), (b, t) in ((single[i], ms_single[i]), (batch[i], ms_single[i]),
                                           (ms_batch[i], ms_single[i])):
                        assert a.tolist() == b.tolist() and s.tolist() == t.tolist(), what
                    assert_matches_oracle(idx, q, k, allowed, *single[i], what)
                    if allowed is not None:
                        assert allowed[single[i][0]].all(), what
        if idx.positive:
            assert calls["one"] > 0 and calls["block"] > 0      # the exhaustive path did run
        else:
            # robertson's idf is 0 for terms in half the passages, atire's for a term in every passage: a reached
            # passage can sum to 0, which the dense row cannot tell from an unreached one, so such an index never
            # takes the path
            assert variant in ("robertson", "atire") and calls == {"one": 0, "block": 0}
        calls.update(one=0, block=0)


def test_routing_by_index_size_and_query_volume(monkeypatch):
    rng = np.random.default_rng(5)
    idx = random_index(rng, 400, 300, "lucene", "float32")
    df = np.diff(idx.indptr)
    heavy, light = int(np.argmax(df)), int(np.flatnonzero(df == 1)[0])
    assert idx.positive and df[heavy] * 2 >= 400
    assert idx.exhaustive(1, single=True)                 # 400 passages: every single query
    monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_ANY_DOCS", 100)
    assert idx.exhaustive(df[heavy], single=True) and not idx.exhaustive(1, single=True)
    monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_MAX_DOCS", 300)
    assert not idx.exhaustive(df[heavy], single=True)
    # a batch: queries whose lists reach N / 8 are summed; the light ones go to MaxScore when there are enough
    # of them to make a MaxScore round worth its fixed cost, else they are summed too
    volumes = np.array([df[heavy]] * 10 + [1] * 40)
    assert idx.exhaustive(volumes, single=False).tolist() == [True] * 10 + [False] * 40
    assert idx.exhaustive(volumes[:15], single=False).all()
    monkeypatch.setattr(bm25_mod, "_EXHAUSTIVE_BATCH_DOCS", 300)
    assert not idx.exhaustive(volumes, single=False).any()
    # and the answers do not depend on the route
    monkeypatch.undo()
    queries = [[heavy, light]] * 10 + [[light, int(t)] for t in np.flatnonzero(df == 2)[:40]]
    for (a, s), (b, t) in zip(idx.topk_batch(queries, 5), [idx.topk(q, 5) for q in queries]):
        assert a.tolist() == b.tolist() and s.tolist() == t.tolist()


def test_a_baseline_decides_membership_on_returned_scores():
    # BM25L/BM25+ return sum + baseline, which rounds: with a baseline of 2**52 (float64 spacing 1) a sum of 2.6
    # returns 2**52 + 3, the same as a sum of 3.0, and the tie then goes to the lower passage. The k-th group
    # maximum here is 3.0 (passage 9), so passage 1 must be taken in although its sum is below it. (Hand-made:
    # real baselines are small, but the rule is what keeps the exhaustive path equal to MaxScore.)
    base = 2.0 ** 52
    acc = np.zeros(bm25_dense.GROUPS * 4)
    acc[1], acc[9] = 2.6, 3.0
    assert base + 2.6 == base + 3.0
    ids, scores = bm25_dense._select(acc, 3.0, 1, base)
    assert ids.tolist() == [1] and scores.tolist() == [base + 3.0]
    acc3 = acc.reshape(1, bm25_dense.GROUPS, 4)
    gmax, theta = bm25_dense._kth_bounds(acc3, 1)
    assert theta.tolist() == [3.0]
    qi, d, vals = bm25_dense._candidates(acc3, gmax, theta, np.array([base]))
    assert sorted(d.tolist()) == [1, 9] and qi.tolist() == [0, 0]
    assert bm25_dense._candidates(acc3, gmax, theta, None)[1].tolist() == [9]     # without one: the sum decides
