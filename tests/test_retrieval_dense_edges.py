"""DenseIndex edge cases against a float64 numpy brute force: exact ties on every path, k > N, filters, and bad
input (non-finite queries, fp16 overflow, k that is not a positive integer)."""

import numpy as np
import pytest

from minagent.retrieval.dense import DenseIndex


def brute_force(queries, base, k, allowed=None):
    """Oracle: float64 scores, descending, ties by ascending passage index; masked-out passages never."""
    s = queries.astype(np.float64) @ base.astype(np.float64).T
    keep = np.arange(len(base)) if allowed is None else np.flatnonzero(allowed)
    order = keep[np.argsort(-s[:, keep], axis=1, kind="stable")[:, :k]]
    return order, np.take_along_axis(s, order, 1)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batch", [1, 4])
def test_exact_ties_k_beyond_n_and_filters(dtype, batch, monkeypatch):
    """Entries in {-1/4, 0, 1/4}: every score is exact in fp32 and fp16, so equal scores are truly equal and
    must come back in passage order, on the single-query and batched paths, across small scoring blocks."""
    monkeypatch.setattr("minagent.retrieval.dense._BLOCK_BYTES", 8 << 10)
    monkeypatch.setattr("minagent.retrieval.dense._GROUP", 4)
    rng = np.random.default_rng(batch)
    base = (rng.integers(-1, 2, size=(300, 8)) / 4).astype(np.float32)[rng.integers(0, 40, 900)]
    q = (rng.integers(-1, 2, size=(batch, 8)) / 4).astype(np.float32)
    idx = DenseIndex(8, dtype).add(base)
    allowed = rng.random(900) < 0.3
    for k in (1, 7, 64, 5000):
        for mask in (None, allowed):
            got_i, got_s = idx.search(q, k, allowed=mask)
            ref_i, ref_s = brute_force(q, base, k, mask)
            np.testing.assert_array_equal(got_i, ref_i)
            np.testing.assert_allclose(got_s, ref_s, atol=1e-6)
            if mask is not None:
                assert mask[got_i].all()
            if batch == 1:                                   # a 1-D query takes the single-query paths
                one_i, one_s = idx.search(q[0], k, allowed=mask)
                np.testing.assert_array_equal(one_i, ref_i[0])
                np.testing.assert_allclose(one_s, ref_s[0], atol=1e-6)


def test_non_finite_queries_are_refused():
    idx = DenseIndex(4).add(np.eye(4, dtype=np.float32))
    for bad in (np.array([np.nan, 0, 0, 0]), np.array([[1, 0, 0, 0], [np.inf, 0, 0, 0]])):
        with pytest.raises(ValueError, match="queries contain NaN or inf"):
            idx.search(bad, 2)


def test_float16_overflow_is_refused_not_stored_as_inf():
    idx = DenseIndex(4, "float16")
    with pytest.raises(ValueError, match="beyond float16"):
        idx.add(np.full((1, 4), 1e6, np.float32))
    assert len(idx) == 0
    idx.add(np.full((1, 4), 60000.0, np.float32))         # within range: kept
    assert np.isfinite(idx.vectors).all()


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_k_must_be_a_positive_integer(k):
    idx = DenseIndex(4).add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        idx.search(np.ones(4, np.float32), k)
    assert idx.search(np.ones(4, np.float32), np.int64(2))[0].tolist() == [0, 1]   # numpy ints are fine
