"""The PyTorch paths of `kernels` (what runs on CPU) and the dispatcher; no Triton needed.

Oracles: float64 math written out here, torch's F.cross_entropy on materialised logits, attention over each
document separately, and hand-checked examples.
"""
import os

import torch

if not torch.cuda.is_available():  # before anything imports Triton: see test_kernels_triton.py
    os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from kernels.flash_attention import attention_reference, document_runs  # noqa: E402


@pytest.fixture(autouse=True)
def torch_backend():
    with kernels.use_backend("torch"):
        yield


def test_document_runs_hand_checked():
    seg, start, end = document_runs(torch.tensor([[0, 0, 1, 1, 1, 0], [7, 7, 7, 7, 7, 7]]))
    assert seg.tolist() == [[0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0]]
    assert start.tolist() == [[0, 0, 2, 2, 2, 5], [0, 0, 0, 0, 0, 0]]
    assert end.tolist() == [[2, 2, 5, 5, 5, 6], [6, 6, 6, 6, 6, 6]]


def test_document_positions_restart_per_document():
    assert kernels.document_positions(torch.tensor([[4, 4, 4, 9, 9, 2]])).tolist() == [[0, 1, 2, 0, 1, 0]]


def test_packed_documents_equal_separate_documents():
    B, HQ, HK, T, D = 2, 6, 2, 29, 16
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, h, T, D, generator=g, dtype=torch.float64) for h in (HQ, HK, HK))
    doc = torch.zeros(B, T, dtype=torch.long)
    doc[0, 4:] = 1
    doc[0, 20:] = 2
    doc[1, 11:] = 5
    packed = kernels.attention(q, k, v, doc_ids=doc)
    for b, bounds in enumerate([[0, 4, 20, T], [0, 11, T]]):
        for s, e in zip(bounds[:-1], bounds[1:]):
            alone = F.scaled_dot_product_attention(q[b:b + 1, :, s:e], k[b:b + 1, :, s:e], v[b:b + 1, :, s:e],
                                                   is_causal=True, enable_gqa=True)
            torch.testing.assert_close(packed[b:b + 1, :, s:e], alone)


@pytest.mark.parametrize("runs", [[0, 4, 20], [0, 3, 5, 9, 12, 14, 15, 18, 21, 25]])  # per-document calls / the mask
def test_packed_documents_and_their_gradients_match_the_masked_softmax(runs):
    """Against the written-out softmax with the block-diagonal causal mask, in float64: outputs and gradients,
    on the per-document path (a few documents per row) and the masked one (more than MAX_DOCUMENTS_PER_ROW).
    Row 1 reuses an id in two separate runs: they are two documents."""
    from kernels.flash_attention import MAX_DOCUMENTS_PER_ROW

    B, HQ, HK, T, D = 2, 6, 2, 29, 16
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, h, T, D, generator=g, dtype=torch.float64, requires_grad=True) for h in (HQ, HK, HK))
    doc = torch.zeros(B, T, dtype=torch.long)
    for i, s in enumerate(runs):
        doc[0, s:] = i
    doc[1, 11:] = 5
    doc[1, 17:] = 0
    assert (len(runs) > MAX_DOCUMENTS_PER_ROW) == (runs[-1] == 25)
    dy = torch.randn(B, HQ, T, D, generator=g, dtype=torch.float64)
    got = kernels.attention(q, k, v, doc_ids=doc)
    want = attention_reference(q, k, v, doc_ids=doc)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), dy), torch.autograd.grad(want, (q, k, v), dy)):
        torch.testing.assert_close(a, b)


def test_sdpa_path_matches_plain_softmax_for_decode_and_masks():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 3, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 10, 8, generator=g, dtype=torch.float64) for _ in range(2))
    want = attention_reference(q, k, v)  # bottom-right causal: query i sees keys <= i + 7
    scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / 8 ** 0.5
    scores[..., 0, 8:] = float("-inf")
    scores[..., 1, 9:] = float("-inf")
    torch.testing.assert_close(want, scores.softmax(-1) @ v.repeat_interleave(2, 1))
    torch.testing.assert_close(kernels.attention(q, k, v), want)
    mask = torch.rand(2, 1, 3, 10, generator=g) > 0.4
    mask[..., 0] = True
    torch.testing.assert_close(kernels.attention(q, k, v, attn_mask=mask), attention_reference(q, k, v, attn_mask=mask))


@pytest.mark.parametrize("heads, kv_heads, tq, tk", [(9, 3, 5, 37), (4, 4, 2, 3), (6, 2, 31, 200), (8, 1, 64, 65)])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_queries_after_a_cached_prefix_are_bottom_right_causal(monkeypatch, heads, kv_heads, tq, tk, scale):
    """fp32 queries after a cached prefix take the split into prefix and new keys merged by log-sum-exp
    (flash_attention._after_cached_prefix); against the float64 softmax, with GQA and an odd scale."""
    from kernels import flash_attention
    calls = []
    real = flash_attention._after_cached_prefix
    monkeypatch.setattr(flash_attention, "_after_cached_prefix", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(tq)
    q = torch.randn(2, tk, heads, 16, generator=g).transpose(1, 2)[:, :, -tq:]  # strided, as the model's q
    k, v = (torch.randn(2, kv_heads, tk, 16, generator=g) for _ in range(2))
    with torch.inference_mode():
        got = kernels.attention(q, k, v, causal=True, scale=scale)
    assert calls == [1]
    want = attention_reference(q.double(), k.double(), v.double(), scale=scale)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6)


def test_queries_after_a_cached_prefix_keep_autograd_and_the_masked_path():
    """Gradients (the split's merge reads a log-sum-exp autograd does not differentiate), float64 and masks
    take the masked path: same values, and gradients equal the float64 reference's."""
    from kernels import flash_attention
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 6, 7, 8, generator=g, requires_grad=True)
    k, v = (torch.randn(1, 2, 20, 8, generator=g, requires_grad=True) for _ in range(2))
    assert not flash_attention._prefix_split_applies(q, k, v)
    with torch.no_grad():
        assert flash_attention._prefix_split_applies(q, k, v)
        assert not flash_attention._prefix_split_applies(q.double(), k.double(), v.double())
        assert not flash_attention._prefix_split_applies(q[:, :, :1], k, v)  # one query: SDPA sees every key
        assert not flash_attention._prefix_split_applies(q, k[:, :, :7], v[:, :, :7])  # square: is_causal
    kernels.attention(q, k, v).square().sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    attention_reference(q64, k64, v64).square().sum().backward()
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch, seq", [(0, 5), (2, 0)])
def test_packed_documents_with_no_token_give_an_empty_result(batch, seq):
    """doc_ids for an empty batch (B or T of 0) took the per-document path, which crashed (max() of an empty
    tensor, cat() of no pieces); it must give the empty output and gradients, as without doc_ids."""
    q = torch.randn(batch, 4, seq, 8, requires_grad=True)
    k, v = torch.randn(batch, 2, seq, 8), torch.randn(batch, 2, seq, 8)
    out = kernels.attention(q, k, v, doc_ids=torch.zeros(batch, seq, dtype=torch.long))
    assert out.shape == q.shape
    out.sum().backward()
    assert q.grad.shape == q.shape


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_linear_cross_entropy_torch_path(reduction):
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 19, 24, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (0.3 * torch.randn(301, 24, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 301, (2, 19), generator=g)
    targets[0, :7] = -100
    loss = kernels.fused_linear_cross_entropy(hidden, weight, targets, reduction=reduction, chunk_size=5)
    dh, dw = torch.autograd.grad(3.0 * loss, (hidden, weight))
    want = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten(), ignore_index=-100,
                           reduction=reduction)
    wdh, wdw = torch.autograd.grad(3.0 * want, (hidden, weight))
    exact = dict(rtol=1e-12, atol=1e-12)  # fp64 all the way: the mean's 1/count too (it was fp32: 5e-8 off)
    torch.testing.assert_close(loss, want, **exact)
    torch.testing.assert_close(dh, wdh, **exact)
    torch.testing.assert_close(dw, wdw, **exact)


def test_fused_linear_cross_entropy_refuses_targets_outside_the_vocabulary():
    """As F.cross_entropy does: a target of -1 must not wrap around to the last class."""
    hidden, weight = torch.randn(4, 8), torch.randn(50, 8)
    for bad in (-1, 50):
        targets = torch.tensor([1, bad, 3, -100])
        with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
            kernels.fused_linear_cross_entropy(hidden, weight, targets)
        with pytest.raises(IndexError):
            F.cross_entropy(hidden @ weight.T, targets)


def test_fused_linear_cross_entropy_under_autocast_matches_the_autocast_naive_path():
    """Training on a GPU runs fp32 master weights under bf16 autocast. The loss must do what `hidden @ W.T` does
    there (bf16 products) and hand back fp32 gradients; it used to crash (bf16 logits into an fp32 buffer).
    CPU autocast follows the same rules, so this runs everywhere."""
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(3, 21, 32, generator=g, requires_grad=True)
    weight = (0.3 * torch.randn(257, 32, generator=g)).requires_grad_()
    targets = torch.randint(0, 257, (3, 21), generator=g)
    targets[1, :5] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = kernels.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=16)
        want = F.cross_entropy((hidden @ weight.T).float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    dh, dw = torch.autograd.grad(loss, (hidden, weight))
    wdh, wdw = torch.autograd.grad(want, (hidden, weight))
    assert loss.dtype == torch.float32 and dh.dtype == dw.dtype == torch.float32
    torch.testing.assert_close(loss, want, atol=1e-4, rtol=1e-4)  # same bf16 logits, fp32 softmax on both sides
    torch.testing.assert_close(dh, wdh, atol=2e-3, rtol=2e-2)  # bf16 backward products, rounded differently
    torch.testing.assert_close(dw, wdw, atol=2e-3, rtol=2e-2)
    exact = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert (loss - exact).abs() > 1e-6  # the products really ran in bf16, as autocast asks
    h64, w64 = hidden.detach().double(), weight.detach().double()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast leaves fp64 alone, and so does the loss
        loss64 = kernels.fused_linear_cross_entropy(h64, w64, targets, chunk_size=16)
    torch.testing.assert_close(loss64, F.cross_entropy((h64 @ w64.T).flatten(0, 1), targets.flatten()))


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_fused_linear_cross_entropy_computes_no_gradient_without_grad_mode(monkeypatch, mode):
    """Evaluation runs the loss under no_grad on weights that still require grad: it must compute the loss only
    (it used to run both gradient products per chunk, 2-3x the time, and hold a [vocab, hidden] fp32 weight
    gradient)."""
    from kernels import cross_entropy

    def no_gradient_product(*args):
        raise AssertionError("weight-gradient product under no_grad")

    monkeypatch.setattr(cross_entropy, "_add_product", no_gradient_product)
    hidden = torch.randn(2, 9, 8, requires_grad=True)
    weight = torch.randn(40, 8, requires_grad=True)
    targets = torch.randint(0, 40, (2, 9))
    with mode():
        loss = kernels.fused_linear_cross_entropy(hidden, weight, targets, reduction="sum", chunk_size=4)
    want = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten(), reduction="sum")
    torch.testing.assert_close(loss, want.detach())


def test_fused_linear_cross_entropy_all_rows_ignored_in_a_chunk():
    hidden = torch.randn(12, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, dtype=torch.float64)
    targets = torch.full((12,), -100)
    targets[10] = 3  # chunks of 4: the first two chunks have no valid row
    loss = kernels.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=4)
    want = F.cross_entropy(hidden @ weight.T, targets)
    torch.testing.assert_close(loss.double(), want)
    (dh,) = torch.autograd.grad(loss, hidden)
    assert dh[:10].abs().max() == 0 and dh[11].abs().max() == 0 and dh[10].abs().max() > 0


def test_additive_mask_with_packed_documents_and_bad_causal_shapes():
    """An additive (float) mask combined with doc_ids stays additive, -inf across documents (float64 softmax as
    the oracle); causal attention with more queries than keys is refused as the Triton path refuses it."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=g, dtype=torch.float64) for _ in range(3))
    add = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64)
    docs = torch.tensor([[0, 0, 0, 1, 1, 1]])
    same = (docs[:, :, None] == docs[:, None, :])[:, None]
    scores = (q @ k.transpose(-1, -2)) * 8 ** -0.5 + add
    want = scores.masked_fill(~same, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(kernels.flash_attention.attention_sdpa(q, k, v, causal=False, attn_mask=add,
                                                                      doc_ids=docs), want)
    with pytest.raises(ValueError, match=r"causal with more queries \(6\) than keys \(4\)"):
        kernels.flash_attention.attention_sdpa(q, k[:, :, :4], v[:, :, :4], causal=True)


def test_rope_reference_is_a_rotation_by_position():
    """Hand check: D=2, position angle theta; (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    theta = torch.tensor([[0.0], [torch.pi / 2]])  # two positions
    cos, sin = theta.cos().repeat(1, 2), theta.sin().repeat(1, 2)
    x = torch.tensor([3.0, 4.0]).expand(1, 1, 2, 2)
    q, _ = kernels.apply_rope(x, x, cos, sin)
    torch.testing.assert_close(q[0, 0], torch.tensor([[3.0, 4.0], [-4.0, 3.0]]))


def test_use_backend_restores_and_rejects_unknown_names():
    with kernels.use_backend("triton"):
        assert kernels.get_backend() == "triton"
    assert kernels.get_backend() == "torch"
    with pytest.raises(ValueError, match="one of auto, triton, torch"):
        kernels.set_backend("cuda")


def test_environment_variable_chooses_the_backend(monkeypatch):
    import importlib

    from kernels import dispatch

    try:
        monkeypatch.setenv("MINAGENT_KERNELS", "Triton ")
        assert importlib.reload(dispatch).get_backend() == "triton"
        monkeypatch.setenv("MINAGENT_KERNELS", "fast")
        with pytest.raises(ValueError, match="environment variable MINAGENT_KERNELS.*'fast'"):
            importlib.reload(dispatch)
    finally:
        monkeypatch.delenv("MINAGENT_KERNELS")
        importlib.reload(dispatch)


_FRESH_PROCESS = """
import sys, torch, kernels
print("imported", sys.modules.get("triton") is not None)
kernels.set_backend("triton")
try:
    kernels.swiglu(torch.ones(3), torch.ones(3))
    print("ran")
except RuntimeError as e:
    print("error", e)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine forcing Triton is legitimate")
def test_import_never_loads_triton_and_forcing_it_on_cpu_says_how_to_fix_it():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MINAGENT_KERNELS")}
    r = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "imported False"
    assert lines[1].startswith("error")
    assert ("TRITON_INTERPRET=1" in lines[1]) or ("pip install triton" in lines[1])


def test_swiglu_torch_path_keeps_gate_and_up_only_and_matches_float64():
    """CPU training uses a lean autograd Function: same gradients as float64 autograd through the formula, and
    only gate and up are saved for the backward (autograd on the formula also keeps silu(gate))."""
    g = torch.Generator().manual_seed(0)
    gate = torch.randn(3, 37, 80, generator=g, requires_grad=True)
    up = torch.randn(3, 37, 80, generator=g, requires_grad=True)
    dout = torch.randn(3, 37, 80, generator=g)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = kernels.swiglu(gate, up)
    assert {t.data_ptr() for t in saved} == {gate.data_ptr(), up.data_ptr()}
    got = torch.autograd.grad(out, (gate, up), dout)
    g64, u64 = gate.detach().double().requires_grad_(), up.detach().double().requires_grad_()
    want_out = g64 * torch.sigmoid(g64) * u64
    want = torch.autograd.grad(want_out, (g64, u64), dout.double())
    torch.testing.assert_close(out.double(), want_out, rtol=1e-6, atol=1e-6)
    for w, h in zip(want, got):
        torch.testing.assert_close(h.double(), w, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # inference takes the plain formula
        torch.testing.assert_close(kernels.swiglu(gate, up), out.detach())
