"""The Triton kernels against float64 references: outputs and every input/weight gradient.

Without a GPU the kernels run in Triton's CPU interpreter, which Triton picks when it is first imported, so
TRITON_INTERPRET=1 is set here before anything can import it (nothing else in the suite needs Triton; on a
machine with CUDA the variable is left alone and the same tests run on the GPU). Shapes are small and odd on
purpose: seq 37 (ragged blocks), head_dim 80 (a padded head dim), 7 query heads over 1 kv head, batch 3.
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
if _PROBLEM and os.environ.get("CI") == "true":
    pytest.fail(f"Triton kernel tests cannot run in CI: {_PROBLEM}", pytrace=False)
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = dict(atol=5e-5, rtol=1e-4)


@pytest.fixture(autouse=True)
def triton_backend():
    with kernels.use_backend("triton"):
        yield


def _randn(*shape, scale=1.0, seed=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return (torch.randn(*shape, generator=g) * scale).to(DEVICE)


def check_against_float64(kernel_fn, reference_fn, inputs, grad_inputs=None):
    """Run kernel_fn on fp32 leaves and reference_fn on float64 copies; compare outputs and all gradients."""
    leaves = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    leaves64 = [x.detach().double().requires_grad_() if x.is_floating_point() else x for x in inputs]
    out = kernel_fn(*leaves)
    ref = reference_fn(*leaves64)
    out, ref = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    for o, r in zip(out, ref):
        torch.testing.assert_close(o.double(), r.detach(), **TOL)
    grads = [torch.randn(o.shape, generator=torch.Generator().manual_seed(7)).to(DEVICE) for o in out]
    torch.autograd.backward(out, grads)
    torch.autograd.backward(ref, [g.double() for g in grads])
    checked = grad_inputs if grad_inputs is not None else [i for i, x in enumerate(inputs) if x.is_floating_point()]
    for i in checked:
        assert leaves[i].grad is not None, f"input {i} got no gradient"
        torch.testing.assert_close(leaves[i].grad.double(), leaves64[i].grad, **TOL, msg=f"gradient of input {i}")


# ---------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------

def _attention64(causal=True, doc_ids=None, attn_mask=None):
    from kernels.flash_attention import attention_reference

    return lambda q, k, v: attention_reference(q, k, v, causal=causal, doc_ids=doc_ids, attn_mask=attn_mask)


def _qkv(B, HQ, HK, TQ, TK, D, seed=0):
    return _randn(B, HQ, TQ, D, seed=seed), _randn(B, HK, TK, D, seed=seed + 1), _randn(B, HK, TK, D, seed=seed + 2)


def test_attention_causal_gqa_odd_shapes():
    """The issue's shape: batch 3, 7 query heads over 1 kv head, seq 37, head_dim 80."""
    check_against_float64(lambda q, k, v: kernels.attention(q, k, v, causal=True), _attention64(),
                          _qkv(3, 7, 1, 37, 37, 80))


@pytest.mark.parametrize("head_dim", [64, 96, 128])
def test_attention_head_dims(head_dim):
    check_against_float64(lambda q, k, v: kernels.attention(q, k, v), _attention64(), _qkv(1, 2, 1, 37, 37, head_dim))


def test_attention_not_causal():
    check_against_float64(lambda q, k, v: kernels.attention(q, k, v, causal=False), _attention64(causal=False),
                          _qkv(1, 4, 2, 37, 37, 64))


def test_attention_fewer_queries_than_keys_is_bottom_right_causal():
    """Training-path kernels with Tq < Tk: query i sits at position i + Tk - Tq (a chunk after a cache)."""
    check_against_float64(lambda q, k, v: kernels.attention(q, k, v), _attention64(), _qkv(1, 4, 2, 20, 45, 64))


def test_attention_explicit_mask_like_padded_batches():
    """The model's padded-batch mask (left padding, causal, a pad query sees itself) replaces the causal rule."""
    B, T = 2, 37
    key_valid = torch.ones(B, T, dtype=torch.bool)
    key_valid[0, :9] = False
    idx = torch.arange(T)
    allowed = (idx[None, :] <= idx[:, None]) & key_valid[:, None, :]
    mask = (allowed | torch.eye(T, dtype=torch.bool)).unsqueeze(1).to(DEVICE)
    check_against_float64(lambda q, k, v: kernels.attention(q, k, v, attn_mask=mask),
                          _attention64(attn_mask=mask), _qkv(B, 2, 1, T, T, 64))


def _doc_ids(B, T, cuts):
    doc = torch.zeros(B, T, dtype=torch.long)
    for b, row_cuts in enumerate(cuts):
        for c in row_cuts:
            doc[b, c:] += 1
    return doc.to(DEVICE)


@pytest.mark.parametrize("causal", [True, False])
def test_packed_documents_equal_separate_documents(causal):
    """Attention over a packed row == attention over each document alone (outputs and gradients)."""
    B, HQ, HK, T, D = 2, 2, 1, 37, 64
    cuts = [[5, 21, 22], [17]]  # a 1-token document, and a row with only two
    doc = _doc_ids(B, T, cuts)
    q, k, v = [x.requires_grad_() for x in _qkv(B, HQ, HK, T, T, D)]
    packed = kernels.attention(q, k, v, causal=causal, doc_ids=doc)
    g = _randn(*packed.shape, seed=3)
    dq, dk, dv = torch.autograd.grad(packed, (q, k, v), g)

    for b, row_cuts in enumerate(cuts):
        bounds = [0, *row_cuts, T]
        for s, e in zip(bounds[:-1], bounds[1:]):
            parts = [x[b:b + 1, :, s:e].detach().double().requires_grad_() for x in (q, k, v)]
            alone = _attention64(causal)(*parts)
            grads = torch.autograd.grad(alone, parts, g[b:b + 1, :, s:e].double())
            torch.testing.assert_close(packed[b:b + 1, :, s:e].double(), alone, **TOL)
            for got, want in zip((dq, dk, dv), grads):
                torch.testing.assert_close(got[b:b + 1, :, s:e].double(), want, **TOL)


def test_gqa_backward_split_over_programs(monkeypatch):
    """dK/dV summed over the group by several programs (the small-batch GPU path) equals one program's sum."""
    from kernels import flash_attention as fa

    monkeypatch.setattr(fa, "backward_head_splits", lambda B, HK, group, TK, device: group)
    check_against_float64(lambda q, k, v: kernels.attention(q, k, v), _attention64(), _qkv(1, 7, 1, 21, 21, 64))


@pytest.mark.parametrize("tq", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_decode_path_against_cache(monkeypatch, tq, masked):
    """Few queries without autograd: group-packed rows and the key range split in chunks, then merged."""
    from kernels import flash_attention as fa

    monkeypatch.setattr(fa, "decode_splits", lambda B, HK, TK, device: 3)
    B, HQ, HK, TK, D = 2, 6, 2, 45, 80
    q, k, v = _qkv(B, HQ, HK, tq, TK, D)
    mask = None
    if masked:  # left padding in row 0, as batched generation does
        valid = torch.ones(B, TK, dtype=torch.bool)
        valid[0, :7] = False
        mask = (valid[:, None, None, :] & torch.ones(tq, TK, dtype=torch.bool).tril(TK - tq)).to(DEVICE)
    with torch.no_grad():
        out = kernels.attention(q, k, v, attn_mask=mask)
    want = _attention64(attn_mask=mask)(q.double(), k.double(), v.double())
    torch.testing.assert_close(out.double(), want, **TOL)


# ---------------------------------------------------------------------------------------------------------
# Elementwise and row-wise kernels
# ---------------------------------------------------------------------------------------------------------

def _rms_norm64(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


@pytest.mark.parametrize("shape", [(3, 37, 80), (5, 123)])
def test_rms_norm(shape):
    check_against_float64(lambda x, w: kernels.rms_norm(x, w, 1e-6), _rms_norm64,
                          [_randn(*shape, seed=1), 1 + 0.3 * _randn(shape[-1], seed=2)])


def _rope64(q, k, cos, sin):
    """Independent formulation: each (x[i], x[i + D/2]) pair rotated as the complex number x1 + i*x2."""
    def rot(x):
        half = x.shape[-1] // 2
        z = torch.complex(x[..., :half], x[..., half:])
        zr = z * torch.complex(cos[..., :half], sin[..., :half]).unsqueeze(-3)
        return torch.cat((zr.real, zr.imag), dim=-1)

    return rot(q), rot(k)


@pytest.mark.parametrize("batched_tables", [True, False])
def test_rope_on_transposed_q_and_k(batched_tables):
    B, HQ, HK, T, D = 3, 7, 1, 37, 80
    q = _randn(B, T, HQ, D, seed=1).transpose(1, 2)  # the model's layout: a transposed view, not contiguous
    k = _randn(B, HK, T, D, seed=2)
    pos = torch.arange(T, dtype=torch.float64)[None].expand(B, T) + torch.arange(B)[:, None] * 5
    freqs = pos[..., None] / (100.0 ** (torch.arange(0, D, 2) / D))
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos().float().to(DEVICE), emb.sin().float().to(DEVICE)
    if not batched_tables:
        cos, sin = cos[0], sin[0]
    check_against_float64(lambda q, k, c, s: kernels.apply_rope(q, k, c, s), _rope64, [q, k, cos, sin],
                          grad_inputs=[0, 1])


def test_rope_joint_rotates_q_and_k_held_in_one_tensor():
    """The inference plan's call: q and k as the first heads of a packed q/k/v product ([B, T, H, D] transposed)."""
    B, HQ, HK, T, D = 2, 7, 2, 37, 80
    qk = _randn(B, T, HQ + HK, D, seed=3).transpose(1, 2)
    pos = torch.arange(T, dtype=torch.float64)
    freqs = pos[:, None] / (100.0 ** (torch.arange(0, D, 2) / D))
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos().float().to(DEVICE), emb.sin().float().to(DEVICE)
    check_against_float64(lambda x, c, s: kernels.apply_rope_joint(x, HQ, c, s),
                          lambda x, c, s: _rope64(x[:, :HQ], x[:, HQ:], c, s), [qk, cos, sin], grad_inputs=[0])


def test_swiglu():
    check_against_float64(kernels.swiglu, lambda g, u: g * torch.sigmoid(g) * u,
                          [3 * _randn(3, 37, 123, seed=1), _randn(3, 37, 123, seed=2)])


# ---------------------------------------------------------------------------------------------------------
# Fused linear cross-entropy
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_linear_cross_entropy(reduction):
    B, T, H, V = 3, 37, 48, 1000
    targets = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    targets[0, :8] = -100
    targets[2, -3:] = -100
    targets = targets.to(DEVICE)

    def fused(h, w):
        return kernels.fused_linear_cross_entropy(h, w, targets, reduction=reduction, chunk_size=32)

    def naive64(h, w):
        return F.cross_entropy((h @ w.T).reshape(-1, V), targets.reshape(-1), ignore_index=-100, reduction=reduction)

    check_against_float64(fused, naive64, [_randn(B, T, H, seed=1), _randn(V, H, scale=0.2, seed=2)])
