"""LoRA against peft (the oracle): same base + same adapter -> same logits; adapter files load both ways."""
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import (AdapterError, LoraConfig, LoRALinear, base_state_dict, inject_lora, load_adapter,
                           lora_modules, merge_lora, save_adapter, target_names, unmerge_lora)

peft = pytest.importorskip("peft")
VARIANTS = ["qwen2-tied", "llama-linear-tied-bias", "qwen3"]


def _ids(seed=0, B=2, T=11):
    return torch.randint(0, 257, (B, T), generator=torch.Generator().manual_seed(seed))


def _randomize_lora(model, seed):
    """A fresh adapter has B = 0 (no effect); give every A and B random values so the test can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _ours(ckpt):
    return minagent.load_model(ckpt, dtype="float32")


@pytest.mark.parametrize("variant", VARIANTS)
def test_our_adapter_loads_in_peft_with_same_logits(hf_checkpoint, tmp_path, variant):
    ckpt, _ = hf_checkpoint(variant)
    ours = _ours(ckpt)
    cfg = LoraConfig(r=4, alpha=8, target_modules="all-linear", base_model_name_or_path=str(ckpt))
    wrapped = inject_lora(ours, cfg)
    assert "lm_head" not in wrapped and len(wrapped) == 7 * 2  # 7 linear layers per block, 2 blocks
    _randomize_lora(ours, 1)
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
    _randomize_lora(pm, 2)
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


def test_merge_unmerge_and_merged_export_loads_in_transformers(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("mistral")
    ours = _ours(ckpt)
    before = {k: v.clone() for k, v in base_state_dict(ours).items()}
    inject_lora(ours, LoraConfig(r=4, alpha=16, target_modules=["q", "k", "v", "o", "gate", "up", "down"]))
    _randomize_lora(ours, 4)
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
