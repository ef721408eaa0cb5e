"""config.json fields read as transformers reads them, for configs that leave a field out or spell it otherwise.

Oracle: transformers itself: the config class it builds for the model_type and the model it builds from that
config (the head size its attention layers use, the logits of the checkpoint)."""
import json

import pytest
import torch
import transformers

from minagent import ModelConfig, load_model

IDS = torch.randint(0, 257, (2, 11), generator=torch.Generator().manual_seed(9))
SMALL = dict(vocab_size=257, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_head_dim_left_out_of_config_json_is_the_one_transformers_builds(model_type):
    """Llama, Mistral and Qwen2 derive it (hidden_size / heads); Qwen3's config class defaults it to 128."""
    hf_dict = dict(SMALL, model_type=model_type)
    hf_model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf_dict))
    assert ModelConfig.from_hf(hf_dict).head_dim == hf_model.model.layers[0].self_attn.head_dim


def test_qwen3_checkpoint_whose_config_json_lacks_head_dim_loads_as_in_transformers(tmp_path):
    cfg = transformers.Qwen3Config(**SMALL, head_dim=128)
    torch.manual_seed(0)
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(tmp_path)
    config_json = json.loads((tmp_path / "config.json").read_text())
    del config_json["head_dim"]
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(IDS), hf(IDS).logits)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_head_dim_null_in_config_json_is_read_or_refused_as_transformers_does(model_type):
    """A JSON null head_dim: Qwen3Config refuses it (its head_dim is not derived from hidden_size), and so do we,
    naming the field. The others' config classes take it; Llama and Mistral then derive it as when it is left
    out, Qwen2's model crashes in its RoPE set-up, and we derive it for all three."""
    hf_dict = dict(SMALL, model_type=model_type, head_dim=None)
    try:
        transformers.AutoConfig.for_model(**hf_dict)
    except Exception:
        assert model_type == "qwen3"
        with pytest.raises(ValueError, match="'head_dim' is null"):
            ModelConfig.from_hf(hf_dict)
        return
    left_out = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**SMALL,
                                                                                               model_type=model_type))
    assert ModelConfig.from_hf(hf_dict).head_dim == left_out.model.layers[0].self_attn.head_dim
    if model_type != "qwen2":
        hf_model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf_dict))
        assert ModelConfig.from_hf(hf_dict).head_dim == hf_model.model.layers[0].self_attn.head_dim


def test_hidden_act_swish_is_silu_as_in_transformers(hf_checkpoint, tmp_path):
    """transformers' ACT2FN maps 'swish' to SiLU, the same function as 'silu': such a config is not refused."""
    from transformers.activations import ACT2FN

    x = torch.linspace(-6, 6, 101)
    assert torch.equal(ACT2FN["swish"](x), ACT2FN["silu"](x))
    for f in hf_checkpoint("llama-gqa")[0].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config_json = json.loads((tmp_path / "config.json").read_text())
    config_json["hidden_act"] = "swish"
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(IDS), hf(IDS).logits)


@pytest.mark.parametrize("change, field", [
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"rope_scaling": {"rope_type": "linear", "factor": "2"}}, "factor"),
    ({"rope_scaling": {"rope_type": "linear", "factor": None}}, "factor"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 0}}, "factor"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": "1", "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}}, "low_freq_factor"),
    ({"rope_theta": "1e4"}, "rope_theta"),
    ({"rope_theta": -1.0}, "rope_theta"),
])
def test_bad_values_name_config_json_and_the_field(tmp_path, change, field):
    """Values no RoPE or attention layout can be built from: a clear ConfigError naming the file and the field,
    not a TypeError from deep in the RoPE tables nor infinite frequencies (transformers' own validation only warns
    about these and then fails, or computes NaN logits)."""
    from minagent.config import ConfigError, rope_inverse_frequencies

    (tmp_path / "config.json").write_text(json.dumps(dict(SMALL, model_type="llama", **change)))
    with pytest.raises(ConfigError, match=rf"config\.json: .*'{field}'"):
        rope_inverse_frequencies(ModelConfig.from_hf(tmp_path))


def test_model_type_decides_the_family_when_architectures_disagree_as_in_transformers(hf_checkpoint, tmp_path):
    """AutoModelForCausalLM builds the class of config.json's model_type (through AutoConfig); `architectures` does
    not choose it. A Qwen2 checkpoint (q/k/v biases, none on o_proj) labelled LlamaForCausalLM with
    attention_bias=true is still a Qwen2 model there; here it must be too, not a Llama wanting o_proj biases."""
    for f in hf_checkpoint("qwen2-tied")[0].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config_json = json.loads((tmp_path / "config.json").read_text())
    config_json.update(architectures=["LlamaForCausalLM"], attention_bias=True)
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "Qwen2ForCausalLM"
    ours = load_model(tmp_path)
    assert ours.config.architecture == "Qwen2ForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)


def test_a_mistral_model_type_labelled_llama_keeps_its_sliding_window(tmp_path):
    """transformers slides a model_type 'mistral' config's attention whatever `architectures` says; minagent, which
    attends to every key, must then refuse sequences past the window rather than silently differ."""
    cfg = transformers.MistralConfig(**SMALL, head_dim=16, sliding_window=8, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.MistralForCausalLM(cfg).save_pretrained(tmp_path)
    config_json = json.loads((tmp_path / "config.json").read_text())
    config_json["architectures"] = ["LlamaForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "MistralForCausalLM" and hf.config.sliding_window == 8
    ours = load_model(tmp_path)
    assert ours.config.attention_window == 8
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS[:, :8]), hf(IDS[:, :8]).logits)
        with pytest.raises(ValueError, match="sliding-window attention over 8 tokens"):
            ours(IDS[:, :9])
