"""`kernels.linear`: the few-row CPU product that splits a weight's rows over the threads (kernels/matvec.py).

Oracles: the same product in float64, and transformers for a model wide enough that decoding takes the split
path (the parity suite's tiny models are below the size where it starts, so they never exercise it).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

import kernels
from kernels import matvec, onednn_linear
from minagent import load_model
from minagent.generation import SamplingParams, generate


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def spy(monkeypatch, module, name):
    """Wrap module.name so each call records its first argument's shape; returns the list of shapes."""
    calls, real = [], getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(tuple(args[0].shape))
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, recording)
    return calls


def wide_model_under(policy, wide_checkpoint, monkeypatch, module, name, seed):
    """(our model of the wide checkpoint loaded under `policy`, transformers' one, the calls of module.name, a
    [2, 21] batch of prompt ids)."""
    path, hf = wide_checkpoint
    monkeypatch.setattr(matvec, "POLICY", policy)
    ours = load_model(path)
    calls = spy(monkeypatch, module, name)
    return ours, hf, calls, torch.randint(3, 8192, (2, 21), generator=torch.Generator().manual_seed(seed))


def float64_linear(x, w, b=None):
    y = x.double() @ w.double().T
    return y if b is None else y + b.double()


@pytest.mark.parametrize("shape, rows", [((1536, 576), 1), ((1536, 576), 8), ((576, 1536), 3),
                                         ((8192, 192), 1), ((8192, 192), 5)])  # last two: head orientation
@pytest.mark.parametrize("blocks", [2, 3, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_split_product_equals_float64(shape, rows, blocks, bias):
    torch.manual_seed(0)
    w = torch.randn(shape)
    b = torch.randn(shape[0]) if bias else None
    x = torch.randn(rows, 1, shape[1])  # [B, T=1, K], as the model calls it
    got = matvec.linear_split(x, w, b, blocks=blocks)
    assert got.shape == (rows, 1, shape[0])
    want = float64_linear(x, w, b)
    # the worst-case rounding of any fp32 summation order over K terms (plus the bias add): |err| <= (K + 1) u
    # times the sum of |terms|. A block multiplied by the wrong rows or written to the wrong columns is off by
    # O(1); rounding stays far below. (F.linear's own error is no yardstick: MKL's AVX-512 kernels sum in an
    # order 4-5x more accurate than the batched product on some shapes, and less on others.)
    terms = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    bound = (shape[1] + 1) * 2.0 ** -24 * terms
    assert ((got.double() - want).abs() <= bound).all()
    assert (F.linear(x, w, b).double() - want).abs().le(bound).all()  # the bound holds for the BLAS too


def test_rows_that_do_not_divide_fall_back_to_one_product():
    w, x = torch.randn(1537, 576), torch.randn(2, 576)
    torch.testing.assert_close(matvec.linear_split(x, w, blocks=2), F.linear(x, w))


def test_who_takes_the_split_path(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.GENERIC)
    big, small = torch.randn(1536, 576), torch.randn(192, 576)
    assert matvec.wants_split(torch.randn(1, 576), big)
    assert matvec.wants_split(torch.randn(8, 1, 576), big)
    assert not matvec.wants_split(torch.randn(9, 576), big)  # prefill/training rows: the BLAS threads itself
    assert not matvec.wants_split(torch.randn(1, 576), small)  # call overhead dominates
    assert not matvec.wants_split(torch.randn(1, 576, dtype=torch.bfloat16), big.bfloat16())
    assert matvec.split_count(1536) == 2
    torch.set_num_threads(1)
    assert not matvec.wants_split(torch.randn(1, 576), big)


def test_intel_policy_leaves_one_and_two_rows_to_mkl(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.INTEL)
    big = torch.randn(1536, 576)
    assert not matvec.wants_split(torch.randn(1, 576), big)
    assert not matvec.wants_split(torch.randn(2, 1, 576), big)
    assert matvec.wants_split(torch.randn(4, 1, 576), big)
    assert matvec.wants_split(torch.randn(8, 576), big)
    assert not matvec.wants_split(torch.randn(9, 576), big)
    assert matvec.split_count(1536) == 4  # two blocks per thread
    assert matvec.split_count(1538) == 2  # 4 does not divide it, 2 does
    assert matvec.split_count(1537) == 1
    monkeypatch.setattr(matvec, "POLICY", matvec.OFF)
    assert not matvec.wants_split(torch.randn(8, 576), big)


def test_policy_from_the_environment(monkeypatch):
    monkeypatch.setenv("MINAGENT_MATVEC", "Intel")
    assert matvec.default_policy() is matvec.INTEL
    monkeypatch.setenv("MINAGENT_MATVEC", "off")
    assert matvec.default_policy() is matvec.OFF
    if onednn_linear.available():
        monkeypatch.setenv("MINAGENT_MATVEC", "onednn")
        assert matvec.default_policy() is matvec.ONEDNN
    monkeypatch.setenv("MINAGENT_MATVEC", "fast")
    with pytest.raises(ValueError, match="MINAGENT_MATVEC must be one of generic, amd-avx512, intel, off, onednn; "
                                         "got 'fast'"):
        matvec.default_policy()
    monkeypatch.delenv("MINAGENT_MATVEC")
    assert matvec.default_policy() is matvec.measured_policy()
    for vendor, flags, want in (("GenuineIntel", "fpu avx512f", matvec.INTEL),
                                ("AuthenticAMD", "fpu avx2 avx512f avx512bw",
                                 matvec.AMD_AVX512 if onednn_linear.available() else matvec.GENERIC),
                                ("AuthenticAMD", "fpu avx2", matvec.GENERIC), ("", "", matvec.GENERIC)):
        fields = {"vendor_id": vendor, "flags": flags}
        monkeypatch.setattr(matvec, "_cpuinfo_field", fields.get)
        assert matvec.measured_policy() is want, (vendor, flags)


def test_split_path_carries_gradients(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.GENERIC)  # 2 rows go to linear_columns under amd-avx512
    calls = spy(monkeypatch, matvec, "linear_split")
    torch.manual_seed(0)
    w0, x0 = torch.randn(1536, 576) / 24, torch.randn(2, 576)
    grads = {}
    for name, fn, dtype in (("split", kernels.linear, torch.float32), ("plain", F.linear, torch.float32),
                            ("float64", F.linear, torch.float64)):
        w, x = w0.to(dtype, copy=True).requires_grad_(), x0.to(dtype, copy=True).requires_grad_()
        fn(x, w).square().sum().backward()
        grads[name] = (x.grad.double(), w.grad.double())
    assert calls == [(2, 576)]
    for got, plain, want in zip(grads["split"], grads["plain"], grads["float64"]):
        slack = (plain - want).abs().max().item()  # how far fp32 autograd through F.linear lands
        assert (got - want).abs().max().item() <= 4 * slack + 1e-6


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """A Llama whose every projection and its untied head are big enough for the split path."""
    cfg = transformers.LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False,
                                   max_position_embeddings=128)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p)) if name.endswith("norm.weight") else p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("wide")
    hf.save_pretrained(path)
    return path, hf


def prefill_then_decode(ours, ids, prefill=9):
    """Logits for every position of ids [B, T]: the first `prefill` tokens in one cached forward, then one token
    per row per step, as generation runs them."""
    cache = ours.new_cache(ids.shape[0], ids.shape[1])
    got = [ours(ids[:, :prefill], cache=cache)]
    got += [ours(ids[:, t:t + 1], cache=cache) for t in range(prefill, ids.shape[1])]
    return torch.cat(got, dim=1)


def assert_batched_greedy_matches(ours, hf, prompts, n=12):
    """Our padded batch's greedy tokens equal transformers' for each prompt run alone."""
    ours_tokens = [r.token_ids for r in generate(ours, prompts, SamplingParams(max_new_tokens=n))]
    for prompt, tokens in zip(prompts, ours_tokens):
        hf_tokens = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=0)
        assert tokens == hf_tokens[0, len(prompt):].tolist()


def test_decoding_on_the_split_path_matches_transformers(wide_checkpoint, two_threads, monkeypatch):
    path, hf = wide_checkpoint
    monkeypatch.setattr(matvec, "POLICY", matvec.GENERIC)  # batch 2 splits (the Intel policy leaves it to MKL)
    ours = load_model(path)
    calls = spy(monkeypatch, matvec, "linear_split")
    ids = torch.randint(3, 8192, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = prefill_then_decode(ours, ids)
    # every decode step: the packed q/k/v, o, the packed gate/up and down in each layer, and the head
    assert len(calls) == 12 * (2 * 4 + 1)
    torch.testing.assert_close(got, want)
    prompt = ids[:1, :7]
    hf_tokens = hf.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    ours_tokens = generate(ours, [prompt[0].tolist()], SamplingParams(max_new_tokens=12))[0].token_ids
    assert ours_tokens == hf_tokens[0, 7:].tolist()


needs_onednn = pytest.mark.skipif(not onednn_linear.available(), reason="this torch has no oneDNN linear ops")


@needs_onednn
@pytest.mark.parametrize("shape, rows", [((1536, 576), 2), ((576, 1536), 5), ((8192, 192), 8)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("path", ["prepacked", "plain"])
def test_onednn_products_equal_float64(shape, rows, bias, path):
    torch.manual_seed(0)
    w = torch.randn(shape)
    b = torch.randn(shape[0]) if bias else None
    x = torch.randn(rows, 1, shape[1])
    product = onednn_linear.linear if path == "prepacked" else onednn_linear.linear_plain
    with torch.no_grad():
        got = product(x, w, b)
    assert got.shape == (rows, 1, shape[0])
    terms = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    bound = (shape[1] + 1) * 2.0 ** -24 * terms  # as in test_split_product_equals_float64
    assert ((got.double() - float64_linear(x, w, b)).abs() <= bound).all()


@needs_onednn
def test_prepacked_copy_follows_in_place_updates():
    """An optimizer step or a LoRA merge changes the weight in place: the next product must use the new values."""
    w, x = torch.randn(1536, 576), torch.randn(3, 576)
    with torch.no_grad():
        before = onednn_linear.linear(x, w)
        w.mul_(-2.0)
        after = onednn_linear.linear(x, w)
    torch.testing.assert_close(after.double(), float64_linear(x, w), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(after, -2.0 * before, rtol=1e-5, atol=1e-4)
    assert sum(k[0] == w.data_ptr() for k in onednn_linear._PACKED) == 1  # the old copy was replaced
    onednn_linear.clear()


@needs_onednn
def test_a_new_weight_where_a_freed_one_lived_gets_its_own_copy():
    """Same address, shape, strides and version counter, other values, a new storage: what a model freed and
    another loaded in its place can produce. (numpy's buffer makes the reuse certain rather than up to malloc.)"""
    x = torch.randn(3, 576)
    arr = np.random.default_rng(0).standard_normal((1536, 576), dtype=np.float32)
    w = torch.from_numpy(arr)
    with torch.no_grad():
        onednn_linear.linear(x, w)
    del w  # its storage goes, and with it the packed copy
    assert not onednn_linear._PACKED
    arr *= -2.0
    w = torch.from_numpy(arr)
    assert w._version == 0
    with torch.no_grad():
        got = onednn_linear.linear(x, w)
    torch.testing.assert_close(got.double(), float64_linear(x, w), rtol=1e-5, atol=1e-4)
    onednn_linear.clear()


@needs_onednn
def test_onednn_policy_routes_rows_under_inference_mode_only(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.ONEDNN)
    calls = spy(monkeypatch, onednn_linear, "linear")
    w = torch.randn(1536, 576)
    with torch.inference_mode():
        for rows in (1, 2, 8, 9):
            kernels.linear(torch.randn(rows, 576), w)
    assert calls == [(2, 576), (8, 576)]  # 1 row: the split; 9: F.linear
    with torch.no_grad():  # a gradient could still be asked of what no_grad computes with a tensor that needs one
        kernels.linear(torch.randn(4, 576), w)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear(torch.randn(4, 576), w).dtype == torch.bfloat16  # autocast's rules, as F.linear
    b = torch.randn(1536, requires_grad=True)  # a trainable bias (BitFit) beside a frozen weight
    x = torch.randn(4, 576)
    kernels.linear(x, w, b).sum().backward()
    assert len(calls) == 2
    torch.testing.assert_close(b.grad, torch.full((1536,), 4.0))


@needs_onednn
def test_decoding_on_the_onednn_path_matches_transformers(wide_checkpoint, two_threads, monkeypatch):
    ours, hf, calls, ids = wide_model_under(matvec.ONEDNN, wide_checkpoint, monkeypatch, onednn_linear, "linear", 1)
    with torch.inference_mode():
        want = hf(ids).logits
        got = prefill_then_decode(ours, ids)
    assert len(calls) == 12 * (2 * 4 + 1)  # every product of every batch-2 decode step
    # oneDNN's blocked sums round a little differently from MKL's (one logit in 344k lands 1.3e-5 off at the
    # default fp32 tolerance); each product's rounding is bounded rigorously in the float64 test above
    torch.testing.assert_close(got, want, rtol=1e-5, atol=5e-5)
    prompt = ids[:1, :7]
    hf_tokens = hf.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    ours_tokens = generate(ours, [prompt[0].tolist()], SamplingParams(max_new_tokens=12))[0].token_ids
    assert ours_tokens == hf_tokens[0, 7:].tolist()
    onednn_linear.clear()


@needs_onednn
def test_amd_avx512_policy_sends_products_of_two_rows_and_more_to_plain_onednn(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, onednn_linear, "linear_plain")
    w = torch.randn(1536, 576)
    with torch.inference_mode():
        for rows in (1, 2, 4, 5, 8, 9, 512):
            kernels.linear(torch.randn(rows, 1, 576), w)
        kernels.linear(torch.randn(5, 576), torch.randn(576, 1536).t())  # strided weight: oneDNN would copy it
        kernels.linear(torch.randn(16, 576), torch.randn(192, 576))  # 1.8M multiply-adds: MKL's call is cheaper
        kernels.linear(torch.randn(32, 576), torch.randn(192, 576))  # 3.5M: oneDNN
    # 1-4 rows of this narrow weight: linear_columns; 5-8 rows, and prefill-sized products
    assert calls == [(5, 1, 576), (8, 1, 576), (9, 1, 576), (512, 1, 576), (32, 576)]
    with torch.no_grad():  # a gradient could still be asked of what no_grad computes: the split keeps it
        kernels.linear(torch.randn(5, 576), w)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear(torch.randn(5, 576), w).dtype == torch.bfloat16  # autocast's rules, as F.linear
    x = torch.randn(5, 576, requires_grad=True)
    kernels.linear(x, w).sum().backward()
    torch.testing.assert_close(x.grad.double(), w.double().sum(0).expand(5, -1), rtol=1e-5, atol=1e-4)
    assert len(calls) == 5
    monkeypatch.setattr(matvec, "POLICY", matvec.INTEL)  # MKL runs at full speed there: nothing goes to oneDNN
    with torch.inference_mode():
        for rows in (2, 8, 512):
            kernels.linear(torch.randn(rows, 576), w)
    assert len(calls) == 5


@needs_onednn
def test_decoding_on_the_plain_onednn_path_matches_transformers(wide_checkpoint, two_threads, monkeypatch):
    """A prefill and batch-5 decoding under inference mode, as generation runs them: every product on oneDNN's
    plain path (1-4 rows of this model's narrow weights go to linear_columns: the next test)."""
    path, hf = wide_checkpoint
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    ours = load_model(path)
    calls = spy(monkeypatch, onednn_linear, "linear_plain")
    ids = torch.randint(3, 8192, (5, 21), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = hf(ids).logits
        full = ours(ids)  # prefill: 105 rows, every product on oneDNN
        assert len(calls) == 2 * 4 + 1
        got = prefill_then_decode(ours, ids)
    assert len(calls) == 14 * (2 * 4 + 1)  # the full pass, the cached prefill, 12 decode steps
    # as on the prepacked path: oneDNN's blocked sums round a little differently from MKL's
    torch.testing.assert_close(full, want, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=5e-5)
    assert_batched_greedy_matches(ours, hf, [ids[0, :7].tolist(), ids[1, :5].tolist()])


@needs_onednn
@pytest.mark.parametrize("policy", ["AMD_AVX512", "ONEDNN"])
@pytest.mark.parametrize("rows", [2, 5, 32])  # linear_columns (amd-avx512), the few-row branch, the prefill branch
def test_a_bias_onednn_would_misread_keeps_the_other_paths(two_threads, monkeypatch, policy, rows):
    """oneDNN reads a bias as N contiguous fp32 values; F.linear broadcasts a strided or 0-dim one."""
    monkeypatch.setattr(matvec, "POLICY", getattr(matvec, policy))
    torch.manual_seed(0)
    w, x = torch.randn(1536, 576), torch.randn(rows, 576)
    for b in (torch.randn(1536), torch.randn(3072)[::2], torch.tensor(1.0), torch.randn(1), torch.randn(1, 1536)):
        with torch.inference_mode():
            got = kernels.linear(x, w, b)
        torch.testing.assert_close(got.double(), float64_linear(x, w, b), rtol=1e-5, atol=1e-4)
    onednn_linear.clear()


@needs_onednn
def test_prefill_sized_products_keep_autograd_and_autocast_off_inference_mode(two_threads, monkeypatch):
    """The oneDNN op has no autograd kernel: a product whose gradient is wanted must never reach linear_plain
    (the training path, an autograd.Function around it, takes those: the tests below)."""
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, onednn_linear, "linear_plain")
    torch.manual_seed(0)
    w, b = torch.randn(1536, 576) / 24, torch.randn(1536)
    x = torch.randn(32, 576, requires_grad=True)
    kernels.linear(x, w, b).sum().backward()
    torch.testing.assert_close(x.grad.double(), w.double().sum(0).expand(32, -1), rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        kernels.linear(x, w, b)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear(torch.randn(32, 576), w, b).dtype == torch.bfloat16
    with torch.inference_mode():
        assert kernels.linear(torch.randn(32, 576, dtype=torch.float64), w.double()).dtype == torch.float64
        kernels.linear(torch.randn(32, 576).half(), w.half())  # fp16: not oneDNN's fp32 path
    assert not calls
    with torch.inference_mode():  # and the same product in inference mode does take it
        kernels.linear(x.detach(), w, b)
    assert len(calls) == 1


# -- the training path: products that need gradients on oneDNN (amd-avx512) -----------------------------------

def fp32_bound(a, b):
    """How far an fp32 product of a [M, K] and b [K, N] may land from the exact one: K+1 roundings of the sum of
    the terms' magnitudes (the bound the split's test uses)."""
    return (a.shape[-1] + 1) * 2.0 ** -24 * (a.double().abs() @ b.double().abs())


@needs_onednn
@pytest.mark.parametrize("shape, rows", [((1536, 576), 64), ((576, 1536), 300), ((192, 192), 4096)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("trained", ["all", "input only", "weight only"])  # full FT, a frozen (LoRA) base, layer 1
def test_training_products_on_onednn_equal_float64(two_threads, monkeypatch, shape, rows, bias, trained):
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, onednn_linear, "linear_trainable")
    torch.manual_seed(0)
    n, k = shape
    x = torch.randn(2, rows // 2, k).requires_grad_(trained != "weight only")
    w = (torch.randn(n, k) / k ** 0.5).requires_grad_(trained != "input only")
    b = torch.randn(n).requires_grad_(trained != "input only") if bias else None
    y = kernels.linear(x, w, b)
    assert calls == [tuple(x.shape)] and y.shape == (2, rows // 2, n)
    dy = torch.randn_like(y)
    y.backward(dy)
    x2, dy2 = x.detach().reshape(-1, k), dy.reshape(-1, n)
    want_y = float64_linear(x2, w.detach(), None if b is None else b.detach())
    extra = 0 if b is None else b.detach().double().abs()
    y_err = (y.detach().reshape(-1, n).double() - want_y).abs()
    assert (y_err <= fp32_bound(x2, w.detach().T) + extra * 2 ** -23).all()
    if x.requires_grad:
        want = dy2.double() @ w.detach().double()
        assert ((x.grad.reshape(-1, k).double() - want).abs() <= fp32_bound(dy2, w.detach())).all()
    else:
        assert x.grad is None
    if w.requires_grad:
        want = dy2.double().T @ x2.double()
        assert ((w.grad.double() - want).abs() <= fp32_bound(dy2.T, x2)).all()
    if b is not None and b.requires_grad:
        torch.testing.assert_close(b.grad.double(), dy2.double().sum(0), rtol=1e-5, atol=1e-4)


@needs_onednn
@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch.backends.mkldnn.flags() warns about Intel GPUs
def test_training_path_gates(two_threads, monkeypatch):
    """Only reverse-mode autograd outside inference mode, fp32, no autocast, oneDNN on, a contiguous weight; under
    no_grad (evaluation, the transformers parity tests) F.linear keeps MKL's exact results."""
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, onednn_linear, "linear_trainable")
    torch.manual_seed(0)
    w = (torch.randn(1536, 576) / 24).requires_grad_()
    x = torch.randn(64, 576)
    with torch.no_grad():
        assert torch.equal(kernels.linear(x, w), F.linear(x, w))
    kernels.linear(x, w.detach())  # nothing needs a gradient
    kernels.linear(x, torch.randn(576, 1536).t().requires_grad_())  # strided weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear(x, w).dtype == torch.bfloat16
    with torch.backends.mkldnn.flags(enabled=False):
        kernels.linear(x, w)
    monkeypatch.setattr(matvec, "POLICY", matvec.INTEL)
    kernels.linear(x, w)
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    assert not calls
    # forward-mode AD and torch.func: the autograd.Function implements neither, so F.linear computes them
    import torch.autograd.forward_ad as fwAD
    t = torch.randn_like(x)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(kernels.linear(fwAD.make_dual(x, t), w.detach())).tangent
    torch.testing.assert_close(tangent, F.linear(t, w.detach()))
    g = torch.func.grad(lambda ww: kernels.linear(x, ww).square().sum())(w.detach())
    torch.testing.assert_close(g, 2 * F.linear(x, w.detach()).T @ x, rtol=1e-4, atol=1e-3)
    assert not calls
    kernels.linear(x, w)
    assert calls == [(64, 576)]


@needs_onednn
def test_training_path_second_derivatives(two_threads, monkeypatch):
    """A backward with create_graph=True runs on torch's ops, so a gradient penalty can differentiate it again."""
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, onednn_linear, "linear_trainable")
    torch.manual_seed(0)
    x = torch.randn(64, 576, requires_grad=True)
    w = (torch.randn(1536, 576) / 24).requires_grad_()
    (gx,) = torch.autograd.grad(kernels.linear(x, w).square().sum(), x, create_graph=True)
    gx.square().sum().backward()  # d/dW of |2 x W.T W|^2
    assert calls == [(64, 576)]
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    (g64,) = torch.autograd.grad(F.linear(x64, w64).square().sum(), x64, create_graph=True)
    g64.square().sum().backward()
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-4, atol=1e-4 * w64.grad.abs().max().item())


@needs_onednn
def test_training_steps_on_onednn_match_transformers_gradients(wide_checkpoint, two_threads, monkeypatch):
    """A full fine-tuning loss and backward of the wide model under amd-avx512: every projection on the training
    path, the loss and every parameter's gradient as transformers computes them (MKL, fp32)."""
    path, hf = wide_checkpoint
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    ours = load_model(path).train()
    calls = spy(monkeypatch, onednn_linear, "linear_trainable")
    ids = torch.randint(3, 8192, (2, 40), generator=torch.Generator().manual_seed(3))
    loss = F.cross_entropy(ours(ids)[:, :-1].reshape(-1, 8192), ids[:, 1:].reshape(-1))
    assert len(calls) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer and the head
    loss.backward()
    hf.zero_grad()
    hf_loss = hf(ids, labels=ids).loss
    hf_loss.backward()
    torch.testing.assert_close(loss, hf_loss, rtol=1e-5, atol=1e-5)
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        want = theirs[name].grad
        torch.testing.assert_close(p.grad, want, rtol=1e-3, atol=1e-4 * want.abs().max().item(), msg=name)
    hf.zero_grad()


@needs_onednn
@pytest.mark.parametrize("policy", ["AMD_AVX512", "INTEL"])
def test_fused_loss_products_on_onednn_equal_float64(two_threads, monkeypatch, policy):
    """The fused loss's two chunk products (logits, hidden-state gradient) on oneDNN under amd-avx512, MKL
    elsewhere; loss and both gradients as float64 cross-entropy gives them."""
    monkeypatch.setattr(matvec, "POLICY", getattr(matvec, policy))
    calls = spy(monkeypatch, onednn_linear, "linear_plain")
    g = torch.Generator().manual_seed(6)
    hidden = torch.randn(2, 150, 576, generator=g, requires_grad=True)
    weight = (torch.randn(4000, 576, generator=g) / 24).requires_grad_()
    targets = torch.randint(0, 4000, (2, 150), generator=g)
    targets[0, :40] = -100
    loss = kernels.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=96)
    dh, dw = torch.autograd.grad(loss, (hidden, weight))
    assert len(calls) == (2 * 3 if policy == "AMD_AVX512" else 0)  # 260 kept rows in chunks of 96
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    want = F.cross_entropy((h64 @ w64.T).flatten(0, 1), targets.flatten())
    wdh, wdw = torch.autograd.grad(want, (h64, w64))
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dh.double(), wdh, rtol=1e-4, atol=1e-5 * wdh.abs().max().item())
    torch.testing.assert_close(dw.double(), wdw, rtol=1e-4, atol=1e-5 * wdw.abs().max().item())


@needs_onednn
@pytest.mark.parametrize("transform", ["grad", "vmap"])
def test_training_path_under_torch_func_with_closed_over_tensors(two_threads, monkeypatch, transform):
    """Under torch.func.grad/vmap a product of ordinary (unwrapped) tensors, a weight that requires grad closed over
    (a model's other parameters), must keep F.linear: the autograd.Function implements no functorch rule (it used to
    raise "must override the setup_context staticmethod")."""
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    torch.manual_seed(0)
    w = torch.randn(640, 600, requires_grad=True)
    x = torch.randn(64, 600)
    if transform == "grad":
        got = torch.func.grad(lambda z: (kernels.linear(x, w) * z).sum())(torch.ones(640))
        want = F.linear(x, w.detach()).sum(0)
    else:
        got = torch.func.vmap(lambda a: kernels.linear(x, w).sum() * a)(torch.ones(3))
        want = F.linear(x, w.detach()).sum().expand(3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


@needs_onednn
def test_frozen_weight_product_does_not_keep_its_input_alive(two_threads, monkeypatch):
    """F.linear with a frozen weight saves only the weight: its input is needed for no gradient. A frozen projection
    outside LoRA (o_proj, the MLP with peft's default q,v targets) kept its [tokens, in] input until the backward
    (a 2-layer 576/1536 model, LoRA on q,v, 2 x 512 tokens: saved activations 50.2 -> 69.0 MiB)."""
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    torch.manual_seed(0)
    x = torch.randn(512, 1536, requires_grad=True) * 2  # a non-leaf activation (e.g. swiglu's output)
    w = torch.randn(576, 1536)  # frozen
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.untyped_storage().data_ptr()) or t,
                                                  lambda t: t):
        y = kernels.linear(x, w)
    assert y.requires_grad
    assert x.untyped_storage().data_ptr() not in saved


def test_a_one_dimensional_weight_works_as_in_f_linear(two_threads):
    x, w = torch.randn(4, 16), torch.randn(16)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            torch.testing.assert_close(kernels.linear(x, w), F.linear(x, w))


@needs_onednn
@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch.backends.mkldnn.flags() warns about Intel GPUs
def test_onednn_switched_off_is_respected(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, onednn_linear, "linear_plain")
    w, x = torch.randn(1536, 576), torch.randn(5, 576)
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
        kernels.linear(x, w)
    assert not calls


# -- linear_columns: W @ X.T for 1-4 rows of a narrow weight (amd-avx512) --------------------------------------

@pytest.mark.parametrize("shape, rows", [((1536, 576), 1), ((1536, 576), 2), ((1536, 576), 3), ((1536, 576), 4),
                                         ((576, 1536), 1), ((576, 1536), 2), ((9216, 576), 2)])
@pytest.mark.parametrize("bias", [False, True])
def test_column_product_equals_float64(shape, rows, bias):
    torch.manual_seed(0)
    w = torch.randn(shape)
    b = torch.randn(shape[0]) if bias else None
    x = torch.randn(rows, 1, shape[1])
    got = matvec.linear_columns(x, w, b)
    assert got.shape == (rows, 1, shape[0]) and got.is_contiguous()
    terms = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    bound = (shape[1] + 1) * 2.0 ** -24 * terms  # as in test_split_product_equals_float64
    assert ((got.double() - float64_linear(x, w, b)).abs() <= bound).all()


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
def test_column_product_hands_mkl_the_fast_orientation(rows, monkeypatch):
    """The speed of linear_columns is all in the shape of its one product: W [N, K] on the left as stored, times
    2 or 4 columns, is what MKL streams fast (numbers in kernels/matvec.py's docstring). Values cannot tell a
    rewrite that loses it, so check the call itself: the weight uncopied on the left, the rows of x as an even
    number of columns on the right."""
    seen, real_mm = [], torch.mm

    def recording_mm(a, b, *args, **kwargs):
        seen.append((a, b))
        return real_mm(a, b, *args, **kwargs)
    monkeypatch.setattr(torch, "mm", recording_mm)
    w = torch.randn(1536, 576)
    matvec.linear_columns(torch.randn(rows, 1, 576), w)
    assert len(seen) == 1
    left, right = seen[0]
    assert left.data_ptr() == w.data_ptr() and left.shape == w.shape and left.stride() == w.stride()
    assert right.shape == (576, rows + rows % 2)


def test_who_takes_the_column_path(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    narrow, medium, wide, head = (torch.randn(1536, 576), torch.randn(576, 1536), torch.randn(576, 2048),
                                  torch.randn(9216, 576))

    def takes(rows, w):
        return matvec.wants_columns(torch.randn(rows, 1, w.shape[1]), w)
    assert [takes(r, narrow) for r in (1, 2, 3, 4, 5, 8)] == [True] * 4 + [False] * 2
    assert [takes(r, medium) for r in (1, 2, 3, 4)] == [True, True, False, False]  # K 1536: 1-2 rows only
    assert not any(takes(r, wide) for r in (1, 2))  # K 2048: no gain measured
    assert [takes(r, head) for r in (1, 2)] == [False, True]  # a 1-row head keeps the split
    assert not takes(2, torch.randn(192, 576))  # small weights keep F.linear
    assert not matvec.wants_columns(torch.randn(2, 576), torch.randn(576, 1536).t())  # strided weight
    assert not matvec.wants_columns(torch.randn(2, 576).double(), narrow.double())
    assert not matvec.wants_columns(torch.randn(2, 577), narrow)  # a wrong width gets F.linear's error
    with torch.autocast("cpu", dtype=torch.bfloat16):  # F.linear casts the bias too: leave it the product
        assert not matvec.wants_columns(torch.randn(2, 576), narrow)
        assert not matvec.wants_split(torch.randn(2, 576), narrow)
        assert kernels.linear(torch.randn(2, 576), narrow, torch.randn(1536)).dtype == torch.bfloat16
    for x, b in ((torch.randn(576), torch.randn(1, 1536)), (torch.randn(3, 1, 576), torch.randn(1536, 1))):
        try:  # bias broadcasting as F.linear's: same shape, or the same refusal
            want = F.linear(x, narrow, b)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                kernels.linear(x, narrow, b)
        else:
            assert kernels.linear(x, narrow, b).shape == want.shape
    with pytest.raises(RuntimeError):
        kernels.linear(torch.randn(2, 577), narrow)
    torch.set_num_threads(1)
    assert takes(2, narrow)  # measured at 1 thread too
    torch.set_num_threads(3)
    assert not takes(2, narrow)  # not measured beyond 2
    torch.set_num_threads(2)
    for policy in (matvec.GENERIC, matvec.INTEL, matvec.OFF, matvec.ONEDNN):
        monkeypatch.setattr(matvec, "POLICY", policy)
        assert not takes(2, narrow), policy.name


def test_column_path_carries_gradients(two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.AMD_AVX512)
    calls = spy(monkeypatch, matvec, "linear_columns")
    torch.manual_seed(0)
    w0, b0, x0 = torch.randn(1536, 576) / 24, torch.randn(1536), torch.randn(3, 576)
    grads = {}
    for name, fn, dtype in (("columns", kernels.linear, torch.float32), ("plain", F.linear, torch.float32),
                            ("float64", F.linear, torch.float64)):
        w, b, x = (t.to(dtype, copy=True).requires_grad_() for t in (w0, b0, x0))
        fn(x, w, b).square().sum().backward()
        grads[name] = (x.grad.double(), w.grad.double(), b.grad.double())
    assert calls == [(3, 576)]
    for got, plain, want in zip(grads["columns"], grads["plain"], grads["float64"]):
        slack = (plain - want).abs().max().item()
        assert (got - want).abs().max().item() <= 4 * slack + 1e-6


@needs_onednn  # the prefills go to oneDNN under this policy
def test_decoding_on_the_column_path_matches_transformers(wide_checkpoint, two_threads, monkeypatch):
    """Batch-1 and batch-2 decoding under inference mode, as generation runs it: the layers' products on
    linear_columns, the untied head on the split at batch 1 and on linear_columns at batch 2."""
    ours, hf, calls, ids = wide_model_under(matvec.AMD_AVX512, wide_checkpoint, monkeypatch, matvec,
                                            "linear_columns", 3)
    with torch.inference_mode():
        want = hf(ids).logits
        for batch in (1, 2):
            before = len(calls)
            got = prefill_then_decode(ours, ids[:batch])
            # every decode step: q/k/v, o, gate/up and down in each of 2 layers, and the head from batch 2 on
            assert len(calls) - before == 12 * (2 * 4 + (batch == 2))
            torch.testing.assert_close(got, want[:batch], rtol=1e-5, atol=5e-5)
    assert_batched_greedy_matches(ours, hf, [ids[0, :7].tolist(), ids[1, :5].tolist()])


@pytest.mark.parametrize("policy", ["GENERIC", "AMD_AVX512", "INTEL", "ONEDNN"])
def test_bias_shapes_and_dtypes_follow_f_linear_on_every_policy(two_threads, monkeypatch, policy):
    """The fast paths add the bias to the flattened product: a bias F.linear broadcasts over the leading dims, or
    refuses for its dtype, must get F.linear's answer (or its error); a vocabulary head's result is laid out as
    F.linear's (row-major), not a transposed view."""
    monkeypatch.setattr(matvec, "POLICY", getattr(matvec, policy))
    w, x = torch.randn(1536, 576), torch.randn(2, 1, 576)
    b3 = torch.randn(2, 1, 1536)
    torch.testing.assert_close(kernels.linear(x, w, b3), F.linear(x, w, b3))
    for dtype in (torch.float64, torch.bfloat16):
        with pytest.raises(RuntimeError):
            F.linear(x, w, torch.randn(1536, dtype=dtype))
        with pytest.raises(RuntimeError):
            kernels.linear(x, w, torch.randn(1536, dtype=dtype))
    head, rows = torch.randn(9216, 576), torch.randn(4, 576)
    with torch.inference_mode():
        y = kernels.linear(rows, head)
    assert y.is_contiguous() and y.stride() == F.linear(rows, head).stride()


@needs_onednn
@pytest.mark.parametrize("shape, rows", [((1536, 576), 1), ((576, 1536), 5), ((8192, 192), 8)])
@pytest.mark.parametrize("bias", [False, True])
def test_bf16_prepacked_products_equal_float64(shape, rows, bias, two_threads, monkeypatch):
    monkeypatch.setattr(matvec, "POLICY", matvec.ONEDNN)
    calls = spy(monkeypatch, onednn_linear, "linear")
    torch.manual_seed(0)
    w = torch.randn(shape).bfloat16()
    b = torch.randn(shape[0]).bfloat16() if bias else None
    x = torch.randn(rows, 1, shape[1]).bfloat16()
    with torch.inference_mode():
        got = kernels.linear(x, w, b)
    assert calls and got.shape == (rows, 1, shape[0]) and got.dtype == torch.bfloat16
    # fp32 sums over K (as in the fp32 tests), then the product and the bias add each rounded to bf16 (u = 2^-8)
    terms = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    bound = (2 * 2.0 ** -8 + (shape[1] + 1) * 2.0 ** -24) * terms
    assert ((got.double() - float64_linear(x, w, b)).abs() <= bound).all()
    onednn_linear.clear()


@needs_onednn
def test_bf16_and_fp32_views_of_one_storage_get_their_own_copies():
    """An fp32 weight and a bf16 view of the same bytes with the same address, shape and strides (and storage and
    version counter): the copy cached for one was handed to the other, and oneDNN refused the mixed product."""
    base = torch.randn(1536, 2 * 576).bfloat16()
    w32 = base.view(torch.float32)                                       # [1536, 576] fp32
    w16 = w32.view(torch.bfloat16).as_strided((1536, 576), (576, 1))    # [1536, 576] bf16, the same bytes
    x32, x16 = torch.randn(3, 576), torch.randn(3, 576).bfloat16()
    with torch.inference_mode():
        onednn_linear.linear(x32, w32)
        got = onednn_linear.linear(x16, w16)
        again = onednn_linear.linear(x32, w32)
    torch.testing.assert_close(got, F.linear(x16, w16))
    assert again.dtype == torch.float32 and len(onednn_linear._PACKED) == 2
    onednn_linear.clear()


@needs_onednn
def test_bf16_products_of_few_rows_go_to_the_prepacked_copy_only_where_asked(two_threads, monkeypatch):
    calls = spy(monkeypatch, onednn_linear, "linear")
    w = torch.randn(1536, 576).bfloat16()
    for policy in (matvec.AMD_AVX512, matvec.GENERIC):  # the default policies leave bf16 to F.linear (no copy)
        monkeypatch.setattr(matvec, "POLICY", policy)
        with torch.inference_mode():
            kernels.linear(torch.randn(2, 576).bfloat16(), w)
    assert calls == []
    monkeypatch.setattr(matvec, "POLICY", matvec.ONEDNN)
    with torch.inference_mode():
        for rows in (1, 8, 9):
            kernels.linear(torch.randn(rows, 576).bfloat16(), w)
        kernels.linear(torch.randn(2, 192).bfloat16(), torch.randn(576, 192).bfloat16())  # a small weight
    with torch.no_grad():  # the copy is outside autograd: only inference mode may use it
        kernels.linear(torch.randn(2, 576).bfloat16(), w)
    assert calls == [(1, 576), (8, 576)]
    onednn_linear.clear()


@needs_onednn
def test_bf16_decoding_on_the_prepacked_copy_is_as_close_to_fp32_as_transformers_bf16(wide_checkpoint, two_threads,
                                                                                      monkeypatch):
    """The yardstick is transformers' own bf16 model: our bf16 logits may be no further from transformers' fp32
    logits than transformers' bf16 logits are (twice that, for a different summation order), every position."""
    import copy
    path, hf = wide_checkpoint
    monkeypatch.setattr(matvec, "POLICY", matvec.ONEDNN)
    ours = load_model(path, dtype="bfloat16")
    calls = spy(monkeypatch, onednn_linear, "linear")
    ids = torch.randint(3, 8192, (2, 21), generator=torch.Generator().manual_seed(3))
    hf16 = copy.deepcopy(hf).to(torch.bfloat16)
    with torch.inference_mode():
        want, hf_bf16 = hf(ids).logits, hf16(ids).logits.float()
        got = prefill_then_decode(ours, ids).float()
    assert len(calls) == 12 * (2 * 4 + 1)  # every product of every batch-2 decode step
    yardstick = (hf_bf16 - want).abs().max().item()
    assert 0 < (got - want).abs().max().item() <= 2 * yardstick
    onednn_linear.clear()
