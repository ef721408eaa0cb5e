"""Checkpoint loading, export and config parsing, against transformers as the oracle, plus every bad input."""
import json

import pytest
import torch
import transformers

from minagent import ModelConfig, load_model, save_model
from minagent.config import ConfigError
from minagent.weights import CheckpointError

IDS = torch.randint(0, 257, (2, 13), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("variant", ["qwen2-tied", "qwen3", "llama-linear-tied-bias", "mistral"])
def test_export_loads_in_transformers_with_our_logits(hf_checkpoint, tmp_path, variant):
    path, _ = hf_checkpoint(variant)
    ours = load_model(path)
    save_model(ours, tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back).__name__ == ours.config.architecture
    with torch.no_grad():
        torch.testing.assert_close(back(IDS).logits, ours(IDS))


def test_sharded_export_writes_index_and_round_trips(hf_checkpoint, tmp_path):
    path, hf = hf_checkpoint("llama-gqa")
    ours = load_model(path)
    save_model(ours, tmp_path, max_shard_bytes=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((tmp_path / s).exists() for s in shards)
    assert not (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.tmp"))
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(IDS).logits, hf(IDS).logits)
        torch.testing.assert_close(load_model(tmp_path)(IDS), hf(IDS).logits)
    save_model(ours, tmp_path)  # re-exporting unsharded leaves exactly one checkpoint behind
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]


def test_loads_checkpoint_sharded_by_transformers(tmp_path):
    from hf_tiny import save_hf_model

    hf = save_hf_model("qwen3", tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(IDS), hf(IDS).logits)


def test_single_file_wins_over_a_stale_index_as_in_transformers(tmp_path):
    """transformers' save_pretrained of a sharded and then a single-file checkpoint into one directory removes the
    shards but leaves the index; transformers reads model.safetensors first, so minagent must as well."""
    from hf_tiny import save_hf_model

    save_hf_model("qwen3", tmp_path, seed=1, max_shard_size="100KB")
    save_hf_model("qwen3", tmp_path, seed=2)
    assert (tmp_path / "model.safetensors.index.json").exists() and (tmp_path / "model.safetensors").exists()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(IDS), hf(IDS).logits)


def test_export_in_bf16_loads_in_transformers(hf_checkpoint, tmp_path):
    path, _ = hf_checkpoint("qwen2-tied")
    save_model(load_model(path), tmp_path, dtype="bfloat16")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert back.lm_head.weight.dtype == torch.bfloat16
    assert load_model(tmp_path).lm_head.weight.dtype == torch.bfloat16


def test_config_reads_transformers_4_and_5_spellings():
    base = dict(architectures=["LlamaForCausalLM"], vocab_size=100, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    v4 = ModelConfig.from_hf({**base, "torch_dtype": "bfloat16", "rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}})
    v5 = ModelConfig.from_hf({**base, "dtype": "bfloat16", "rope_parameters": {
        "rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    assert v4 == v5
    assert (v5.torch_dtype, v5.rope_theta, v5.rope_type, v5.head_dim) == ("bfloat16", 500000.0, "llama3", 8)
    # the transformers version in use reads our config back to the same thing
    hf = transformers.AutoConfig.for_model(**{k: v for k, v in v5.to_hf_dict().items() if k != "architectures"})
    back = ModelConfig.from_hf({**hf.to_dict(), "architectures": ["LlamaForCausalLM"]})
    back.extra = v5.extra = {}
    assert back == v5


def test_rope_frequencies_match_transformers_for_each_scaling(hf_checkpoint):
    from minagent.config import rope_inverse_frequencies

    for variant in ("llama-gqa", "llama-linear-tied-bias", "llama-llama3-mqa"):
        path, hf = hf_checkpoint(variant)
        torch.testing.assert_close(rope_inverse_frequencies(ModelConfig.from_hf(path)),
                                   hf.model.rotary_emb.inv_freq)


# ---- bad input: each error names the file and what was expected --------------------------------------------

def _copy_checkpoint(src, dst):
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


def test_truncated_safetensors_names_the_file(hf_checkpoint, tmp_path):
    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)


def test_corrupt_safetensors_header_names_the_file(hf_checkpoint, tmp_path):
    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*not a readable safetensors"):
        load_model(tmp_path)


def test_tensor_of_wrong_shape_is_named(hf_checkpoint, tmp_path):
    path, _ = hf_checkpoint("llama-gqa")
    _copy_checkpoint(path, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 120
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape .*expected"):
        load_model(tmp_path)


def test_missing_tensor_is_named(hf_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["model.norm.weight"]
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lacks tensors.*model.norm.weight"):
        load_model(tmp_path)


def test_unknown_architecture_names_the_field(hf_checkpoint, tmp_path):
    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPTNeoXForCausalLM"], "gpt_neox"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: field 'architectures'.*GPTNeoXForCausalLM.*supports"):
        load_model(tmp_path)


def test_unsupported_rope_type_and_missing_field_are_named():
    base = dict(architectures=["LlamaForCausalLM"], vocab_size=100, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=4)
    with pytest.raises(ConfigError, match="rope type 'yarn' is not supported"):
        ModelConfig.from_hf({**base, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    with pytest.raises(ConfigError, match="llama3 RoPE scaling needs field 'low_freq_factor'"):
        ModelConfig.from_hf({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(ConfigError, match="field 'hidden_act' is 'gelu'.*silu"):
        ModelConfig.from_hf({**base, "hidden_act": "gelu"})
    with pytest.raises(ConfigError, match="missing required field 'hidden_size'"):
        ModelConfig.from_hf({k: v for k, v in base.items() if k != "hidden_size"})


def test_missing_weights_and_missing_shard_are_named(hf_checkpoint, tmp_path):
    (tmp_path / "config.json").write_bytes((hf_checkpoint("llama-gqa")[0] / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(CheckpointError, match="lists shard gone.safetensors"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path.parent)


def test_rope_scaling_added_to_a_v5_config_is_applied_as_transformers_does(hf_checkpoint, tmp_path):
    """A transformers-5 config (rope_parameters, type default) with a rope_scaling added: the scaling wins."""
    from minagent.config import rope_inverse_frequencies

    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default"}
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ours = load_model(tmp_path)
    assert ours.config.rope_type == "linear"
    torch.testing.assert_close(rope_inverse_frequencies(ours.config), hf.model.rotary_emb.inv_freq)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)


def test_llama3_top_level_original_max_position_embeddings_wins_as_in_transformers(hf_checkpoint, tmp_path):
    """transformers takes a top-level `original_max_position_embeddings` over the one inside rope_scaling (the
    Phi-3 convention) and uses it alone when rope_scaling has none; with neither, max_position_embeddings."""
    from minagent.config import rope_inverse_frequencies

    _copy_checkpoint(hf_checkpoint("llama-llama3-mqa")[0], tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["original_max_position_embeddings"] = 128  # rope_scaling's says 32
    for scaling in (cfg.get("rope_scaling"), cfg.get("rope_parameters")):
        assert scaling is None or scaling.get("original_max_position_embeddings") in (None, 32)
    for drop_inner in (False, True):
        if drop_inner:
            for key in ("rope_scaling", "rope_parameters"):
                if cfg.get(key):
                    cfg[key].pop("original_max_position_embeddings", None)
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        ours = load_model(tmp_path)
        torch.testing.assert_close(rope_inverse_frequencies(ours.config), hf.model.rotary_emb.inv_freq)
        ids = torch.randint(0, 257, (1, 200), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            torch.testing.assert_close(ours(ids), hf(ids).logits)
    del cfg["original_max_position_embeddings"]  # (and no inner one, since the last round)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(rope_inverse_frequencies(load_model(tmp_path).config), hf.model.rotary_emb.inv_freq)


def test_integer_tensors_are_refused_and_device_none_means_cpu(hf_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    path, _ = hf_checkpoint("llama-gqa")
    assert load_model(path, device=None).lm_head.weight.device.type == "cpu"
    _copy_checkpoint(path, tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["model.norm.weight"] = sd["model.norm.weight"].view(torch.int32)  # same bytes, another dtype
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' is torch\.int32, expected a floating-point"):
        load_model(tmp_path)


def test_sliding_window_models_equal_transformers_up_to_the_window_then_refuse(tmp_path):
    """minagent attends to every key: for a Mistral with a window, that is transformers' result only up to the
    window's length; past it the model must refuse, not diverge."""
    cfg = transformers.MistralConfig(vocab_size=257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM(cfg).eval()
    hf.config._attn_implementation = "eager"
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert ours.config.attention_window == 8
    ids = IDS[:, :8]
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits)
        with pytest.raises(ValueError, match="sliding-window attention over 8 tokens"):
            ours(IDS[:, :9])


def test_only_windows_some_layer_uses_are_refused():
    """Qwen2/Qwen3 slide only with use_sliding_window and only in the layers transformers' layer_types (or
    max_window_layers) name; Mistral slides whenever sliding_window is set."""
    base = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                sliding_window=8)
    qwen = dict(base, architectures=["Qwen2ForCausalLM"])
    assert ModelConfig.from_hf(qwen).attention_window is None  # use_sliding_window false (Qwen2.5's configs)
    assert ModelConfig.from_hf({**qwen, "use_sliding_window": True, "max_window_layers": 2}).attention_window is None
    assert ModelConfig.from_hf({**qwen, "use_sliding_window": True, "max_window_layers": 0}).attention_window == 8
    assert ModelConfig.from_hf({**qwen, "use_sliding_window": True,
                                "layer_types": ["full_attention", "sliding_attention"]}).attention_window == 8
    assert ModelConfig.from_hf(dict(base, architectures=["MistralForCausalLM"])).attention_window == 8
    assert ModelConfig.from_hf(dict(base, architectures=["MistralForCausalLM"], sliding_window=None)
                               ).attention_window is None


def test_window_settings_config_json_leaves_out_take_transformers_defaults():
    """A config.json without `sliding_window` gets transformers' default window (4096): Mistral then slides, and so
    does a Qwen2/Qwen3 with use_sliding_window; without `max_window_layers` only layers from 28 on slide. Oracle:
    the window transformers' own config applies to some layer (Mistral: any set window)."""
    base = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4)
    cases = [dict(base, model_type="mistral", num_hidden_layers=2),
             dict(base, model_type="mistral", num_hidden_layers=2, sliding_window=None),
             dict(base, model_type="qwen2", num_hidden_layers=2, use_sliding_window=True, max_window_layers=1),
             dict(base, model_type="qwen3", num_hidden_layers=2, use_sliding_window=True, max_window_layers=1),
             dict(base, model_type="qwen2", num_hidden_layers=20, use_sliding_window=True, sliding_window=64),
             dict(base, model_type="qwen2", num_hidden_layers=30, use_sliding_window=True, sliding_window=64)]
    for hf_dict in cases:
        hf = transformers.AutoConfig.for_model(**hf_dict)
        slides = hf.model_type == "mistral" or "sliding_attention" in hf.layer_types
        assert ModelConfig.from_hf(hf_dict).attention_window == (hf.sliding_window if slides else None), hf_dict


def test_config_and_index_values_of_the_wrong_type_are_named(hf_checkpoint, tmp_path):
    base = dict(architectures=["LlamaForCausalLM"], vocab_size=100, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=4)
    assert ModelConfig.from_hf({**base, "architectures": "LlamaForCausalLM"}).architecture == "LlamaForCausalLM"
    for change, message in (({"vocab_size": "257"}, r"'vocab_size' is '257'; expected a positive integer"),
                            ({"vocab_size": 257.0}, r"'vocab_size' is 257\.0"),
                            ({"num_attention_heads": 0}, r"'num_attention_heads' is 0"),
                            ({"rms_norm_eps": "x"}, r"'rms_norm_eps' is 'x'; expected a positive number"),
                            ({"rope_scaling": "linear"}, r"rope_scaling must be an object")):
        with pytest.raises(ConfigError, match=message):
            ModelConfig.from_hf({**base, **change})
    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"config\.json: expected a JSON object of settings, got list"):
        load_model(tmp_path)
    _copy_checkpoint(hf_checkpoint("llama-gqa")[0], tmp_path)
    (tmp_path / "model.safetensors").unlink()  # (beside a model.safetensors the index is not read, as in transformers)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model.safetensors"]}))
    with pytest.raises(CheckpointError, match=r"index\.json: 'weight_map' must map each tensor name"):
        load_model(tmp_path)


def test_a_tied_checkpoint_that_stores_only_the_head_loads_as_in_transformers(hf_checkpoint, tmp_path):
    """Some exports of tied models keep the shared matrix under lm_head.weight alone; transformers ties it back."""
    from safetensors.torch import load_file, save_file

    _copy_checkpoint(hf_checkpoint("qwen2-tied")[0], tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["lm_head.weight"] = sd.pop("model.embed_tokens.weight")
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(IDS), hf(IDS).logits)
