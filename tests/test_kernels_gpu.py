"""The Triton kernels in bf16/fp16 on a real GPU, at sizes the interpreter cannot reach. Skipped without CUDA.

Low-precision results cannot match a float64 reference to 1e-4, and a fixed tolerance either hides bugs or
fails on honest rounding. So the yardstick is PyTorch itself: our error against an fp32 reference must be no
worse than a small multiple of the error that the same math done by PyTorch in the low precision makes.
"""
import os

import torch

if not torch.cuda.is_available():  # before anything imports Triton: see test_kernels_triton.py
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from kernels.flash_attention import attention_reference  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def triton_backend():
    with kernels.use_backend("triton"):
        yield


def _assert_no_worse(ours, torch_lowp, fp32_ref, factor=2.0, floor=1e-3, what="output"):
    err = (ours.float() - fp32_ref).abs().max().item()
    base = (torch_lowp.float() - fp32_ref).abs().max().item()
    assert err <= factor * base + floor, f"{what}: error {err:.3g} vs PyTorch low-precision error {base:.3g}"


def _attention_case(dtype, B, HQ, HK, TQ, TK, D, seed=0, **kw):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, HQ, TQ, D, device="cuda", generator=g).to(dtype).requires_grad_()
    k = torch.randn(B, HK, TK, D, device="cuda", generator=g).to(dtype).requires_grad_()
    v = torch.randn(B, HK, TK, D, device="cuda", generator=g).to(dtype).requires_grad_()
    do = torch.randn(B, HQ, TQ, D, device="cuda", generator=g).to(dtype)
    results = []
    for fn, cast in ((kernels.attention, dtype), (attention_reference, dtype), (attention_reference, torch.float32)):
        leaves = [x.detach().to(cast).requires_grad_() for x in (q, k, v)]
        out = fn(*leaves, **kw)
        out.backward(do.to(cast))
        results.append([out.detach()] + [x.grad for x in leaves])
    for name, ours, lowp, ref in zip(("out", "dq", "dk", "dv"), *results):
        _assert_no_worse(ours, lowp, ref, what=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 80, 96, 128])
def test_attention_low_precision(dtype, head_dim):
    _attention_case(dtype, 2, 8, 2, 1031, 1031, head_dim)


def test_attention_long_and_packed():
    doc = torch.zeros(1, 4099, dtype=torch.long, device="cuda")
    doc[0, 1000:] = 1
    doc[0, 1001:] = 2
    doc[0, 3000:] = 3
    _attention_case(torch.bfloat16, 1, 14, 2, 4099, 4099, 64, doc_ids=doc)


def test_attention_chunk_after_cache():
    _attention_case(torch.bfloat16, 2, 8, 2, 300, 2000, 128)


@pytest.mark.parametrize("tq", [1, 4])
def test_decode_against_long_cache(tq):
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(2, 14, tq, 64, device="cuda", generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, 8192, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    with torch.no_grad():
        ours = kernels.attention(q, k, v)
        lowp = attention_reference(q, k, v)
        ref = attention_reference(q.float(), k.float(), v.float())
    _assert_no_worse(ours, lowp, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_elementwise_ops_low_precision(dtype):
    from kernels.rmsnorm import rms_norm_reference
    from kernels.rope import apply_rope_reference
    from kernels.silu_mul import swiglu_reference

    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(4, 1000, 896, device="cuda", generator=g).to(dtype)
    w = (1 + 0.2 * torch.randn(896, device="cuda", generator=g)).to(dtype)
    _assert_no_worse(kernels.rms_norm(x, w, 1e-6), rms_norm_reference(x, w, 1e-6),
                     rms_norm_reference(x.float(), w.float(), 1e-6), what="rms_norm")
    gate, up = (torch.randn(4, 1000, 4864, device="cuda", generator=g).to(dtype) for _ in range(2))
    _assert_no_worse(kernels.swiglu(gate, up), swiglu_reference(gate, up),
                     swiglu_reference(gate.float(), up.float()), what="swiglu")
    q = torch.randn(4, 1000, 14, 64, device="cuda", generator=g).to(dtype).transpose(1, 2)
    k = torch.randn(4, 2, 1000, 64, device="cuda", generator=g).to(dtype)
    ang = torch.arange(1000, device="cuda")[:, None] * torch.rand(32, device="cuda", generator=g)
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    ours = kernels.apply_rope(q, k, cos.to(dtype), sin.to(dtype))
    lowp = apply_rope_reference(q, k, cos.to(dtype), sin.to(dtype))
    ref = apply_rope_reference(q.float(), k.float(), cos.to(dtype).float(), sin.to(dtype).float())
    for o, lo, r in zip(ours, lowp, ref):
        _assert_no_worse(o, lo, r, what="rope")


def test_fused_linear_cross_entropy_qwen_vocab_bf16():
    g = torch.Generator(device="cuda").manual_seed(3)
    V, H, N = 151936, 256, 1500
    hidden = (torch.randn(N, H, device="cuda", generator=g)).to(torch.bfloat16).requires_grad_()
    weight = (0.05 * torch.randn(V, H, device="cuda", generator=g)).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, V, (N,), device="cuda", generator=g)
    targets[:100] = -100
    loss = kernels.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=512)
    dh, dw = torch.autograd.grad(loss, (hidden, weight))
    h32, w32 = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    want = F.cross_entropy(h32 @ w32.T, targets)
    wdh, wdw = torch.autograd.grad(want, (h32, w32))
    hb, wb = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    naive = F.cross_entropy(hb @ wb.T, targets)
    ndh, ndw = torch.autograd.grad(naive, (hb, wb))
    assert abs(loss.item() - want.item()) <= 2 * abs(naive.float().item() - want.item()) + 1e-3
    _assert_no_worse(dh, ndh, wdh, floor=1e-6, what="d hidden")
    _assert_no_worse(dw, ndw, wdw, floor=1e-6, what="d weight")


@pytest.mark.parametrize("variant", ["qwen3", "llama-linear-tied-bias"])
def test_autocast_training_step_matches_the_torch_backend(hf_checkpoint, variant):
    """What the trainer does on a GPU: fp32 master weights under bf16 autocast, packed rows (two documents in one
    row) through the training loss. The kernels and the PyTorch references must agree to bf16 rounding."""
    from minagent import load_model
    from minagent.training.objective import PackedLMLoss

    path = hf_checkpoint(variant)[0]
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 257, (2, 96), generator=g).cuda()
    targets = torch.randint(0, 257, (2, 96), generator=g).cuda()
    targets[1, :20] = -100
    doc_ids = torch.zeros(2, 96, dtype=torch.long, device="cuda")
    doc_ids[0, 40:] = 1
    positions = kernels.document_positions(doc_ids)
    results = {}
    for backend in ("torch", "triton"):
        model = load_model(path, dtype=torch.float32, device="cuda").train()
        with kernels.use_backend(backend), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = PackedLMLoss(model)(tokens, targets, positions, doc_ids) / (targets != -100).sum()
        loss.backward()
        results[backend] = loss.item(), {n: p.grad for n, p in model.named_parameters()}
    (want, want_grads), (got, grads) = results["torch"], results["triton"]
    assert got == pytest.approx(want, rel=1e-2)
    for name, ref in want_grads.items():
        assert grads[name] is not None and grads[name].dtype == torch.float32, name
        rel = ((grads[name] - ref).norm() / ref.norm().clamp_min(1e-12)).item()
        assert rel < 5e-2, f"gradient of {name}: relative error {rel:.3g} between the backends"


def test_lora_dropout_on_gpu_uses_one_mask_forward_and_backward():
    """On CUDA the LoRA update draws its dropout with torch's fused op (minagent/lora.py). With A = B = I the
    update is scale * dropout(x), which shows the mask it drew; the gradients must then be float64 math with
    that same mask."""
    from minagent.lora import LoRAUpdate

    n, p, scale = 16, 0.4, 2.0
    x = (torch.rand(6, 50, n, device="cuda") + 0.5).requires_grad_()  # never 0, so kept entries stay nonzero
    y = torch.randn(6, 50, n, device="cuda", requires_grad=True)
    a = torch.eye(n, device="cuda", requires_grad=True)
    b = torch.eye(n, device="cuda", requires_grad=True)
    out = LoRAUpdate.apply(x, y, a, b, scale, p)
    keep = ((out - y).detach() != 0).double()
    assert 0.5 < keep.mean().item() < 0.7  # about 1 - p kept
    dy = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, y, a, b), dy)
    x64, y64, a64, b64 = (t.detach().double().requires_grad_() for t in (x, y, a, b))
    want_out = y64 + ((x64 * keep / (1 - p)) @ a64.T @ b64.T) * scale
    want = torch.autograd.grad(want_out, (x64, y64, a64, b64), dy.double())
    torch.testing.assert_close(out.double(), want_out, rtol=1e-5, atol=1e-5)
    for name, h, w in zip(("dx", "dy", "dA", "dB"), got, want):
        torch.testing.assert_close(h.double(), w, rtol=1e-4, atol=1e-4, msg=name)


def test_auto_backend_sends_decode_sized_calls_to_torch(monkeypatch):
    """Under `auto`, a call smaller than kernels.AUTO_MIN_ELEMENTS runs torch's kernels (a Triton launch costs
    more host time than the whole GPU work of one token); a training-sized call runs Triton."""
    from kernels import rmsnorm, silu_mul

    def refuse(*args, **kwargs):
        raise AssertionError("Triton ran")

    monkeypatch.setattr(rmsnorm, "rms_norm_triton", refuse)
    monkeypatch.setattr(silu_mul, "swiglu_triton", refuse)
    w = torch.ones(896, device="cuda", dtype=torch.bfloat16)
    one_token = torch.randn(1, 1, 896, device="cuda", dtype=torch.bfloat16)
    with kernels.use_backend("auto"):
        kernels.rms_norm(one_token, w, 1e-6)
        kernels.swiglu(one_token, one_token)
        with pytest.raises(AssertionError, match="Triton ran"):
            kernels.rms_norm(torch.randn(4, 1024, 896, device="cuda", dtype=torch.bfloat16), w, 1e-6)
