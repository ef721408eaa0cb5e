"""BM25 parity with bm25s and rank_bm25 (scores to 1e-6, identical top-10) on git-doc and synthetic corpora,
exact MaxScore top-k, filtering, adding documents."""

import json
import math
import os

import numpy as np
import pytest

from minagent.retrieval.analyzer import Analyzer, TermIds
from minagent.retrieval import bm25_batch
from minagent.retrieval.bm25 import VARIANTS, BM25Index
from minagent.retrieval.chunker import chunk_corpus

GIT_DOC = "/usr/share/doc/git-doc"
QUESTIONS = os.path.join(os.path.dirname(__file__), "data", "git_questions.jsonl")


def require_git_doc():
    if not os.path.isdir(GIT_DOC):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{GIT_DOC} missing: `apt-get install git-doc` is part of the CI setup")
        pytest.skip(f"{GIT_DOC} not installed (apt-get install git-doc)")


def build(token_lists, **params):
    """Our index from token lists (vocabulary in first-seen order)."""
    vocab = {}
    flat = [vocab.setdefault(t, len(vocab)) for toks in token_lists for t in toks]
    lengths = [len(t) for t in token_lists]
    return BM25Index(**params).add(np.array(flat, np.int64), lengths, len(vocab)), vocab


def ids_of(vocab, tokens):
    return [vocab[t] for t in tokens if t in vocab]


def assert_same_ranking(ids, ref_scores, k, what=""):
    """ids must be the reference top-k in order; only exact ties (to 1e-6) may swap places."""
    ref_ids = np.argsort(-ref_scores, kind="stable")[:k]
    assert len(ids) == len(ref_ids), what
    if not len(ids):
        return
    tol = 1e-6 * max(1.0, abs(float(ref_scores[ref_ids[0]])))
    for pos, (a, b) in enumerate(zip(ids, ref_ids)):
        assert a == b or abs(ref_scores[a] - ref_scores[b]) <= tol, f"{what}: rank {pos + 1}: {a} vs {b}"


# -- small corpora: hand formula and synthetic Zipf text ------------------------------------------------------

def test_lucene_scores_match_the_formula_by_hand():
    docs = [["git", "rebase", "branch"], ["git", "merge", "branch", "branch"], ["rebase"]]
    idx, vocab = build(docs, variant="lucene", k1=1.2, b=0.75)
    avg = 8 / 3

    def term(tf, dl, df):
        return math.log(1 + (3 - df + 0.5) / (df + 0.5)) * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avg))

    expected = [term(1, 3, 2) + term(1, 3, 2),            # "rebase branch" in doc 0
                term(2, 4, 2),                            # doc 1 has branch twice, no rebase
                term(1, 1, 2)]                            # doc 2 is just "rebase"
    got = idx.score_all(ids_of(vocab, ["rebase", "branch"]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    top, scores = idx.topk(ids_of(vocab, ["rebase", "branch"]), k=2)
    assert top.tolist() == sorted(range(3), key=lambda i: -expected[i])[:2]


def zipf_corpus(seed, n_docs, vocab=3000):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, n_docs)
    words = rng.zipf(1.3, lengths.sum()) % vocab
    docs, pos = [], 0
    for n in lengths:
        docs.append([f"w{w}" for w in words[pos:pos + n]])
        pos += n
    return docs, rng


def test_maxscore_topk_is_exact_against_rank_bm25(bm25_path):
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs, rng = zipf_corpus(0, 1500)
    ref = rank_bm25.BM25Okapi(docs, k1=1.2, b=0.75, epsilon=0.0)
    idx, vocab = build(docs, variant="atire", idf="robertson", k1=1.2, b=0.75, dtype="float64")
    for qi in range(150):
        # mix frequent and rare words, with repeats, so MaxScore must often widen its essential set
        q = [f"w{w}" for w in (rng.zipf(1.2, rng.integers(1, 7)) % 3000)]
        k = [1, 3, 10, 40][qi % 4]
        ref_scores = np.asarray(ref.get_scores(q))
        top, scores = idx.topk(ids_of(vocab, q), k)
        matched = np.zeros(len(docs), bool)
        for d, toks in enumerate(docs):
            matched[d] = any(t in toks for t in q)
        ref_masked = np.where(matched, ref_scores, -np.inf)
        assert_same_ranking(top, ref_masked, min(k, int(matched.sum())), f"query {q}")
        np.testing.assert_allclose(scores, ref_scores[top], rtol=1e-9, atol=1e-9)


def test_filter_never_returns_masked_passages(bm25_path):
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs, rng = zipf_corpus(1, 800)
    ref = rank_bm25.BM25Okapi(docs, k1=0.9, b=0.4, epsilon=0.0)
    idx, vocab = build(docs, variant="atire", idf="robertson", k1=0.9, b=0.4, dtype="float64")
    allowed = rng.random(len(docs)) < 0.1
    for _ in range(40):
        q = [f"w{w}" for w in (rng.zipf(1.2, 3) % 3000)]
        top, _ = idx.topk(ids_of(vocab, q), 10, allowed=allowed)
        assert allowed[top].all()
        matched = np.array([allowed[d] and any(t in toks for t in q) for d, toks in enumerate(docs)])
        ref_scores = np.where(matched, ref.get_scores(q), -np.inf)
        assert_same_ranking(top, ref_scores, min(10, int(matched.sum())), f"query {q}")
    none_allowed = np.zeros(len(docs), bool)
    assert len(idx.topk(ids_of(vocab, ["w1"]), 5, allowed=none_allowed)[0]) == 0
    # a 0/1 integer mask means the same as the boolean one (numpy would read it as passage indices)
    q = ids_of(vocab, ["w1", "w2"])
    as_int = allowed.astype(np.int64)
    for got, want in ((idx.topk(q, 10, as_int), idx.topk(q, 10, allowed)),
                      (idx.topk_batch([q], 10, as_int)[0], idx.topk_batch([q], 10, allowed)[0])):
        assert np.array_equal(got[0], want[0]) and allowed[got[0]].all()
    with pytest.raises(ValueError, match="allowed must be a boolean mask"):
        idx.topk(q, 10, np.flatnonzero(allowed))
    with pytest.raises(ValueError, match=r"allowed mask has shape \(3,\)"):
        idx.topk(q, 10, np.ones(3, bool))


def test_adding_documents_equals_indexing_everything_at_once():
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs, rng = zipf_corpus(2, 600)
    ref = rank_bm25.BM25Okapi(docs, k1=1.5, b=0.75, epsilon=0.0)
    idx, vocab = build(docs[:350], variant="atire", idf="robertson", k1=1.5, b=0.75, dtype="float64")
    # second batch: new words join the vocabulary
    flat = [vocab.setdefault(t, len(vocab)) for toks in docs[350:] for t in toks]
    idx.add(np.array(flat), [len(t) for t in docs[350:]], len(vocab))
    assert idx.n_docs == 600
    for _ in range(30):
        q = [f"w{w}" for w in (rng.zipf(1.2, 4) % 3000)]
        np.testing.assert_allclose(idx.score_all(ids_of(vocab, q)), ref.get_scores(q), rtol=1e-9, atol=1e-9)


def test_building_in_small_slices_gives_the_same_index(monkeypatch):
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs, rng = zipf_corpus(4, 400)
    monkeypatch.setattr("minagent.retrieval.bm25._CHUNK", 97)     # many slices, passages straddle them
    idx, vocab = build(docs, variant="bm25+", k1=1.2, b=0.75, delta=1.0, dtype="float64")
    ref = rank_bm25.BM25Plus(docs, k1=1.2, b=0.75, delta=1.0)
    for _ in range(20):
        q = [f"w{w}" for w in (rng.zipf(1.2, 4) % 3000)]
        np.testing.assert_allclose(idx.score_all(ids_of(vocab, q)), ref.get_scores(q), rtol=1e-9, atol=1e-9)


def test_batched_rounds_widen_unsettled_queries_and_stay_exact(monkeypatch, maxscore_only):
    # a corpus big enough that most queries take the vectorised batch round; queries it cannot settle take
    # one more essential term and go round again: every result must still equal the single-query path's
    docs, rng = zipf_corpus(5, 6000)
    idx, vocab = build(docs)
    queries = [ids_of(vocab, [f"w{w}" for w in rng.zipf(1.2, rng.integers(2, 8)) % 3000]) for _ in range(150)]
    rounds = []
    real_round = bm25_batch._round

    def counting_round(index, plan, qs, *rest):
        rounds.append(len(qs))
        return real_round(index, plan, qs, *rest)

    monkeypatch.setattr(bm25_batch, "_round", counting_round)
    for allowed in (None, rng.random(len(docs)) < 0.3):
        for k in (1, 10):
            for q, (a, s) in zip(queries, idx.topk_batch(queries, k, allowed)):
                b, t = idx.topk(q, k, allowed)
                assert a.tolist() == b.tolist()
                assert s.tolist() == t.tolist()
    assert rounds[0] > 50 and len(rounds) > 4          # batched first rounds, and widened rounds after them


@pytest.mark.parametrize("variant", ["lucene", "robertson"])
def test_batch_dense_rows_chunks_and_long_queries_equal_single_queries(monkeypatch, variant, maxscore_only):
    # queries of common words only have long essential lists, which the batch scatters into dense per-query
    # rows; robertson's idf is 0 for terms in over half the passages, so some stored scores are 0 and the rows
    # must find reached passages by counting postings, not by a non-zero sum. Tiny chunks force several dense
    # chunks; a query with more distinct terms than MAX_TERMS takes the single-query path inside the batch, and
    # so do long-list queries when the index is too big for dense rows (here: any size).
    docs, rng = zipf_corpus(7, 2000, vocab=400)
    idx, vocab = build(docs, variant=variant)
    assert idx.positive == (variant == "lucene")
    common = [f"w{w}" for w in range(1, 40)]
    queries = [ids_of(vocab, list(rng.choice(common, rng.integers(1, 6)))) for _ in range(40)]
    queries += [ids_of(vocab, [f"w{w}" for w in rng.zipf(1.2, rng.integers(1, 8)) % 400]) for _ in range(40)]
    queries.append(list(range(len(vocab))))              # every term: longer than MAX_TERMS
    monkeypatch.setattr(bm25_batch, "_DENSE_SLOTS", 3 * len(docs))
    calls = {"dense rows": 0, "single": 0}
    real_sum_dense, real_run_plan = bm25_batch._sum_dense, BM25Index._run_plan

    def counting_dense(index, slot, *rest):
        calls["dense rows"] += len(np.unique(slot))
        return real_sum_dense(index, slot, *rest)

    def counting_single(self, *args):
        calls["single"] += 1
        return real_run_plan(self, *args)

    monkeypatch.setattr(bm25_batch, "_sum_dense", counting_dense)
    monkeypatch.setattr(BM25Index, "_run_plan", counting_single)
    for max_docs in (1 << 15, 0):
        monkeypatch.setattr(bm25_batch, "_DENSE_MAX_DOCS", max_docs)
        calls["dense rows"] = 0
        for allowed in (None, rng.random(len(docs)) < 0.4):
            for k in (1, 10, 50):
                before = calls["single"]
                batch = idx.topk_batch(queries, k, allowed)
                batch_single = calls["single"] - before - 1      # less the MAX_TERMS query's
                for q, (a, s) in zip(queries, batch):
                    b, t = idx.topk(q, k, allowed)
                    assert a.tolist() == b.tolist() and s.tolist() == t.tolist()
                assert batch_single > 5 if not max_docs else batch_single == 0
        assert (calls["dense rows"] > 20) == bool(max_docs)


def test_batch_sum_falls_back_to_a_stable_argsort_when_keys_are_too_wide():
    # query * N + passage keys with positions packed below them must fit 62 bits; wider keys take an argsort.
    # Either way each key's values are added in input order (hand-checked sums).
    val = np.array([0.1, 1e16, 0.2, -1e16, 0.3, 5.0])
    docs = np.array([3, 7, 3, 7, 3, 1], np.int32)
    for first in (0, 2 ** 40):
        slot = np.array([0, 0, 0, 0, 0, 1], np.int64) + first
        q, d, sums = bm25_batch._sum_sorted(slot, docs, val, 10 ** 6)
        assert (q - first).tolist() == [0, 0, 1] and d.tolist() == [3, 7, 1]
        assert sums.tolist() == [(0.1 + 0.2) + 0.3, 1e16 + -1e16, 5.0]


def test_maxscore_bounds_allow_for_rounding(bm25_path):
    # The bound of the non-essential terms is summed from the last term back, a passage's score from the first:
    # passage X = [b c d] can score an ulp above the bound, and ties passage Y = [a c d] (a and b have equal
    # df, every passage has 3 tokens). The mask leaves Y as a's only passage, so a is the lone essential term;
    # a bound without slack "proves" Y is the top-1 and misses X, which the tie rule puts first.
    def corpus(n, df_ab, df_c, df_d):
        docs = [[1, 2, 3], [0, 2, 3]] + [[0]] * (df_ab - 1) + [[1]] * (df_ab - 1)
        docs = [list(d) for d in docs] + [[] for _ in range(n - len(docs))]
        extra_c, extra_d = df_c - 2, df_d - 2
        for d in docs[2:]:
            if extra_c and len(d) < 3:
                d.append(2)
                extra_c -= 1
            if extra_d and len(d) < 3:
                d.append(3)
                extra_d -= 1
        fill = 4
        for d in docs:
            while len(d) < 3:
                d.append(fill)
                fill += 1
        return docs

    found = 0
    for df_c in range(30, 90, 7):
        for df_d in range(60, 160, 11):
            docs = corpus(200, 20, df_c, df_d)
            idx = BM25Index("lucene", k1=1.2, dtype="float64").add(np.concatenate(docs), [3] * 200)
            ta, tb, tc, td = (float(idx.term_max[t]) for t in range(4))
            if (ta + tc) + td <= ((0.0 + td) + tc) + tb:
                continue                       # no rounding gap with these frequencies
            found += 1
            allowed = np.ones(200, bool)
            allowed[[i for i, d in enumerate(docs) if 0 in d and i != 1]] = False
            assert idx.topk([0, 1, 2, 3], 1, allowed)[0].tolist() == [0]
            assert idx.topk_batch([[0, 1, 2, 3]], 1, allowed)[0][0].tolist() == [0]
    assert found


def test_baseline_variants_rank_by_the_scores_they_return(bm25_path):
    # BM25+ adds a per-query baseline to the sums it ranks; two different sums can round to one returned score,
    # and then the lower passage must come first (a corpus found by search where ranking the sums did not)
    rng = np.random.default_rng(426)
    n_docs, vocab = int(rng.integers(20, 300)), int(rng.integers(5, 40))
    lengths = rng.integers(1, 12, n_docs)
    flat = rng.zipf(1.3, lengths.sum()) % vocab
    idx = BM25Index("bm25+", k1=1.2, b=0.75, dtype="float64").add(flat, lengths, vocab)
    q = [4, 13, 1, 17, 17]
    for ids, s in (idx.topk(q, 37), idx.topk_batch([q], 37)[0]):
        assert len(ids) == 37 and (np.diff(s) <= 0).all()
        ties = s[1:] == s[:-1]
        assert ties.any() and (ids[1:][ties] > ids[:-1][ties]).all()


def test_batch_takes_any_sequence_of_queries_and_rejects_bad_ids(bm25_path):
    docs, rng = zipf_corpus(9, 200, vocab=50)
    idx, vocab = build(docs)
    queries = [[1, 2, 3], [4], [0, 0, 7]]
    want = [idx.topk(q, 5) for q in queries]
    for given in (iter(queries), tuple(queries), np.array(queries[:1]), (np.array(q) for q in queries)):
        got = idx.topk_batch(given, 5)
        for (a, s), (b, t) in zip(got, want):
            assert a.tolist() == b.tolist() and s.tolist() == t.tolist()
    assert idx.topk_batch([], 5) == [] and idx.topk_batch(np.zeros((0, 3), int), 5) == []
    with pytest.raises(TypeError, match="integers"):
        idx.topk_batch([[1.5, 2]], 5)
    # terms that exist in the vocabulary but in no passage: nothing matches, on both paths
    empty = BM25Index().add(np.array([0, 1, 0]), [2, 1], n_terms=5)
    assert len(empty.topk([2, 3], 3)[0]) == 0 and len(empty.topk_batch([[2, 3], [4]], 3)[0][0]) == 0


def test_ties_go_to_the_lower_passage_index_on_every_path(bm25_path):
    # each passage has a twin written in a renamed vocabulary (w17 -> v17), and both appear 4 times at shuffled
    # places; a query holding w17 and v17 scores a passage and its twin exactly alike, though they reach the
    # candidates through different terms (so out of passage order on the long-list path). The k-th place falls
    # inside such ties. Oracle: a brute-force score of every passage, ranked by (score desc, index asc).
    distinct, rng = zipf_corpus(11, 100)
    twins = [[f"v{w[1:]}" for w in d] for d in distinct]
    pool = distinct + twins
    docs = [pool[i] for i in rng.permutation(np.repeat(np.arange(len(pool)), 4))]
    idx, vocab = build(docs)
    queries = []
    for _ in range(80):
        words = [f"w{w}" for w in rng.zipf(1.3, rng.integers(1, 4)) % 3000]
        queries.append(ids_of(vocab, words + [f"v{w[1:]}" for w in words]))
    queries = [q for q in queries if q]
    for k in (3, 10, 13):
        batch = idx.topk_batch(queries, k)
        for q, (a, _) in zip(queries, batch):
            ref = np.zeros(len(docs))
            # the order every path adds terms in: dense-row terms last, then by bound
            for t in sorted(q, key=lambda t: (idx.dense_row_of[t] >= 0, -idx.term_max[t], t)):
                ref += idx.score_all([t])
            n = int((ref > 0).sum())
            want = np.lexsort((np.arange(len(docs)), -ref))[:min(k, n)]
            assert idx.topk(q, k)[0].tolist() == want.tolist()
            assert a.tolist() == want.tolist()


def test_batched_scores_are_summed_in_the_single_query_order(bm25_path):
    # passages 2000 and 2001 hold terms B and C (equal df) with swapped counts: their scores are the same three
    # numbers added in different orders, which in float64 can differ in the last bit. Whatever the rounding,
    # the batch must add in topk's order and so return exactly what topk returns.
    docs = [[f"x{i % 97}", f"y{i % 89}"] for i in range(6400)]
    docs[0] = ["B", "C", "A0"]
    for i in range(100, 400):
        docs[i] = docs[i] + ["B"]
    for i in range(400, 700):
        docs[i] = docs[i] + ["C"]
    for i in range(1000, 1050):
        docs[i] = ["A"] + ["z"] * 30
    docs[2000] = ["A", "B", "C", "C", "p", "p", "p"]
    docs[2001] = ["A", "B", "B", "C", "p", "p", "p"]
    idx, vocab = build(docs, variant="lucene", dtype="float64")
    q = [vocab["A"], vocab["B"], vocab["C"]]
    for k in (1, 2, 5):
        (a, s), (b, t) = idx.topk_batch([q], k)[0], idx.topk(q, k)
        assert a.tolist() == b.tolist() and s.tolist() == t.tolist()


def test_an_error_inside_a_query_leaves_the_scratch_arrays_clean(maxscore_only):
    docs, rng = zipf_corpus(5, 3000, vocab=300)
    idx, vocab = build(docs)
    queries = [[int(x) for x in rng.zipf(1.2, rng.integers(1, 7)) % len(vocab)] for _ in range(100)]
    want = [idx.topk(q, 10)[0].tolist() for q in queries]
    plan = next(p for p in (idx._plan(q, 10) for q in queries)
                if p and len(p[0]) >= 3 and (p[3][2] + p[3][1] + p[3][0] - sum(p[2][:3])) * 32 > idx.n_docs)
    terms, weights, starts, ends, rest_ub, base, m = plan

    class Boom(float):                                   # a weight that fails when the third list is added
        def __mul__(self, other):
            raise RuntimeError("boom")
        __rmul__ = __mul__

    with pytest.raises(RuntimeError, match="boom"):
        idx._run_plan((terms, weights[:2] + [Boom(weights[2])] + weights[3:], starts, ends, rest_ub, base,
                       max(m, 3)), 10, None)
    acc, seen = idx._scratch()
    assert not acc.any() and not seen.any()
    assert [idx.topk(q, 10)[0].tolist() for q in queries] == want


def test_batched_queries_equal_single_queries_and_bad_input(bm25_path):
    docs, rng = zipf_corpus(3, 300)
    idx, vocab = build(docs)
    queries = [ids_of(vocab, [f"w{w}" for w in rng.zipf(1.2, rng.integers(1, 8)) % 3000]) for _ in range(60)]
    queries.append([])                                   # an empty query inside a batch
    for allowed in (None, rng.random(len(docs)) < 0.5):
        for k in (1, 7, 60):
            for q, (a, s) in zip(queries, idx.topk_batch(queries, k, allowed)):
                b, t = idx.topk(q, k, allowed)
                assert a.tolist() == b.tolist()
                assert s.tolist() == t.tolist()
    assert len(idx.topk([], 5)[0]) == 0
    with pytest.raises(ValueError, match="out of range"):
        idx.topk([len(vocab) + 5], 5)
    with pytest.raises(ValueError, match="k must be"):
        idx.topk(queries[0], 0)
    with pytest.raises(ValueError, match="unknown BM25 variant"):
        BM25Index("okapi2")
    with pytest.raises(ValueError, match="out of range"):
        BM25Index(b=1.5)
    with pytest.raises(ValueError, match="needs k1 > 0"):
        BM25Index("bm25+", k1=0)
    # passages with no terms at all, then real ones: indexed, and only the real one matches
    blank = BM25Index().add(np.zeros(0, np.int64), [0, 0])
    assert blank.n_docs == 2 and blank.topk_batch([[]], 3)[0][0].tolist() == []
    for query in (lambda q: blank.topk(q, 3), lambda q: blank.topk_batch([q], 3)):   # (not "0..-1")
        with pytest.raises(ValueError, match="the index has no terms"):
            query([0])
    assert blank.add(np.array([0, 1]), [2]).topk([0], 3)[0].tolist() == [2]


# -- the real manual ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def git_doc_tokens():
    require_git_doc()
    passages, _ = chunk_corpus(GIT_DOC, progress=False)
    an = Analyzer()
    texts = [p.index_text() for p in passages]
    ti = TermIds(an)
    for t in texts:
        ti.add_text(t)
    flat, lengths = ti.arrays()
    tokens = [an.tokenize(t) for t in texts]           # the same tokens go to the oracles
    with open(QUESTIONS, encoding="utf-8") as f:
        queries = [json.loads(line)["question"] for line in f if line.strip()]
    queries += ["KAVS1234-E max_connections", "core.autocrlf", "branch branch merge", "--force-with-lease",
                "git-rebase --onto", "rerere.enabled", "GIT_DIR", "sha-256 object format"]
    return {"flat": flat, "lengths": lengths, "vocab": ti.vocab, "tokens": tokens,
            "queries": [an.tokenize(q) for q in queries]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_with_bm25s_on_git_doc(git_doc_tokens, variant):
    bm25s = pytest.importorskip("bm25s")
    g = git_doc_tokens
    ref = bm25s.BM25(method=variant, k1=1.5, b=0.75, delta=0.5)
    ref.index(g["tokens"], show_progress=False)
    ours = BM25Index(variant, k1=1.5, b=0.75, delta=0.5).add(g["flat"], g["lengths"], len(g["vocab"]))
    queries = [q for q in g["queries"] if ids_of(g["vocab"], q)]
    batch = ours.topk_batch([ids_of(g["vocab"], q) for q in queries], 10)
    for q, (batch_top, batch_scores) in zip(queries, batch):
        q_ids = ids_of(g["vocab"], q)
        ref_scores = ref.get_scores([t for t in q if t in g["vocab"]]).astype(np.float64)
        np.testing.assert_allclose(ours.score_all(q_ids), ref_scores, rtol=1e-6, atol=1e-6)
        top, scores = ours.topk(q_ids, 10)
        assert_same_ranking(top, ref_scores, 10, f"{variant} {q}")
        np.testing.assert_allclose(scores, ref_scores[top], rtol=1e-6, atol=1e-6)
        assert_same_ranking(batch_top, ref_scores, 10, f"{variant} batched {q}")
        np.testing.assert_allclose(batch_scores, ref_scores[batch_top], rtol=1e-6, atol=1e-6)


def test_parity_with_rank_bm25_on_git_doc(git_doc_tokens):
    rank_bm25 = pytest.importorskip("rank_bm25")
    g = git_doc_tokens
    pairs = [(rank_bm25.BM25Okapi(g["tokens"], k1=1.5, b=0.75, epsilon=0.0),
              dict(variant="atire", idf="robertson", k1=1.5, b=0.75)),
             (rank_bm25.BM25Plus(g["tokens"], k1=1.2, b=0.75, delta=1.0),
              dict(variant="bm25+", k1=1.2, b=0.75, delta=1.0))]
    # (rank_bm25's BM25L multiplies by tf once more than the published formula, so it is no oracle)
    queries = g["queries"][::3]
    for ref, params in pairs:
        ref_all = [np.asarray(ref.get_scores(q)) for q in queries]
        for dtype in ("float64", "float32"):
            ours = BM25Index(**params, dtype=dtype).add(g["flat"], g["lengths"], len(g["vocab"]))
            for q, ref_scores in zip(queries, ref_all):
                q_ids = ids_of(g["vocab"], q)
                np.testing.assert_allclose(ours.score_all(q_ids), ref_scores, rtol=1e-6, atol=1e-6)
                top, _ = ours.topk(q_ids, 10)
                assert_same_ranking(top, ref_scores, 10, f"{params['variant']} {q}")
