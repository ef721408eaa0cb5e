"""peft LoRA configurations beyond the plain one, against peft itself (the oracle): MiCA's frozen B, adapters on
the LM head (whose files carry the head's base weight), and embedding targets (refused by name)."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import (AdapterError, LoraConfig, base_state_dict, inject_lora, load_adapter,
                           lora_modules, merge_lora, save_adapter)
from lora_tiny import randomize_lora

peft = pytest.importorskip("peft")


def _ids():
    return torch.randint(0, 257, (2, 9), generator=torch.Generator().manual_seed(0))


def _peft_adapter(ckpt, directory, **config):
    """A trained adapter written by peft's own save_pretrained."""
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", **config))
    randomize_lora(pm)
    pm.save_pretrained(directory)
    return directory


def _peft_load(ckpt, directory, **kw):
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    return peft.PeftModel.from_pretrained(hf, directory, **kw)


def _trainable(named_parameters):
    """Trainable LoRA tensors under one naming: 'layers.0.self_attn.q_proj.lora_B'."""
    out = set()
    for n, p in named_parameters:
        if p.requires_grad:
            n = n.removeprefix("base_model.model.").replace(".default", "").removesuffix(".weight")
            out.add(n)
    return out


def test_mica_adapter_trains_a_only_as_in_peft(hf_checkpoint, tmp_path):
    """MiCA (init_lora_weights="mica") freezes B; loading a MiCA adapter to train on used to leave B trainable
    (peft's is_trainable load freezes it), and re-saving it wrote init_lora_weights=True, so peft unfroze it too."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    targets = ["q_proj", "down_proj"]
    adapter = _peft_adapter(ckpt, tmp_path / "mica", target_modules=targets, init_lora_weights="mica")
    want = _trainable(_peft_load(ckpt, adapter, is_trainable=True).named_parameters())
    assert want and all(n.endswith("lora_A") for n in want)
    ours = minagent.load_model(ckpt, dtype="float32")
    load_adapter(ours, adapter)
    assert _trainable(ours.named_parameters()) == want
    with torch.no_grad():
        torch.testing.assert_close(ours(_ids()), _peft_load(ckpt, adapter).eval()(_ids()).logits,
                                   rtol=1e-5, atol=1e-5)
    # re-saved by us, peft still reads a MiCA adapter (B frozen when it trains on it)
    save_adapter(ours, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "adapter_config.json").read_text())["init_lora_weights"] == "mica"
    assert _trainable(_peft_load(ckpt, tmp_path / "again", is_trainable=True).named_parameters()) == want


def test_fresh_mica_adapter_starts_as_peft_does(hf_checkpoint):
    """A fresh MiCA adapter: B = the minor left singular vectors of W, A = 0 (a no-op), B frozen, as in peft."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj"],
                                                 init_lora_weights="mica", task_type="CAUSAL_LM"))
    ours = minagent.load_model(ckpt, dtype="float32")
    inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=["v_proj"], extra={"init_lora_weights": "mica"}))
    theirs = dict(pm.named_parameters())
    for n, p in ours.named_parameters():
        if "lora_" in n:
            q = theirs["base_model.model." + n.replace(".weight", ".default.weight")]
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert _trainable(ours.named_parameters()) == _trainable(pm.named_parameters())


@pytest.mark.parametrize("variant", ["llama-gqa", "qwen2-tied"])
def test_peft_adapter_on_lm_head_loads_with_peft_logits(hf_checkpoint, tmp_path, variant):
    """target_modules naming lm_head makes peft write the head's base weight too
    (`base_model.model.lm_head.base_layer.weight`, save_embedding_layers="auto"); such adapters were refused as
    'unexpected tensor'. They load now, tied head or not, with peft's logits."""
    ckpt, _ = hf_checkpoint(variant)
    adapter = _peft_adapter(ckpt, tmp_path / "head", target_modules=["q_proj", "lm_head"])
    from safetensors import safe_open
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        assert "base_model.model.lm_head.base_layer.weight" in f.keys()
    ours = minagent.load_model(ckpt, dtype="float32")
    load_adapter(ours, adapter)
    with torch.no_grad():
        want = _peft_load(ckpt, adapter).eval()(_ids()).logits
        torch.testing.assert_close(ours(_ids()), want, rtol=1e-5, atol=1e-5)


def test_adapter_base_weight_of_wrong_shape_is_refused(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("llama-gqa")
    adapter = _peft_adapter(ckpt, tmp_path / "head", target_modules=["lm_head"])
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.lm_head.base_layer.weight"
    tensors[key] = torch.cat([tensors[key], tensors[key][:3]])  # a resized vocabulary
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match=r"lm_head.base_layer.weight' has shape \(260, 64\), expected \(257, 64\)"):
        load_adapter(minagent.load_model(ckpt, dtype="float32"), adapter)


def test_embedding_target_is_refused_naming_target_modules(hf_checkpoint, tmp_path):
    """peft gives an embedding target an embedding LoRA (lora_embedding_A/B). We have none: a peft adapter with one
    was refused only as 'unexpected tensor', and inject_lora silently skipped the embedding (a different adapter
    than the config asks for)."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    adapter = _peft_adapter(ckpt, tmp_path / "emb", target_modules=["q_proj", "embed_tokens"])
    assert any("lora_embedding_A" in n for n, _ in
               _peft_load(ckpt, adapter).named_parameters())  # peft really adapts the embedding
    with pytest.raises(AdapterError, match=r"adapter_config.json: LoRA target_modules .* selects the embedding "
                                           r"layer 'model.embed_tokens'"):
        load_adapter(minagent.load_model(ckpt, dtype="float32"), adapter)
    with pytest.raises(ValueError, match="selects the embedding layer 'model.embed_tokens'"):
        inject_lora(minagent.load_model(ckpt, dtype="float32"),
                    LoraConfig(r=2, alpha=4, target_modules=r"model\.(embed_tokens|layers\.0\.mlp\.up_proj)"))


def _adapted(pm):
    return sorted(n.removeprefix("base_model.model.") for n, m in pm.named_modules()
                  if isinstance(m, peft.tuners.lora.Linear))


T3 = ["q_proj", "v_proj", "down_proj"]
SELECTIONS = {  # peft's per-module ranks/alphas and module selection; each used to be refused by name
    "rank+alpha pattern": dict(target_modules=T3, rank_pattern={"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
                               alpha_pattern={"down_proj": 3}),
    "patterns, first key wins": dict(target_modules=T3, rank_pattern={r"layers\.1\..*_proj": 6, "v_proj": 2}),
    "patterns+rslora": dict(target_modules=T3, use_rslora=True, rank_pattern={"down_proj": 2},
                            alpha_pattern={r"layers\.0\.self_attn\.v_proj": 5}),
    "layers_to_transform int": dict(target_modules=T3, layers_to_transform=1),
    "layers_to_transform+pattern": dict(target_modules=T3, layers_to_transform=[0], layers_pattern=["h", "layers"]),
    "full name ignores layers": dict(target_modules=["q_proj", "model.layers.1.mlp.down_proj"],
                                     layers_to_transform=[0]),
    "exclude list": dict(target_modules="all-linear", exclude_modules=["down_proj"]),
    "exclude regex": dict(target_modules=T3, exclude_modules=r".*\.0\.self_attn\..*"),
}


@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_peft_adapter_with_patterns_and_layer_selection_loads(hf_checkpoint, tmp_path, name):
    """rank_pattern / alpha_pattern / layers_to_transform / layers_pattern / exclude_modules as peft applies them:
    the same modules adapted, the same ranks (shapes), the same logits."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    adapter = _peft_adapter(ckpt, tmp_path / "a", **SELECTIONS[name])
    oracle = _peft_load(ckpt, adapter).eval()
    ours = minagent.load_model(ckpt, dtype="float32")
    load_adapter(ours, adapter)
    assert sorted(lora_modules(ours)) == _adapted(oracle)
    with torch.no_grad():
        torch.testing.assert_close(ours(_ids()), oracle(_ids()).logits, rtol=1e-5, atol=1e-5)


def test_our_adapter_with_patterns_loads_in_peft_and_merges_as_peft_does(hf_checkpoint, tmp_path):
    """Saved by us with per-module ranks and alphas, a layer selection and an exclusion: peft adapts the same modules
    and computes the same logits, and merge_lora gives merge_and_unload's weights."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    ours = minagent.load_model(ckpt, dtype="float32")
    inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "up_proj"],
                                 use_rslora=True, rank_pattern={"down_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
                                 alpha_pattern={"v_proj": 3.0}, layers_to_transform=[1], layers_pattern="layers",
                                 exclude_modules=["up_proj"]))
    assert sorted(lora_modules(ours)) == ["model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj",
                                          "model.layers.1.self_attn.v_proj"]
    randomize_lora(ours, 1)
    save_adapter(ours, tmp_path / "a")
    pm = _peft_load(ckpt, tmp_path / "a").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(_ids()), pm(_ids()).logits, rtol=1e-5, atol=1e-5)
    merge_lora(ours)
    theirs = pm.merge_and_unload().state_dict()
    for k, v in base_state_dict(ours).items():
        torch.testing.assert_close(v, theirs[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("targets", [None, [], [3], {"q_proj": 1}])
def test_adapter_config_with_bad_target_modules_names_the_field(hf_checkpoint, tmp_path, targets):
    """target_modules that is not a list of names nor a string (peft itself would not have written these) used to
    crash with a bare TypeError or 'match no linear layer' without naming the file."""
    ckpt, _ = hf_checkpoint("llama-gqa")
    ours = minagent.load_model(ckpt, dtype="float32")
    inject_lora(ours, LoraConfig(r=2, alpha=4, target_modules=["q_proj"]))
    save_adapter(ours, tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "target_modules": targets}))
    with pytest.raises(AdapterError, match=r"adapter_config.json: target_modules=.* \(expected a list of module "
                                           r"names, a regex string or \"all-linear\"\)"):
        load_adapter(minagent.load_model(ckpt, dtype="float32"), tmp_path / "a")


@pytest.mark.parametrize("extra", [dict(init_lora_weights=False), dict(init_lora_weights="gaussian"),
                                   dict(init_lora_weights="orthogonal"), dict(lora_dropout=0.3),
                                   dict(fan_in_fan_out=True)])
def test_plain_lora_variants_load_with_peft_logits(hf_checkpoint, tmp_path, extra):
    """Inits that leave W alone, dropout (off in eval, as in peft) and fan_in_fan_out (which peft turns off for
    nn.Linear) all give plain LoRA: peft's logits."""
    ckpt, _ = hf_checkpoint("llama-linear-tied-bias")
    adapter = _peft_adapter(ckpt, tmp_path / "a", target_modules=["k_proj", "o_proj", "up_proj"], **extra)
    ours = minagent.load_model(ckpt, dtype="float32")
    load_adapter(ours, adapter)
    with torch.no_grad():
        torch.testing.assert_close(ours(_ids()), _peft_load(ckpt, adapter).eval()(_ids()).logits,
                                   rtol=1e-5, atol=1e-5)
