"""LoraConfig.extra (adapter_config.json fields written back by save_adapter) and fresh inits, against peft (the
oracle). extra={"init_lora_weights": "pissa"} or {"layer_replication": ...} used to be accepted: we trained plain
LoRA and saved an adapter that peft loads as PiSSA / with replicated layers (logits 0.6 / 1.1 off ours). And a
fresh adapter ignored init_lora_weights "gaussian" / False / "orthogonal" (always A kaiming, B zero) while the
saved config claimed them."""
import pytest
import torch
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import LoraConfig, inject_lora, lora_modules, save_adapter
from lora_tiny import randomize_lora

peft = pytest.importorskip("peft")

IDS = torch.tensor([[1, 2, 3, 5, 6, 7, 8, 9, 10], [5, 6, 3, 4, 5, 6, 7, 8, 9]])


@pytest.mark.parametrize("extra", [{"init_lora_weights": "pissa"}, {"init_lora_weights": "olora"},
                                   {"layer_replication": [[0, 2], [1, 2]]}, {"use_dora": True},
                                   {"modules_to_save": ["lm_head"]}, {"init_lora_weights": "gaussian"}])
def test_adapter_saved_with_extra_fields_loads_in_peft_with_our_logits_or_is_refused(hf_checkpoint, tmp_path, extra):
    ckpt, _ = hf_checkpoint("llama-gqa")
    ours = minagent.load_model(ckpt, dtype="float32").eval()
    try:
        inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"], extra=extra))
    except ValueError as e:
        assert next(iter(extra)) in str(e) and "LoraConfig.extra" in str(e), str(e)
        return
    randomize_lora(ours, 3)
    save_adapter(ours, tmp_path / "a")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(hf, tmp_path / "a").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), pm(IDS).logits, rtol=1e-5, atol=1e-5)


def _fresh(model_lora_weights):
    """(all A values, all B values, max |B @ A|) of a fresh adapter, from {module: (A, B)}."""
    a = torch.cat([w[0].flatten() for w in model_lora_weights.values()])
    b = torch.cat([w[1].flatten() for w in model_lora_weights.values()])
    ba = max((w[1] @ w[0]).abs().max().item() for w in model_lora_weights.values())
    return a, b, ba


@pytest.mark.parametrize("init", [True, "gaussian", False, "orthogonal"])
def test_fresh_adapter_initialises_as_peft(hf_checkpoint, init):
    """Same distribution of A and B as peft's fresh adapter (std within 15%, B zero where peft's is), and
    B @ A = 0 exactly where peft's is (so W's logits are unchanged)."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=init, task_type="CAUSAL_LM"))
    theirs = {n: (m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach())
              for n, m in pm.named_modules() if isinstance(m, peft.tuners.lora.Linear)}
    torch.manual_seed(1)
    ours_model = minagent.load_model(ckpt, dtype="float32")
    inject_lora(ours_model, LoraConfig(r=4, alpha=8, target_modules="all-linear",
                                       extra={} if init is True else {"init_lora_weights": init}))
    ours = {n: (m.lora_A.weight.detach(), m.lora_B.weight.detach()) for n, m in lora_modules(ours_model).items()}
    (a1, b1, ba1), (a2, b2, ba2) = _fresh(ours), _fresh(theirs)
    assert a1.std().item() == pytest.approx(a2.std().item(), rel=0.15)
    assert b1.std().item() == pytest.approx(b2.std().item(), rel=0.15, abs=1e-12)
    assert (ba1 < 1e-6) == (ba2 < 1e-6)


def test_orthogonal_init_with_an_odd_rank_is_refused_as_in_peft(hf_checkpoint):
    ckpt, _ = hf_checkpoint("llama-gqa")
    with pytest.raises(ValueError, match="even"):
        peft.get_peft_model(AutoModelForCausalLM.from_pretrained(ckpt),
                            peft.LoraConfig(r=3, target_modules=["q_proj"], init_lora_weights="orthogonal"))
    with pytest.raises(ValueError, match="init_lora_weights='orthogonal' needs an even rank, got r=3"):
        inject_lora(minagent.load_model(ckpt, dtype="float32"),
                    LoraConfig(r=3, alpha=8, target_modules=["q_proj"], extra={"init_lora_weights": "orthogonal"}))
