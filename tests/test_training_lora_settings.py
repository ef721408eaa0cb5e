"""peft's LoRA selection settings reached from a training recipe: per-module ranks and alphas, a layer selection,
exclusions and MiCA's init. Oracle: peft 0.21 loads the adapter the trainer exports, adapts the same modules with
the same ranks and computes the same logits (and, for MiCA, starts from the same frozen B)."""
import json

import pytest
import torch
import transformers

import minagent
from minagent.lora import load_adapter, lora_modules
from minagent.training import TrainConfig, train
from minagent.training.checkpoint import CheckpointStateError
from minagent.training.recipe import load_recipe
from minagent.training.trainer import run
from training_tiny import TRAJECTORIES

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tiny_dir, out, **kw):
    base = dict(model=str(tiny_dir), out=str(out), data=str(TRAJECTORIES), stage="sft", max_length=640,
                batch_size=2, lora_r=4, lora_alpha=8, lr=1e-2, eval_fraction=0.0, progress=False, seed=3,
                max_steps=3, lora_dropout=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _ids():
    return torch.randint(0, 2000, (2, 17), generator=torch.Generator().manual_seed(0))


def _fresh_hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _peft_adapted(pm) -> dict:
    """{module name: rank} of the layers peft adapted."""
    return {n.removeprefix("base_model.model."): m.r["default"] for n, m in pm.named_modules()
            if isinstance(m, peft.tuners.lora.Linear)}


def _check_export_against_peft(tiny_dir, out):
    """peft's model with our exported adapter vs ours with it, and vs the merged final/model."""
    pm = peft.PeftModel.from_pretrained(_fresh_hf(tiny_dir), out / "final" / "adapter").eval()
    ours = minagent.load_model(tiny_dir, dtype="float32")
    load_adapter(ours, out / "final" / "adapter")
    assert {n: m.r for n, m in lora_modules(ours).items()} == _peft_adapted(pm)
    with torch.no_grad():
        want = pm(_ids()).logits
        assert (want - _fresh_hf(tiny_dir)(_ids()).logits).abs().max() > 1e-4  # the adapter did train
        torch.testing.assert_close(ours(_ids()), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_fresh_hf(out / "final" / "model")(_ids()).logits, want, rtol=1e-5, atol=1e-5)
    return pm, ours


def test_recipe_file_reaches_peft_rank_alpha_patterns_layers_and_exclusions(tiny_dir, tmp_path):
    """These LoraConfig fields had no TrainConfig setting: a recipe naming them was refused as 'unknown setting'."""
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"lora_rank_pattern": {"down_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
                                  "lora_alpha_pattern": {"v_proj": 3}, "lora_layers": [1], "lora_exclude": ["up"]}))
    out = tmp_path / "run"
    train(_cfg(tiny_dir, out, **load_recipe(str(recipe))))
    pm, _ = _check_export_against_peft(tiny_dir, out)
    # all-linear in block 1, less up_proj; down_proj rank 2, that block's q_proj rank 6 (hand-checked)
    assert _peft_adapted(pm) == {"model.layers.1.mlp.down_proj": 2, "model.layers.1.mlp.gate_proj": 4,
                                 "model.layers.1.self_attn.k_proj": 4, "model.layers.1.self_attn.o_proj": 4,
                                 "model.layers.1.self_attn.q_proj": 6, "model.layers.1.self_attn.v_proj": 4}
    assert pm.base_model.model.model.layers[1].self_attn.v_proj.scaling["default"] == 3 / 4  # alpha_pattern


def test_mica_init_from_a_recipe_trains_a_only_and_peft_loads_it(tiny_dir, tmp_path):
    out = tmp_path / "mica"
    train(_cfg(tiny_dir, out, lora_init="mica", lora_targets="q,v,down"))
    pm, ours = _check_export_against_peft(tiny_dir, out)
    # B is MiCA's frozen init, exactly what peft's own MiCA init gives for the same base weights
    fresh = peft.get_peft_model(_fresh_hf(tiny_dir), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights="mica",
        task_type="CAUSAL_LM"))
    theirs = dict(fresh.named_parameters())
    for name, m in lora_modules(ours).items():
        torch.testing.assert_close(m.lora_B.weight, theirs[f"base_model.model.{name}.lora_B.default.weight"],
                                   rtol=0, atol=1e-6)
    trained = peft.PeftModel.from_pretrained(_fresh_hf(tiny_dir), out / "final" / "adapter", is_trainable=True)
    assert {n for n, p in trained.named_parameters() if p.requires_grad} == \
        {f"base_model.model.{n}.lora_A.default.weight" for n in lora_modules(ours)}


@pytest.mark.parametrize("setting, value, message", [
    ("lora_rank_pattern", "{down_proj: 2}", r"--lora-rank-pattern: not JSON .*expected an object"),
    ("lora_rank_pattern", '["down_proj"]', r"--lora-rank-pattern: expected a JSON object"),
    ("lora_rank_pattern", '{"down(": 2}', r"--lora-rank-pattern: key 'down\(' is not a valid regular expression"),
    ("lora_rank_pattern", '{"down_proj": 0}', r"--lora-rank-pattern: the rank for 'down_proj' must be a positive"),
    ("lora_rank_pattern", '{"down_proj": 2.5}', r"--lora-rank-pattern: the rank for 'down_proj' must be a positive"),
    ("lora_alpha_pattern", '{"v_proj": "8"}', r"--lora-alpha-pattern: the alpha for 'v_proj' must be a number"),
    ("lora_layers", "0,x", r"--lora-layers: 'x' is not a block index"),
    ("lora_layers", [-1], r"--lora-layers: -1 is not a block index"),
    ("lora_exclude", [3], r"--lora-exclude: expected comma-separated module names"),
])
def test_bad_lora_selection_settings_are_refused_before_any_work(tmp_path, setting, value, message):
    cfg = TrainConfig(model=str(tmp_path), data=str(TRAJECTORIES), out=str(tmp_path / "o"), **{setting: value})
    with pytest.raises(ValueError, match=message):
        cfg.validate()


@pytest.mark.parametrize("kw, message", [
    (dict(lora_layers="2"), r"--lora-layers 2: the model has 2 blocks \(0-1\)"),
    (dict(lora_rank_pattern='{"down": 2}'), r"--lora-rank-pattern: key 'down' matches none of the 14 adapted"),
    (dict(lora_alpha_pattern='{"layers\\\\.1\\\\.mlp": 2}', lora_layers="0"),
     r"--lora-alpha-pattern: key 'layers\\\\.1\\\\.mlp' matches none of the 7 adapted"),
    (dict(lora_targets="q", lora_exclude="q"), r"--lora-targets q --lora-exclude q_proj: LoRA target_modules "
                                               r"\['q_proj'\] .* match no linear layer"),
    (dict(lora_init="mica", lora_r=64), r"--lora-init mica: rank 64 of model\.layers\.0\.self_attn\.q_proj is more "
                                        r"than min\(in, out\) = 32"),
])
def test_lora_selection_that_does_not_fit_the_model_names_the_setting(tiny_dir, tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        run(_cfg(tiny_dir, tmp_path / "o", **kw))


def test_recipe_values_of_the_selection_settings(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"lora_layers": {"0": 1}}))
    with pytest.raises(ValueError, match=r"r\.json: setting 'lora_layers' must be a JSON list or int or str"):
        load_recipe(str(path))
    # the same selection spelled three ways is one setting (compared as equal on resume)
    spellings = [dict(lora_rank_pattern={"down_proj": 2}, lora_layers=[1, 0], lora_exclude=["up", "o_proj"]),
                 dict(lora_rank_pattern='{"down_proj":2}', lora_layers="0, 1", lora_exclude="up_proj,o,up"),
                 dict(lora_rank_pattern='{"down_proj": 2.0}', lora_layers="1,0,1", lora_exclude="up,o")]
    seen = set()
    for kw in spellings:
        cfg = TrainConfig(model=str(tmp_path), data=str(path), out=str(tmp_path / "o"), **kw).validate()
        seen.add((cfg.lora_rank_pattern, cfg.lora_layers, cfg.lora_exclude))
        assert cfg.lora_selection()["exclude_modules"] == ["up_proj", "o_proj"]  # peft's names in the adapter
    assert seen == {('{"down_proj": 2}', "0,1", "up_proj,o_proj")}


def test_cli_flags_reach_the_selection_settings(tiny_dir, tmp_path):
    from train import config_from_args

    cfg = config_from_args(["sft", "--model", str(tiny_dir), "--data", str(TRAJECTORIES), "--out",
                            str(tmp_path / "o"), "--lora-rank-pattern", '{"down_proj": 2}', "--lora-layers", "1",
                            "--lora-exclude", "up", "--lora-init", "mica"]).validate()
    assert cfg.lora_selection() == {"rank_pattern": {"down_proj": 2}, "alpha_pattern": {},
                                    "layers_to_transform": [1], "exclude_modules": ["up_proj"]}
    assert cfg.lora_init == "mica"


def test_resume_refuses_another_selection_and_ends_where_the_whole_run_does(tiny_dir, tmp_path):
    kw = dict(max_steps=4, save_every=2, export=False, lora_rank_pattern={"down_proj": 2}, lora_layers="1",
              lora_alpha_pattern={"v_proj": 3}, lora_dropout=0.1)
    run(_cfg(tiny_dir, tmp_path / "whole", **kw))
    run(_cfg(tiny_dir, tmp_path / "killed", **kw), stop_after_step=3)
    with pytest.raises(CheckpointStateError, match=r"written with lora_alpha_pattern='\{\"v_proj\": 3\}' but this "
                                                   r"run has lora_alpha_pattern='\{\"v_proj\": 5\}'"):
        run(_cfg(tiny_dir, tmp_path / "killed", resume=True, **{**kw, "lora_alpha_pattern": {"v_proj": 5}}))
    run(_cfg(tiny_dir, tmp_path / "killed", resume=True, **{**kw, "lora_layers": [1]}))  # same, spelled otherwise
    from safetensors.torch import load_file
    a, b = (load_file(str(tmp_path / d / "checkpoints" / "step_00000004" / "trainable.safetensors"))
            for d in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
