"""LoRA on a bf16 base without autocast, against peft (the oracle): peft adds the fp32 update to the bf16 base output
in fp32 and rounds the sum once; ours rounded the update to bf16 first and added in bf16 (two roundings), so the
logits of a loaded adapter were 0.035 off peft's while the base model's logits equal transformers' exactly."""
import pytest
import torch
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import load_adapter
from lora_tiny import randomize_lora

peft = pytest.importorskip("peft")

IDS = torch.tensor([[1, 2, 3, 5, 6, 7, 8, 9, 10], [5, 6, 3, 4, 5, 6, 7, 8, 9]])


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training-forward"])
def test_bf16_base_lora_logits_equal_peft(hf_checkpoint, tmp_path, grad):
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    randomize_lora(pm, 2)
    pm.save_pretrained(tmp_path / "a")
    oracle = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16),
                                            tmp_path / "a").eval()
    ours = minagent.load_model(ckpt, dtype="bfloat16").eval()
    load_adapter(ours, tmp_path / "a")
    with torch.no_grad():
        want = oracle(IDS).logits.float()
    with torch.set_grad_enabled(grad):  # with gradients on, the update runs through LoRAUpdate
        got = ours(IDS).float()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
