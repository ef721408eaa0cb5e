"""Flat inner-product index against a float64 numpy brute force (and faiss IndexFlatIP when installed)."""

import numpy as np
import pytest

from minagent.retrieval.dense import DenseIndex


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries, base, k, allowed=None):
    s = queries.astype(np.float64) @ base.astype(np.float64).T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


@pytest.mark.parametrize("n,batch,k", [(1000, 1, 10), (7000, 5, 7), (3000, 300, 50), (5, 2, 10)])
def test_flat_search_matches_brute_force(n, batch, k, monkeypatch):
    # small scoring blocks so every case spans many blocks and the running top-k merge is exercised
    monkeypatch.setattr("minagent.retrieval.dense._BLOCK_BYTES", 64 << 10)
    rng = np.random.default_rng(n)
    base, q = unit_rows(rng, n, 64), unit_rows(rng, batch, 64)
    idx = DenseIndex(64).add(base)
    got_i, got_s = idx.search(q, k)
    ref_i, ref_s = brute_force(q, base, k)
    assert got_i.shape == (batch, min(k, n))
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-5)
    one_i, one_s = idx.search(q[0], k)              # a 1-D query gives 1-D results
    np.testing.assert_array_equal(one_i, ref_i[0])


@pytest.mark.parametrize("group", [4, 8, 64])
def test_grouped_block_selection_is_exact_with_ties(group, monkeypatch):
    # a block's top-k is taken from its k groups with the highest maxima; with many exact duplicates (same
    # passage indexed twice, the usual way ties arise) the k best scores must still be exactly the brute
    # force's, and each returned index must carry the score returned with it
    monkeypatch.setattr("minagent.retrieval.dense._BLOCK_BYTES", 256 << 10)
    monkeypatch.setattr("minagent.retrieval.dense._GROUP", group)
    rng = np.random.default_rng(group)
    uniq = unit_rows(rng, 700, 32)
    base = np.concatenate([uniq, uniq[::-1], uniq[:333]])          # 1733 passages, every score tied 2-3 times
    q = unit_rows(rng, 9, 32)
    got_i, got_s = DenseIndex(32).add(base).search(q, 12)
    _, ref_s = brute_force(q, base, 12)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(q.astype(np.float64) @ base.T.astype(np.float64), got_i, 1),
                               got_s, atol=1e-5)
    assert all(len(set(row)) == 12 for row in got_i.tolist())


def test_fp16_storage_rescored_exactly():
    rng = np.random.default_rng(7)
    base, q = unit_rows(rng, 20000, 96), unit_rows(rng, 4, 96)
    idx = DenseIndex(96, "float16").add(base)
    assert idx.vectors.dtype == np.float16 and idx.vectors.nbytes == base.nbytes // 2
    stored = idx.vectors.astype(np.float64)
    for batch in (q[:1], q):                        # single-query fp16 path and batched path
        got_i, got_s = idx.search(batch, 10)
        ref_i, ref_s = brute_force(batch, stored, 10)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_allclose(got_s, ref_s, atol=1e-5)


def test_filter_mask_and_bad_input():
    rng = np.random.default_rng(3)
    base, q = unit_rows(rng, 500, 16), unit_rows(rng, 3, 16)
    idx = DenseIndex(16).add(base)
    allowed = rng.random(500) < 0.03
    got_i, got_s = idx.search(q, 40, allowed=allowed)
    assert allowed[got_i].all() and got_i.shape[1] == allowed.sum()   # fewer than k allowed: all of them
    ref_i, _ = brute_force(q, base, int(allowed.sum()), allowed)
    np.testing.assert_array_equal(got_i, ref_i)
    assert idx.search(q, 5, allowed=np.zeros(500, bool))[0].shape == (3, 0)
    with pytest.raises(ValueError, match="shape"):
        idx.search(np.zeros(15, np.float32), 5)
    with pytest.raises(ValueError, match="allowed mask"):
        idx.search(q, 5, allowed=np.ones(10, bool))
    with pytest.raises(ValueError, match="NaN"):
        idx.add(np.full((1, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        DenseIndex(16, "int8")


def test_same_results_as_faiss_flat_ip():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    base, q = unit_rows(rng, 20000, 384), unit_rows(rng, 16, 384)
    ref = faiss.IndexFlatIP(384)
    ref.add(base)
    ref_s, ref_i = ref.search(q, 10)
    got_i, got_s = DenseIndex(384).add(base).search(q, 10)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-5)
