"""Damaged or ill-typed adapter directories: each is an AdapterError naming the file and the field or tensor.
They used to escape as a bare SafetensorError without the file name (a truncated or non-safetensors
adapter_model.safetensors), a TypeError / AttributeError / re.error (r or lora_alpha null, a JSON array instead of
an object, layers_pattern or exclude_modules not names, a broken regex), or to load silently wrong: r=4.5 read as
r=4, r=true as r=1, use_rslora="false" as True, integer tensors cast to floats. The adapter itself is written by peft
(the oracle) and loads fine before each damage."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import minagent
from minagent.lora import AdapterError, LoraConfig, load_adapter

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def peft_adapter(hf_checkpoint, tmp_path_factory):
    ckpt, _ = hf_checkpoint("llama-gqa")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    d = tmp_path_factory.mktemp("adapter") / "a"
    pm.save_pretrained(d)
    load_adapter(minagent.load_model(ckpt, dtype="float32"), d)  # the undamaged adapter loads
    return ckpt, d


def _damaged(peft_adapter, tmp_path, config=None, weights=None):
    ckpt, src = peft_adapter
    d = tmp_path / "damaged"
    shutil.copytree(src, d)
    if config is not None:
        path = d / "adapter_config.json"
        raw = json.loads(path.read_text())
        path.write_text(config if isinstance(config, str) else json.dumps({**raw, **config}))
    if weights is not None:
        weights(d / "adapter_model.safetensors")
    return ckpt, d


CONFIGS = {
    "r null": ({"r": None}, r"adapter_config.json: r=None \(expected a positive integer\)"),
    "r fraction": ({"r": 4.5}, r"adapter_config.json: r=4.5 \(expected a positive integer\)"),
    "r bool": ({"r": True}, r"adapter_config.json: r=True \(expected a positive integer\)"),
    "r text": ({"r": "four"}, r"adapter_config.json: r='four' \(expected a positive integer\)"),
    "alpha null": ({"lora_alpha": None}, r"adapter_config.json: lora_alpha=None \(expected a number\)"),
    "rslora text": ({"use_rslora": "false"}, r"adapter_config.json: use_rslora='false' \(expected true or false\)"),
    "array": ("[1, 2]", r"adapter_config.json: expected a JSON object"),
    "layers_pattern int": ({"layers_to_transform": [0], "layers_pattern": 5}, r"adapter_config.json: layers_pattern=5"),
    "exclude int": ({"exclude_modules": 5}, r"adapter_config.json: exclude_modules=5"),
    "target regex": ({"target_modules": "model.*(q_proj"}, r"adapter_config.json: LoRA target_modules 'model.\*\(q_proj' "
                                                          r"is not a valid regular expression"),
    "rank_pattern regex": ({"rank_pattern": {"q_proj(": 2}}, r"adapter_config.json: LoRA rank_pattern key 'q_proj\(' "
                                                             r"is not a valid regular expression"),
    "missing r": (None, r"adapter_config.json: missing field 'r'"),
    "not LORA": ({"peft_type": "LOHA"}, r"adapter_config.json: peft_type is 'LOHA'"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_adapter_config_names_file_and_field(peft_adapter, tmp_path, name):
    change, message = CONFIGS[name]
    if name == "missing r":
        raw = json.loads((peft_adapter[1] / "adapter_config.json").read_text())
        change = json.dumps({k: v for k, v in raw.items() if k != "r"})
    ckpt, d = _damaged(peft_adapter, tmp_path, config=change)
    with pytest.raises(AdapterError, match=message):
        load_adapter(minagent.load_model(ckpt, dtype="float32"), d)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"\x00" * 64)


def _integers(path):
    save_file({k: v.to(torch.int32) for k, v in load_file(str(path)).items()}, str(path))


def _other_base(path):  # an adapter for a model of hidden size 128
    save_file({k: torch.zeros(v.shape[0], 128) if "lora_A" in k else torch.zeros(128, v.shape[1])
               for k, v in load_file(str(path)).items()}, str(path))


WEIGHTS = {
    "truncated": (_truncate, r"adapter_model.safetensors: not a readable safetensors file"),
    "garbage": (_garbage, r"adapter_model.safetensors: not a readable safetensors file"),
    "integers": (_integers, r"adapter_model.safetensors: tensor '.*lora_[AB].weight' is torch.int32, expected a "
                            r"floating-point weight"),
    "other base": (_other_base, r"adapter_model.safetensors: tensor '.*lora_[AB].weight' has shape \((4, 128|128, 4)\)"),
}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_bad_adapter_weights_name_the_file(peft_adapter, tmp_path, name):
    damage, message = WEIGHTS[name]
    ckpt, d = _damaged(peft_adapter, tmp_path, weights=damage)
    with pytest.raises(AdapterError, match=message):
        load_adapter(minagent.load_model(ckpt, dtype="float32"), d)


def test_bad_regex_in_lora_config_names_the_setting():
    with pytest.raises(ValueError, match=r"LoRA alpha_pattern key 'v_proj\)' is not a valid regular expression"):
        LoraConfig(r=2, alpha=4, target_modules=["v_proj"], alpha_pattern={"v_proj)": 3})
