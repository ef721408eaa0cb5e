"""BM25 on awkward corpora, every variant and non-default k1/b/delta, against a float64 reference written here from
the published formulas (Kamphuis et al. 2020), bm25s and rank_bm25: empty, duplicate, one-term and very long
passages, a term in every passage (Robertson's clamped idf, ATIRE's idf 0), repeated and unknown query terms,
filters, building in two parts."""

import math

import numpy as np
import pytest

from minagent.retrieval.bm25 import VARIANTS, BM25Index


def reference_idf(variant, df, n):
    return {"lucene": lambda: math.log(1 + (n - df + 0.5) / (df + 0.5)),
            "robertson": lambda: math.log(max(1.0, (n - df + 0.5) / (df + 0.5))),
            "atire": lambda: math.log(n / df),
            "bm25l": lambda: math.log((n + 1) / (df + 0.5)),
            "bm25+": lambda: math.log((n + 1) / df)}[variant]()


def reference_tfc(variant, tf, dl, avg, k1, b, delta):
    norm = 1 - b + b * dl / avg
    if variant == "bm25l":
        c = tf / norm if tf else 0.0
        return (k1 + 1) * (c + delta) / (k1 + c + delta)
    if variant == "bm25+":
        return delta + (tf * (k1 + 1) / (k1 * norm + tf) if tf else 0.0)
    if tf == 0:
        return 0.0
    return tf / (tf + k1 * norm) * (k1 + 1 if variant == "atire" else 1)


def reference_scores(docs, query, variant, k1, b, delta):
    """Score of every passage, term by term in float64 (query terms no passage holds add nothing)."""
    n = len(docs)
    avg = sum(map(len, docs)) / n or 1.0
    df = {}
    for d in docs:
        for t in set(d):
            df[t] = df.get(t, 0) + 1
    return np.array([sum(reference_idf(variant, df[t], n) * reference_tfc(variant, d.count(t), len(d), avg, k1, b,
                                                                        delta)
                         for t in query if t in df) for d in docs])


def awkward_corpus(rng, n, vocab):
    """Zipfian passages with empty, duplicate, one-term and very long ones, and a word in every passage."""
    docs = []
    for _ in range(n):
        r = rng.random()
        if r < 0.1:
            docs.append([])
        elif r < 0.2 and docs:
            docs.append(list(docs[int(rng.integers(len(docs)))]))
        elif r < 0.3:
            docs.append([f"w{int(rng.integers(vocab))}"])
        elif r < 0.32:
            docs.append([f"w{int(w)}" for w in rng.zipf(1.3, 400) % vocab])
        else:
            docs.append([f"w{int(w)}" for w in rng.zipf(1.3, int(rng.integers(1, 20))) % vocab])
    for d in docs:
        d.append("every")
    return docs


def build(docs, **params):
    vocab = {}
    flat = [vocab.setdefault(t, len(vocab)) for d in docs for t in d]
    return BM25Index(**params).add(np.array(flat, np.int64), [len(d) for d in docs], len(vocab)), vocab


def queries_for(rng, vocab_size, count):
    out = []
    for _ in range(count):
        q = [f"w{int(w)}" for w in rng.zipf(1.2, int(rng.integers(1, 6))) % (vocab_size + 5)]   # some unknown
        if rng.random() < 0.3:
            q.append("every")
        out.append(q + q if rng.random() < 0.2 else q)                                          # repeats
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("k1,b,delta", [(1.2, 0.75, 1.0), (0.0, 0.0, 0.5), (2.0, 1.0, 0.25), (0.5, 0.3, 0.0)])
def test_awkward_corpora_match_the_formulas_and_exact_topk(variant, k1, b, delta, bm25_path):
    if k1 == 0 and variant in ("bm25+", "bm25l"):
        k1 = 0.7                             # (their tf=0 baseline is 0/0 at k1=0: refused, tested elsewhere)
    rng = np.random.default_rng([VARIANTS.index(variant), int(k1 * 10), int(b * 10)])
    docs = awkward_corpus(rng, 150, 40)
    idx, vocab = build(docs, variant=variant, k1=k1, b=b, delta=delta, dtype="float64")
    queries = queries_for(rng, 40, 25)
    ids = [[vocab[t] for t in q if t in vocab] for q in queries]
    for allowed in (None, rng.random(len(docs)) < 0.3, np.zeros(len(docs), bool)):
        for k in (1, 4, 500):                                     # 500: more than any allowed set
            batch = idx.topk_batch(ids, k, allowed)
            for q, q_ids, (b_ids, b_scores) in zip(queries, ids, batch):
                ref = reference_scores(docs, [t for t in q if t in vocab], variant, k1, b, delta)
                np.testing.assert_allclose(idx.score_all(q_ids), ref, rtol=1e-9, atol=1e-12)
                top, scores = idx.topk(q_ids, k, allowed)
                # passages holding a query term, not masked out, by (score desc, passage asc)
                held = np.array([any(vocab[t] in q_ids for t in set(d)) for d in docs], bool)
                ok = np.flatnonzero(held if allowed is None else held & allowed)
                want = ok[np.lexsort((ok, -ref[ok]))][:k]
                assert len(top) == len(want)
                np.testing.assert_allclose(ref[top], ref[want], rtol=1e-12, atol=1e-12)   # ties may swap
                np.testing.assert_allclose(scores, ref[top], rtol=1e-9, atol=1e-12)
                assert allowed is None or allowed[top].all()
                assert b_ids.tolist() == top.tolist() and b_scores.tolist() == scores.tolist()


@pytest.mark.parametrize("variant", VARIANTS)
def test_awkward_corpora_match_bm25s(variant):
    bm25s = pytest.importorskip("bm25s")
    rng = np.random.default_rng(VARIANTS.index(variant) + 50)
    docs = awkward_corpus(rng, 300, 60)
    ref = bm25s.BM25(method=variant, k1=1.7, b=0.6, delta=0.8, backend="numpy")
    ref.index(docs, show_progress=False)
    for dtype in ("float32", "float64"):
        idx, vocab = build(docs, variant=variant, k1=1.7, b=0.6, delta=0.8, dtype=dtype)
        for q in queries_for(rng, 60, 20):
            known = [t for t in q if t in vocab]
            if known:
                np.testing.assert_allclose(idx.score_all([vocab[t] for t in known]), ref.get_scores(known),
                                           rtol=1e-5, atol=1e-5)


def test_rank_bm25_bm25l_differs_only_where_its_formula_does():
    # rank_bm25's BM25L multiplies the published term score by tf once more, so a passage without the term gets
    # 0 instead of BM25L's idf * (k1 + 1) delta / (k1 + delta). Where every tf is 0 or 1 the two agree after
    # taking that baseline off ours: the only difference, documented here.
    rank_bm25 = pytest.importorskip("rank_bm25")
    rng = np.random.default_rng(7)
    docs = [sorted({f"w{int(w)}" for w in rng.zipf(1.3, int(rng.integers(1, 15))) % 50}) for _ in range(200)]
    ref = rank_bm25.BM25L(docs, k1=1.3, b=0.7, delta=0.6)
    idx, vocab = build(docs, variant="bm25l", k1=1.3, b=0.7, delta=0.6, dtype="float64")
    for q in queries_for(rng, 50, 20):
        known = [t for t in q if t in vocab]
        ours = idx.score_all([vocab[t] for t in known])
        absent = np.array([sum(idx.baseline[vocab[t]] for t in known if t not in d) for d in docs])
        np.testing.assert_allclose(ours - absent, ref.get_scores(q), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_part_build_equals_one_part_bit_for_bit(variant):
    # adding passages changes N, every df and the average length: every stored number must come out as a
    # one-part build's (idf changes included: "every" goes from 0 to the clamp in robertson/atire)
    rng = np.random.default_rng(VARIANTS.index(variant) + 90)
    docs = awkward_corpus(rng, 400, 80)
    docs[:100] = [d[:-1] for d in docs[:100]]            # "every" only in the second part at first
    params = dict(variant=variant, k1=1.1, b=0.6, delta=0.7)
    whole, vocab = build(docs, **params)
    part, part_vocab = build(docs[:100], **params)
    flat = [part_vocab.setdefault(t, len(part_vocab)) for d in docs[100:] for t in d]
    part.add(np.array(flat, np.int64), [len(d) for d in docs[100:]], len(part_vocab))
    to_whole = np.array([vocab[t] for t in sorted(part_vocab, key=part_vocab.get)])
    assert sorted(to_whole.tolist()) == list(range(len(vocab)))
    queries = [[part_vocab[t] for t in q if t in part_vocab] for q in queries_for(rng, 80, 30)]
    for k in (1, 10):
        for q, (a, s) in zip(queries, part.topk_batch(queries, k)):
            b_ids, b_scores = whole.topk(to_whole[q].tolist(), k)
            assert a.tolist() == b_ids.tolist() and s.tolist() == b_scores.tolist()


def test_add_refuses_non_integer_ids_and_bad_lengths():
    # a term id of 1.7 is no term: it used to be truncated to term 1 and indexed without a word
    with pytest.raises(TypeError, match="flat_ids: term ids must be integers, got float64"):
        BM25Index().add(np.array([0.5, 1.7]), [2])
    with pytest.raises(TypeError, match="lengths: passage lengths must be integers"):
        BM25Index().add(np.array([0, 1]), [1.5, 0.5])
    with pytest.raises(ValueError, match="lengths: passage lengths must be >= 0, got -1"):
        BM25Index().add(np.array([0, 1, 2]), [4, -1])
    with pytest.raises(ValueError, match=r"flat_ids: expected a 1-D array of term ids, got shape \(1, 2\)"):
        BM25Index().add(np.array([[0, 1]]), [2])
    # empty passages may come as plain empty lists
    assert BM25Index().add([], [0, 0]).n_docs == 2


@pytest.mark.parametrize("bad, name", [(1.0, "float"), (1.5, "float"), ("a", "str"), (True, "bool"),
                                       (np.float32(1), "float32"), (np.bool_(True), "bool")])
def test_query_refuses_non_integer_term_ids_the_same_way_single_and_batched(bad, name, bm25_path):
    """A float, string or bool is no term id (1.0 would otherwise find term 1); one query alone and the same
    query in a batch say so in the same words. Integer ids of any numpy width are fine."""
    index = BM25Index().add(np.array([0, 1, 2, 1]), np.array([2, 2]), 3)
    for search in (lambda q: index.topk(q, 2), lambda q: index.topk_batch([q], 2)[0]):
        with pytest.raises(TypeError, match="query term ids must be integers, got "):
            search([2, bad])
    ids, _ = index.topk([np.int32(1), np.uint8(2)], 2)
    assert sorted(ids.tolist()) == [0, 1]
