"""LoRA on an fp64 base against peft (the oracle), which keeps the adapter in the base's dtype when that is wider
than fp32: the update, its gradients and merge/unmerge then hold fp64 precision. Ours kept A and B in fp32 and
merged through fp32, so an fp64 model's LoRA output and gradients were ~1e-7 off peft's, merging rounded W itself to
fp32 (3e-8 off merge_and_unload's weights) and unmerge could not restore W."""
import pytest
import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import LoraConfig, LoRALinear, base_state_dict, inject_lora, merge_lora, save_adapter, unmerge_lora

peft = pytest.importorskip("peft")


class _OneLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(24, 40, bias=True)

    def forward(self, x):
        return self.proj(x)


def _random_(tensors, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.3)


def test_lora_layer_on_fp64_base_matches_peft_in_fp64():
    """One adapted layer, forward and backward, against peft's lora.Linear on the same fp64 weights."""
    torch.manual_seed(0)
    base = _OneLinear().double()
    pm = peft.get_peft_model(_OneLinear().double(), peft.LoraConfig(r=3, lora_alpha=5, target_modules=["proj"],
                                                                        use_rslora=True))
    peft_layer = pm.base_model.model.proj
    base.proj.load_state_dict(peft_layer.base_layer.state_dict())
    ours = LoRALinear(base.proj, r=3, alpha=5, use_rslora=True)
    assert ours.lora_A.weight.dtype == peft_layer.lora_A["default"].weight.dtype == torch.float64
    _random_([ours.lora_A.weight, ours.lora_B.weight], 1)
    with torch.no_grad():
        peft_layer.lora_A["default"].weight.copy_(ours.lora_A.weight)
        peft_layer.lora_B["default"].weight.copy_(ours.lora_B.weight)
    x = torch.randn(2, 5, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(x1), pm(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    w = torch.randn(y1.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    for mine, theirs in ((ours.lora_A.weight, peft_layer.lora_A["default"].weight),
                         (ours.lora_B.weight, peft_layer.lora_B["default"].weight), (x1, x2)):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-12, atol=1e-12)


def test_merge_on_fp64_base_equals_peft_merge_and_unmerge_restores(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("llama-gqa")
    ours = minagent.load_model(ckpt, dtype="float32").double()
    original = {k: v.clone() for k, v in base_state_dict(ours).items()}
    inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    _random_([p for n, p in sorted(ours.named_parameters()) if "lora_" in n], 4)
    save_adapter(ours, tmp_path / "a")
    merge_lora(ours)
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).double()
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "a").merge_and_unload().state_dict()
    for k, v in base_state_dict(ours).items():
        torch.testing.assert_close(v, theirs[k], rtol=0, atol=1e-13, msg=k)
    unmerge_lora(ours)
    for k, v in base_state_dict(ours).items():
        torch.testing.assert_close(v, original[k], rtol=0, atol=1e-13, msg=k)
