"""Both kernel backends (Triton, interpreted on CPU, and the PyTorch path) against float64 torch oracles: SDPA with a
mask built from positions, F.rms_norm, F.silu, F.cross_entropy and a rotation by angle. Shapes and options the other
kernel tests leave out: GQA ratios 1-8, head dims 16-96, sequences of 1/63/65, queries after a cache (with and
without autograd, i.e. the decode and the cached-prefix paths), packed documents with 1-token documents and queries
shorter than keys, fully masked rows, mask and doc_ids together, eps edges and zero rows, RoPE at left-padded and
restarting positions with scaled frequencies, ignore_index values that are real token ids, a vocabulary that is not a
multiple of the block, rows that are all ignored."""
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
TOL = dict(atol=5e-5, rtol=1e-4)
BACKENDS = ["triton", "torch"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _oracle_mask(TQ, TK, causal, doc_ids=None):
    """bool [B|1, 1, Tq, Tk] built directly from positions (queries are the last Tq keys)."""
    qpos = torch.arange(TK - TQ, TK)
    allowed = torch.ones(TQ, TK, dtype=torch.bool)
    if causal:
        allowed = torch.arange(TK)[None, :] <= qpos[:, None]
    allowed = allowed[None, None]
    if doc_ids is not None:
        same = doc_ids[:, qpos][:, :, None] == doc_ids[:, None, :]
        allowed = allowed & same[:, None]
    return allowed


def _run(backend, q, k, v, g, **kw):
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    with kernels.use_backend(backend):
        out = kernels.attention(*leaves, **kw)
    out.backward(g)
    return out, [x.grad for x in leaves]


def _oracle(q, k, v, g, mask, scale):
    leaves = [x.double().requires_grad_() for x in (q, k, v)]
    G = q.shape[1] // k.shape[1]
    kk, vv = (x.repeat_interleave(G, 1) for x in leaves[1:])
    out = F.scaled_dot_product_attention(leaves[0], kk, vv, attn_mask=mask, scale=scale)
    out.backward(g.double())
    return out, [x.grad for x in leaves]


def _compare(backend, B, HQ, HK, TQ, TK, D, causal=True, doc_ids=None, scale=None, grad=True):
    q, k, v = _randn(B, HQ, TQ, D, seed=1), _randn(B, HK, TK, D, seed=2), _randn(B, HK, TK, D, seed=3)
    g = _randn(B, HQ, TQ, D, seed=4)
    mask = _oracle_mask(TQ, TK, causal, doc_ids)
    want, wgrads = _oracle(q, k, v, g, mask, scale)
    if grad:
        got, grads = _run(backend, q, k, v, g, causal=causal, doc_ids=doc_ids, scale=scale)
        for name, a, b in zip("qkv", grads, wgrads):
            torch.testing.assert_close(a.double(), b, **TOL, msg=f"d{name}")
    else:
        with torch.no_grad(), kernels.use_backend(backend):
            got = kernels.attention(q, k, v, causal=causal, doc_ids=doc_ids, scale=scale)
    torch.testing.assert_close(got.double(), want.detach(), **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("G", [1, 2, 4, 8])
def test_gqa_ratios(backend, G):
    _compare(backend, 1, G * 1, 1, 17, 17, 16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("D", [16, 32, 80, 96])
def test_head_dims(backend, D):
    _compare(backend, 1, 2, 1, 17, 17, D, scale=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [1, 63, 65])
@pytest.mark.parametrize("causal", [True, False])
def test_seq_lengths(backend, T, causal):
    _compare(backend, 1, 2, 1, T, T, 16, causal=causal)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("TQ,TK", [(1, 17), (5, 17), (17, 65), (3, 63)])
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_queries_shorter_than_keys(backend, TQ, TK, grad, causal):
    _compare(backend, 2, 4, 2, TQ, TK, 16, causal=causal, grad=grad)


def _docs(rows, T):
    d = torch.zeros(len(rows), T, dtype=torch.long)
    for b, cuts in enumerate(rows):
        for c in cuts:
            d[b, c:] += 1
    return d


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("TQ", [33, 9])
def test_packed_docs(backend, causal, TQ):
    T = 33
    doc = _docs([[1, 2, 17, 32], []], T)  # 1-token documents at 0, 1, 32; a row with one document
    doc[1] = 7
    _compare(backend, 2, 4, 2, TQ, T, 16, causal=causal, doc_ids=doc)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grad", [True, False])
def test_packed_docs_decode(backend, grad):
    T = 40
    doc = _docs([[3, 4, 39], [20]], T)
    _compare(backend, 2, 4, 1, 2, T, 32, causal=True, doc_ids=doc, grad=grad)


# ---- RMSNorm ----
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-6, 1.0])
def test_rmsnorm_eps_and_zero_rows(backend, eps):
    x = _randn(4, 6, 24, seed=1)
    if eps > 0:
        x[1, 2] = 0.0
        x[3] = 0.0
    w = 1 + 0.3 * _randn(24, seed=2)
    g = _randn(4, 6, 24, seed=3)
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    with kernels.use_backend(backend):
        y = kernels.rms_norm(xl, wl, eps)
    y.backward(g)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    ref = F.rms_norm(x64, (24,), w64, eps)
    ref.backward(g.double())
    torch.testing.assert_close(y.double(), ref.detach(), **TOL)
    torch.testing.assert_close(xl.grad.double(), x64.grad, **TOL)
    torch.testing.assert_close(wl.grad.double(), w64.grad, **TOL)


# ---- RoPE ----
def _tables(pos, D, base=100.0, factor=1.0):
    inv = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)) / factor
    f = pos.double()[..., None] * inv
    emb = torch.cat((f, f), -1)
    return emb.cos(), emb.sin()


def _rope64(x, pos, D, factor):
    """Independent: rotate each (x[i], x[i+D/2]) pair by angle pos * inv_freq[i]."""
    inv = 1.0 / (100.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)) / factor
    ang = pos.double()[:, None, :, None] * inv  # [B, 1, T, D/2]
    a, b = x[..., :D // 2], x[..., D // 2:]
    return torch.cat((a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()), -1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("factor", [1.0, 4.0])
def test_rope_positions_not_arange(backend, factor):
    B, HQ, HK, T, D = 2, 4, 2, 17, 32
    pos = torch.stack([torch.clamp(torch.arange(T) - 5, min=0),  # left padding
                       kernels.document_positions(_docs([[4, 5, 11]], T))[0]])
    cos, sin = (t.float() for t in _tables(pos, D, factor=factor))
    q, k = _randn(B, HQ, T, D, seed=1), _randn(B, HK, T, D, seed=2)
    gq, gk = _randn(B, HQ, T, D, seed=3), _randn(B, HK, T, D, seed=4)
    ql, kl = q.clone().requires_grad_(), k.clone().requires_grad_()
    with kernels.use_backend(backend):
        oq, ok = kernels.apply_rope(ql, kl, cos, sin)
    torch.autograd.backward((oq, ok), (gq, gk))
    q64, k64 = q.double().requires_grad_(), k.double().requires_grad_()
    rq, rk = _rope64(q64, pos, D, factor), _rope64(k64, pos, D, factor)
    torch.autograd.backward((rq, rk), (gq.double(), gk.double()))
    for a, b in ((oq, rq), (ok, rk), (ql.grad, q64.grad), (kl.grad, k64.grad)):
        torch.testing.assert_close(a.double(), b.detach(), **TOL)


def test_document_positions_restart():
    doc = _docs([[1, 2, 6]], 9)
    assert kernels.document_positions(doc).tolist() == [[0, 0, 0, 1, 2, 3, 0, 1, 2]]


# ---- SwiGLU ----
@pytest.mark.parametrize("backend", BACKENDS)
def test_swiglu_extremes(backend):
    gte = _randn(3, 5, 33, seed=1) * 10
    gte[0, 0, :4] = torch.tensor([-100.0, 100.0, 0.0, -30.0])
    up = _randn(3, 5, 33, seed=2)
    g = _randn(3, 5, 33, seed=3)
    a, b = gte.clone().requires_grad_(), up.clone().requires_grad_()
    with kernels.use_backend(backend):
        y = kernels.swiglu(a, b)
    y.backward(g)
    a64, b64 = gte.double().requires_grad_(), up.double().requires_grad_()
    r = F.silu(a64) * b64
    r.backward(g.double())
    for x, z in ((y, r), (a.grad, a64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(x.double(), z.detach(), **TOL)


# ---- Fused linear CE ----
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("V,chunk", [(1025, 7), (3, 64), (1, 5)])
@pytest.mark.parametrize("ignore", [-100, 0, 2])
def test_fused_ce(backend, reduction, V, chunk, ignore):
    N, H = 19, 12
    t = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(0))
    t[::3] = ignore
    h, w = _randn(N, H, seed=1), _randn(V, H, seed=2) * 0.3
    hl, wl = h.clone().requires_grad_(), w.clone().requires_grad_()
    with kernels.use_backend(backend):
        loss = kernels.fused_linear_cross_entropy(hl, wl, t, ignore_index=ignore, reduction=reduction,
                                                  chunk_size=chunk)
    (loss * 1.7).backward()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    ref = F.cross_entropy(h64 @ w64.T, t, ignore_index=ignore, reduction=reduction)
    (ref * 1.7).backward()
    for x, z in ((loss, ref), (hl.grad, h64.grad), (wl.grad, w64.grad)):  # (V=1, ignore 0: all ignored, NaN)
        torch.testing.assert_close(x.double(), z.detach(), **TOL, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_ce_all_ignored(backend, reduction):
    H, V = 8, 40
    t = torch.full((2, 3), -100)
    h, w = _randn(2, 3, H, seed=1), _randn(V, H, seed=2)
    hl, wl = h.clone().requires_grad_(), w.clone().requires_grad_()
    with kernels.use_backend(backend):
        loss = kernels.fused_linear_cross_entropy(hl, wl, t, reduction=reduction)
    loss.backward()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    ref = F.cross_entropy((h64 @ w64.T).reshape(-1, V), t.reshape(-1), reduction=reduction)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), equal_nan=True)
    torch.testing.assert_close(hl.grad.double(), h64.grad, equal_nan=True)
    torch.testing.assert_close(wl.grad.double(), w64.grad, equal_nan=True)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("TQ", [17, 3])
def test_mask_with_fully_masked_rows_and_docs(grad, TQ):
    """A batch row all padding (no key allowed for some queries): both backends agree, finite."""
    B, HQ, HK, TK, D = 2, 4, 2, 17, 16
    q, k, v = _randn(B, HQ, TQ, D, seed=1), _randn(B, HK, TK, D, seed=2), _randn(B, HK, TK, D, seed=3)
    mask = torch.ones(B, 1, TQ, TK, dtype=torch.bool).tril(TK - TQ)
    mask[1] = False
    mask[1, :, -1, -1] = True
    outs = []
    for backend in BACKENDS:
        leaves = [x.clone().requires_grad_(grad) for x in (q, k, v)]
        with kernels.use_backend(backend), torch.set_grad_enabled(grad):
            o = kernels.attention(*leaves, attn_mask=mask)
            if grad:
                o.sum().backward()
        outs.append((o.detach(), *(x.grad for x in leaves)))
    want = F.scaled_dot_product_attention(q[:1].double(), k[:1].double().repeat_interleave(2, 1),
                                          v[:1].double().repeat_interleave(2, 1), attn_mask=mask[:1])
    torch.testing.assert_close(outs[0][0][:1].double(), want, **TOL)
    for a, b in zip(outs[0], outs[1]):
        if a is not None:
            assert torch.isfinite(a).all() and torch.isfinite(b).all()
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_and_docs_together(backend):
    T = 21
    doc = _docs([[1, 9], [20]], T)
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[0, :1] = False
    mask = (valid[:, None, None, :] & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)
    q, k, v = _randn(2, 4, T, 16, seed=1), _randn(2, 2, T, 16, seed=2), _randn(2, 2, T, 16, seed=3)
    g = _randn(2, 4, T, 16, seed=4)
    full = mask & (doc[:, None, :, None] == doc[:, None, None, :])
    want, wg = _oracle(q, k, v, g, full, None)
    got, gg = _run(backend, q, k, v, g, attn_mask=mask, doc_ids=doc)
    torch.testing.assert_close(got.double(), want.detach(), **TOL)
    for a, b in zip(gg, wg):
        torch.testing.assert_close(a.double(), b, **TOL)
