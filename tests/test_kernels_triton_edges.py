"""Edges of the Triton kernel paths (kernels/), against float64 and a bounds checker on the interpreter's memory
accesses: strided weights, padded query rows of a masked block, zero keys or heads, fp64 under a forced backend.

Run alone:  TRITON_INTERPRET=1 python -m pytest -q tests/test_kernels_triton_edges.py
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from triton_check import triton_problem  # noqa: E402

_PROBLEM = triton_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))


@pytest.fixture(autouse=True)
def triton_backend():
    torch.set_num_threads(1)
    with kernels.use_backend("triton"):
        yield


# ---------------------------------------------------------------------------------------------------------
# A bounds checker for Triton's CPU interpreter: every load/store whose mask is on must fall inside the storage
# of one of the kernel's tensor arguments (what compute-sanitizer would flag on a GPU).
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def out_of_bounds(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the bounds checker patches Triton's CPU interpreter")
    import numpy as np
    import triton.runtime.interpreter as interp

    ranges, violations = [], []
    orig_init = interp.GridExecutor._init_args_hst

    def init(self, args_dev, kwargs):
        a, k = orig_init(self, args_dev, kwargs)
        ranges.clear()
        for x in list(a) + list(k.values()):
            if hasattr(x, "untyped_storage"):
                s = x.untyped_storage()
                ranges.append((s.data_ptr(), s.data_ptr() + s.nbytes()))
        return a, k

    class Checked:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def _check(self, kind, ptrs, mask, size):
            p = ptrs[mask.astype(bool)]
            ok = np.zeros(p.shape, bool)
            for lo, hi in ranges:
                ok |= (p >= lo) & (p + size <= hi)
            if not ok.all():
                violations.append((kind, int((~ok).sum())))

        def load(self, ptrs, mask, other, dtype):
            self._check("load", ptrs, mask, np.dtype(dtype).itemsize)
            return self.inner.load(ptrs, mask, other, dtype)

        def store(self, ptrs, value, mask):
            self._check("store", ptrs, mask, value.dtype.itemsize)
            return self.inner.store(ptrs, value, mask)

    monkeypatch.setattr(interp.GridExecutor, "_init_args_hst", init)
    monkeypatch.setattr(interp, "_interpreter", Checked(interp._interpreter))
    return violations


def _qkv(B, HQ, HK, TQ, TK, D, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).requires_grad_(requires_grad)
            for s in ((B, HQ, TQ, D), (B, HK, TK, D), (B, HK, TK, D))]


# 1. rms_norm: the kernels read the weight as if contiguous --------------------------------------------------

def test_rms_norm_with_a_strided_weight_matches_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 24, generator=g, requires_grad=True)
    w_big = torch.randn(48, generator=g, requires_grad=True)
    w = w_big[::2]  # a view with stride 2: shape (24,) as required
    y = kernels.rms_norm(x, w, 1e-6)
    x64, w64 = x.detach().double().requires_grad_(), w_big.detach().double().requires_grad_()
    ref = w64[::2] * (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6))
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)  # actual: max error ~4.4
    gy = torch.randn(y.shape, generator=g)
    y.backward(gy)
    ref.backward(gy.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w_big.grad.double(), w64.grad, atol=1e-5, rtol=1e-5)


# 2. attention with attn_mask: padded query rows of the last block read past the end of the mask ------------

@pytest.mark.parametrize("grad", [True, False])
def test_attention_mask_reads_stay_inside_the_mask(out_of_bounds, grad):
    """The model's padded-batch mask is bool [B, 1, T, S]; T = 17 leaves a ragged query block (and on a GPU
    BLOCK_M = 128 rows read up to 127 * S bytes past the end of the mask)."""
    mask = torch.rand(2, 1, 17, 17, generator=torch.Generator().manual_seed(1)) < 0.8
    mask[..., 0] = True
    q, k, v = _qkv(2, 4, 2, 17, 17, 16, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out = kernels.attention(q, k, v, attn_mask=mask)
        if grad:
            out.sum().backward()
    assert out_of_bounds == [], f"out-of-bounds accesses (kind, lanes): {out_of_bounds}"


def test_decode_with_a_per_head_mask_reads_stay_inside_the_mask(out_of_bounds):
    mask = torch.rand(2, 4, 3, 17, generator=torch.Generator().manual_seed(1)) < 0.8
    mask[..., 0] = True
    q, k, v = _qkv(2, 4, 1, 3, 17, 16)
    with torch.no_grad():
        kernels.attention(q, k, v, attn_mask=mask)
    assert out_of_bounds == [], f"out-of-bounds accesses (kind, lanes): {out_of_bounds}"


# 3. decode path with an empty key cache ---------------------------------------------------------------------

def test_decode_against_zero_keys_does_not_divide_by_zero():
    """Non-causal, no grad, Tq <= 16, Tk = 0: the grad path returns zeros, the decode path raises
    ZeroDivisionError (keys_per_split == 0 in _decode)."""
    q, k, v = _qkv(1, 2, 1, 3, 0, 16)
    with torch.no_grad():
        out = kernels.attention(q, k, v, causal=False)
    assert out.shape == (1, 2, 3, 16)


# 4. rope: with no query heads the key output is never written ----------------------------------------------

def test_rope_with_no_query_heads_still_rotates_k():
    from kernels.rope import rotate_reference

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 0, 5, 8, generator=g), torch.randn(1, 2, 5, 8, generator=g)
    cos, sin = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    _, k_out = kernels.apply_rope(q, k, cos, sin)
    torch.testing.assert_close(k_out, rotate_reference(k, cos, sin))  # actual: uninitialised memory


# 5. doc_ids with more queries than keys (non-causal): read before the document table instead of refusing ----

def test_doc_ids_with_more_queries_than_keys_is_refused(out_of_bounds):
    q, k, v = _qkv(1, 2, 1, 20, 17, 16)
    docs = torch.tensor([[0] * 5 + [1] * 12])
    with pytest.raises(ValueError):
        kernels.attention(q, k, v, causal=False, doc_ids=docs)


# 6. fused CE on fp64 inputs (forced Triton): the per-row CE runs in fp32 -------------------------------------

def test_fused_cross_entropy_keeps_fp64_precision_for_fp64_inputs():
    """cross_entropy.fused_linear_cross_entropy promises 'fp32 (fp64 for fp64 inputs)'; with use_triton the
    row losses and logit gradients come out of an fp32 kernel (error ~1e-6 instead of ~1e-15)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 13, generator=g, dtype=torch.float64)
    w = torch.randn(1100, 13, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1100, (7,), generator=g)
    loss = kernels.fused_linear_cross_entropy(h, w, t)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, F.cross_entropy(h @ w.T, t), atol=1e-12, rtol=1e-12)


def test_doc_ids_with_more_queries_than_keys_is_refused_on_the_torch_path_too():
    q, k, v = _qkv(1, 2, 1, 20, 17, 16)
    docs = torch.tensor([[0] * 5 + [1] * 12])
    with kernels.use_backend("torch"), pytest.raises(ValueError, match=r"doc_ids with more queries \(20\)"):
        kernels.attention(q, k, v, causal=False, doc_ids=docs)


def test_fp64_takes_the_torch_path_even_when_triton_is_forced():
    """(The torch RMSNorm itself normalises in fp32, as transformers does: the same numbers either way.)"""
    from kernels.rmsnorm import rms_norm_reference
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 24, generator=g, dtype=torch.float64), torch.randn(24, generator=g, dtype=torch.float64)
    assert torch.equal(kernels.rms_norm(x, w, 1e-6), rms_norm_reference(x, w, 1e-6))


def test_rope_with_sin_strided_unlike_cos_matches_the_torch_path():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 5, 8, generator=g), torch.randn(1, 1, 5, 8, generator=g)
    cos = torch.randn(5, 8, generator=g)
    sin = torch.randn(5, 16, generator=g)[:, :8]  # last dim contiguous, row stride 16 (cos: 8)
    with kernels.use_backend("torch"):
        want_q, want_k = kernels.apply_rope(q, k, cos, sin)
    got_q, got_k = kernels.apply_rope(q, k, cos, sin)  # (the fixture forces Triton; sin was read with cos's strides)
    torch.testing.assert_close(got_q, want_q)
    torch.testing.assert_close(got_k, want_k)
