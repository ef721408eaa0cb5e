"""LoRA against peft (the oracle): same base + same adapter -> same logits; adapter files load both ways."""
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import (AdapterError, LoraConfig, LoRALinear, base_state_dict, inject_lora, load_adapter,
                           lora_modules, merge_lora, save_adapter, target_names, unmerge_lora)
from lora_tiny import randomize_lora

peft = pytest.importorskip("peft")
VARIANTS = ["qwen2-tied", "llama-linear-tied-bias", "qwen3"]


def _ids(seed=0, B=2, T=11):
    return torch.randint(0, 257, (B, T), generator=torch.Generator().manual_seed(seed))


def _ours(ckpt):
    return minagent.load_model(ckpt, dtype="float32")


@pytest.mark.parametrize("variant", VARIANTS)
def test_our_adapter_loads_in_peft_with_same_logits(hf_checkpoint, tmp_path, variant):
    ckpt, _ = hf_checkpoint(variant)
    ours = _ours(ckpt)
    cfg = LoraConfig(r=4, alpha=8, target_modules="all-linear", base_model_name_or_path=str(ckpt))
    wrapped = inject_lora(ours, cfg)
    assert "lm_head" not in wrapped and len(wrapped) == 7 * 2  # 7 linear layers per block, 2 blocks
    randomize_lora(ours, 1)
    save_adapter(ours, tmp_path / "adapter")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = hf(_ids()).logits
    pm = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    ids = _ids()
    with torch.no_grad():
        want, got = pm(ids).logits, ours(ids)
    assert (want - base_logits).abs().max() > 1e-2  # the adapter really changes the output
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_saved_adapter_loads_in_ours(hf_checkpoint, tmp_path, rslora):
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pcfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                           use_rslora=rslora, task_type="CAUSAL_LM")
    pm = peft.get_peft_model(hf, pcfg).eval()
    randomize_lora(pm, 2)
    pm.save_pretrained(tmp_path / "peft")
    ours = _ours(ckpt)
    cfg = load_adapter(ours, tmp_path / "peft")
    assert cfg.use_rslora == rslora
    scale = 16 / math.sqrt(8) if rslora else 16 / 8
    assert all(m.scale == pytest.approx(scale) for m in lora_modules(ours).values())
    assert sorted(n.rsplit(".", 1)[-1] for n in lora_modules(ours)) == sorted(["q_proj", "v_proj", "down_proj"] * 2)
    ids = _ids(3)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), pm(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("targets", [["model.layers.0.self_attn.q_proj"], ["layers.1.mlp.down_proj", "k_proj"]])
def test_layer_specific_targets_round_trip(hf_checkpoint, tmp_path, targets):
    """A target list naming one layer's module: saved, it must re-target that module only, in ours and in peft."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    ours = _ours(ckpt)
    wrapped = inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=targets))
    randomize_lora(ours, 4)
    save_adapter(ours, tmp_path / "adapter")
    again = _ours(ckpt)
    load_adapter(again, tmp_path / "adapter")
    pm = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32),
                                        tmp_path / "adapter").eval()
    in_peft = [n.removeprefix("base_model.model.") for n, m in pm.named_modules()
               if isinstance(m, peft.tuners.lora.Linear)]
    assert sorted(lora_modules(again)) == sorted(in_peft) == sorted(wrapped)
    ids = _ids(5)
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids), rtol=0, atol=0)
        torch.testing.assert_close(again(ids), pm(ids).logits, rtol=1e-5, atol=1e-5)


def test_merge_unmerge_and_merged_export_loads_in_transformers(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("mistral")
    ours = _ours(ckpt)
    before = {k: v.clone() for k, v in base_state_dict(ours).items()}
    inject_lora(ours, LoraConfig(r=4, alpha=16, target_modules=["q", "k", "v", "o", "gate", "up", "down"]))
    randomize_lora(ours, 4)
    ids = _ids(5)
    with torch.no_grad():
        unmerged = ours(ids)
        merge_lora(ours)
        merged = ours(ids)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    # the merged weights differ from the base where LoRA sits, and only there
    after = base_state_dict(ours)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.endswith("_proj.weight")}
    # export: transformers loads the merged checkpoint and computes the adapter's logits
    cfg = ours.config.to_hf_dict()
    from minagent.weights import save_hf_checkpoint
    save_hf_checkpoint(after, cfg, tmp_path / "merged")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, unmerged, rtol=1e-5, atol=1e-5)
    unmerge_lora(ours)
    for k, v in base_state_dict(ours).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), unmerged, rtol=1e-5, atol=1e-5)


def test_only_lora_parameters_train_and_fresh_adapter_is_identity(hf_checkpoint):
    ckpt, hf = hf_checkpoint("qwen2-tied")
    ours = _ours(ckpt)
    inject_lora(ours, LoraConfig(r=2, alpha=4, dropout=0.1, target_modules=["q_proj", "v_proj"]))
    trainable = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(isinstance(m, LoRALinear) for m in lora_modules(ours).values())
    ours.eval()
    ids = _ids(6)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=1e-5, atol=1e-5)  # B = 0: no change


def test_target_matching_follows_peft(hf_checkpoint):
    ckpt, hf = hf_checkpoint("llama-gqa")
    ours = _ours(ckpt)
    for targets in (["q_proj", "down_proj"], r".*\.1\.self_attn\.(k|o)_proj", "all-linear"):
        pm = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(ckpt),
                                 peft.LoraConfig(r=2, target_modules=targets))
        want = sorted(n.removeprefix("base_model.model.") for n, m in pm.named_modules()
                      if isinstance(m, peft.tuners.lora.Linear))
        assert sorted(target_names(ours, targets)) == want
    with pytest.raises(ValueError, match="match no linear layer"):
        target_names(ours, ["qkv"])


def test_bad_adapter_files(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("llama-gqa")
    ours = _ours(ckpt)
    inject_lora(ours, LoraConfig(r=2, alpha=4, target_modules=["q_proj"]))
    save_adapter(ours, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**cfg, "r": 3}))
    with pytest.raises(AdapterError, match=r"adapter_model.safetensors: tensor .*q_proj.lora_A.weight' has shape"):
        load_adapter(_ours(ckpt), tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(AdapterError, match="use_dora=True is not supported"):
        load_adapter(_ours(ckpt), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="adapter_config.json: not found"):
        load_adapter(_ours(ckpt), tmp_path / "missing")


def test_training_gradients_equal_peft(hf_checkpoint):
    """The lean backward (LoRAUpdate) against autograd through peft's modules, dropout off: same loss, same
    gradient for every A and B, and for the embeddings (the gradient that flows back through x)."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    hf.get_input_embeddings().weight.requires_grad_(True)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM")).train()
    hf.get_input_embeddings().weight.requires_grad_(True)
    randomize_lora(pm, 5)
    ours = _ours(ckpt)
    inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules="all-linear"))
    ours.train()
    ours.model.embed_tokens.weight.requires_grad_(True)
    with torch.no_grad():
        theirs = {n.removeprefix("base_model.model."): p for n, p in pm.named_parameters() if "lora_" in n}
        for n, p in ours.named_parameters():
            if "lora_" in n:
                p.copy_(theirs[n.replace(".lora_A.weight", ".lora_A.default.weight")
                                .replace(".lora_B.weight", ".lora_B.default.weight")])
    ids = _ids(4)
    pm(input_ids=ids, labels=ids).loss.backward()
    logits = ours(ids)
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    checked = 0
    for n, p in ours.named_parameters():
        if "lora_" in n:
            want = theirs[n.replace(".lora_A.weight", ".lora_A.default.weight")
                          .replace(".lora_B.weight", ".lora_B.default.weight")].grad
            torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-6)
            checked += 1
    assert checked == 2 * 7 * 2
    torch.testing.assert_close(ours.model.embed_tokens.weight.grad, hf.get_input_embeddings().weight.grad,
                               rtol=1e-4, atol=1e-6)


def test_dropout_backward_uses_the_forward_mask():
    """With dropout on, the gradients equal float64 autograd through the written-out expression with the mask the
    forward drew (same global seed); the mask keeps about 1 - p of the entries, in every 16-bit lane."""
    from minagent.lora import LoRAUpdate, dropout_keep_mask

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 12, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.randn(4, 12, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    p, scale = 0.3, 2.5
    torch.manual_seed(11)
    keep, q = dropout_keep_mask(x.shape, p)
    keep = keep.double()
    assert 0 < keep.sum() < keep.numel() and abs(q - (1 - p)) <= 1 / 65536
    torch.manual_seed(0)
    big, q_big = dropout_keep_mask((400_001,), p)
    assert q_big == q
    lanes = big[:400_000].view(-1, 4).double().mean(0)  # the four 16-bit cuts of each 64-bit draw
    assert (lanes - q).abs().max() < 0.006, lanes
    pairs = (big[:400_000].view(-1, 4)[:, 0] & big[:400_000].view(-1, 4)[:, 1]).double().mean()
    assert abs(pairs.item() - q * q) < 0.006  # independent, not copies of one another
    y = torch.randn(3, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)  # the base layer's output
    torch.manual_seed(11)
    out = LoRAUpdate.apply(x, y, a, b, scale, p)
    got = torch.autograd.grad(out, (x, y, a, b), dy)
    want_out = y + ((x * keep / q) @ a.T @ b.T) * scale
    want = torch.autograd.grad(want_out, (x, y, a, b), dy)
    torch.testing.assert_close(out, want_out)
    for name, w, h in zip(("dx", "dy", "dA", "dB"), want, got):
        torch.testing.assert_close(h, w, msg=name)


@pytest.mark.parametrize("autocast", [False, True])
def test_lora_update_never_rounds_the_base_output(autocast):
    """A fresh adapter (B = 0) must return the base layer's output unchanged, also when that output is in a
    wider dtype than the adapter's products (an fp64 base: fp32 adapters, or bf16 under CPU autocast, which
    leaves fp64 alone)."""
    from minagent.lora import LoRAUpdate

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 8, generator=g, dtype=torch.float64, requires_grad=True) * 1.2345678901
    a = torch.randn(4, 16, generator=g, requires_grad=True)
    b = torch.zeros(8, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = LoRAUpdate.apply(x, y, a, b, 2.0, 0.0)
    assert out.dtype == torch.float64 and torch.equal(out, y)


def test_lora_update_under_autocast_runs_every_product_in_autocast_dtype():
    """On a GPU the LoRA step runs under bf16 autocast, where peft's adapters are plain linear layers: bf16
    products forward and backward, fp32 gradients for the fp32 A and B. The lean Function must compute the same
    thing (within bf16 rounding: it adds y and the scale inside one addmm) and must run every product, backward
    included, in bf16 (it used to run its backward in fp32, with fp32 copies of every activation)."""
    from torch.utils._python_dispatch import TorchDispatchMode  # sees every aten op, inside the Function too

    from minagent.lora import LoRAUpdate

    aten = torch.ops.aten
    products = (aten.mm.default, aten.addmm.default, aten.bmm.default)

    class RecordProducts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in products:
                self.dtypes.append({t.dtype for t in args if isinstance(t, torch.Tensor)})
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 48, generator=g).to(torch.bfloat16).requires_grad_()
    y = torch.randn(3, 5, 24, generator=g).to(torch.bfloat16).requires_grad_()
    a = (0.1 * torch.randn(4, 48, generator=g)).requires_grad_()
    b = (0.1 * torch.randn(24, 4, generator=g)).requires_grad_()
    dy = torch.randn(3, 5, 24, generator=g).to(torch.bfloat16)
    with RecordProducts() as record:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = LoRAUpdate.apply(x, y, a, b, 2.5, 0.0)
        got = torch.autograd.grad(out, (x, y, a, b), dy)
    assert len(record.dtypes) == 6 and all(d == {torch.bfloat16} for d in record.dtypes), record.dtypes  # 2 + 4
    # the same numbers as float64 math, to within bf16 rounding of each result
    x64, y64, a64, b64 = (t.detach().double().requires_grad_() for t in (x, y, a, b))
    want_out = y64 + (x64 @ a64.T @ b64.T) * 2.5
    want = torch.autograd.grad(want_out, (x64, y64, a64, b64), dy.double())
    assert out.dtype == torch.bfloat16
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    for name, h, w in zip(("out", "dx", "dy", "dA", "dB"), (out, *got), (want_out, *want)):
        torch.testing.assert_close(h.double(), w.detach(), rtol=0, atol=2**-6 * w.abs().max().item(), msg=name)


def _two_rows():
    return torch.tensor([[1, 2, 3, 5, 6, 7, 8, 9, 10], [5, 6, 3, 4, 5, 6, 7, 8, 9]])


@pytest.mark.parametrize("extra", [dict(init_lora_weights="pissa"), dict(init_lora_weights="olora"),
                                   dict(alora_invocation_tokens=[5, 6]), dict(layers_to_transform=0)])
def test_peft_adapter_we_cannot_reproduce_is_refused(hf_checkpoint, tmp_path, extra):
    """PiSSA/OLoRA rewrite the base weights (W - BA) when peft builds the adapter, also on load; aLoRA only
    applies the update after the invocation tokens; layers_to_transform=0 (an int, falsy) adapts layer 0 only
    (now loaded as peft does). Loading such an adapter must match peft or refuse naming the field (PiSSA/OLoRA/aLoRA used to load silently,
    logits 1.4-2.5 off peft's; layers_to_transform=0 was refused only for "no weights for" layer 1's adapters)."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj"], **extra))
    randomize_lora(pm, 2)  # a trained adapter: B != 0
    pm.save_pretrained(tmp_path / "a")
    oracle = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32),
                                            tmp_path / "a").eval()
    ours = minagent.load_model(ckpt, dtype="float32")
    try:
        load_adapter(ours, tmp_path / "a")
    except AdapterError as e:
        assert any(k in str(e) for k in extra), str(e)  # refused, naming the field: fine
        return
    with torch.no_grad():
        torch.testing.assert_close(ours(_two_rows()), oracle(_two_rows()).logits, rtol=1e-4, atol=1e-4)


def test_lora_on_tied_lm_head_merges_to_the_unmerged_logits(hf_checkpoint, tmp_path):
    """lm_head shares its weight with embed_tokens: merging B@A into it must not change the embeddings (it did:
    logits 1.9-2.4 off); the merged model is untied, and so is its export, which transformers loads."""
    ckpt, _ = hf_checkpoint("qwen2-tied")
    ours = minagent.load_model(ckpt, dtype="float32").eval()
    inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "lm_head"]))
    randomize_lora(ours, 1)
    with torch.no_grad():
        unmerged = ours(_two_rows())
        merge_lora(ours)
        merged = ours(_two_rows())
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert not ours.config.tie_word_embeddings
    from minagent.weights import save_hf_checkpoint
    state = base_state_dict(ours)
    save_hf_checkpoint(state, ours.config.to_hf_dict(), tmp_path / "merged")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(_two_rows()).logits, unmerged, rtol=1e-5, atol=1e-5)


def test_load_adapter_into_existing_layers_matches_peft_or_refuses(hf_checkpoint, tmp_path):
    """load_adapter(inject=False) fills LoRA layers already in the model: with the adapter's own alpha they give
    peft's logits; a layer of another scale or a merged one is refused (both used to load silently: the layers kept
    their own scale, logits ~0.65 off peft's, or kept the old update in the base weight)."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"],
                                                 task_type="CAUSAL_LM")).eval()
    randomize_lora(pm, 7)
    pm.save_pretrained(tmp_path / "peft")
    ids = _ids(8)
    same = _ours(ckpt)
    inject_lora(same, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "up_proj"]))
    load_adapter(same, tmp_path / "peft", inject=False)
    with torch.no_grad():
        torch.testing.assert_close(same(ids), pm(ids).logits, rtol=1e-5, atol=1e-5)
    other = _ours(ckpt)
    inject_lora(other, LoraConfig(r=4, alpha=4, target_modules=["q_proj", "up_proj"]))
    with pytest.raises(AdapterError, match="lora_alpha=8"):
        load_adapter(other, tmp_path / "peft", inject=False)
    merge_lora(same)
    with pytest.raises(AdapterError, match="is merged"):
        load_adapter(same, tmp_path / "peft", inject=False)
