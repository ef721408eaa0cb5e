"""`train.py ... --out DIR` where DIR is a model checkpoint (the --model directory itself, or a models/ folder)
used to overwrite DIR/config.json with the run's settings: the checkpoint no longer loaded anywhere. It is now
refused before anything is written. Oracle: transformers.AutoConfig reads the checkpoint's config.json before
and after the refused run, unchanged.
"""
import shutil

import pytest
import transformers

import train
from training_tiny import TRAJECTORIES


def sft_argv(model, out):
    return ["sft", "--model", str(model), "--data", str(TRAJECTORIES), "--out", str(out), "--max-steps", "1",
            "--batch-size", "1", "--max-length", "1024", "--progress", "false", "--export", "false"]


@pytest.mark.parametrize("same_as_model", [True, False])
def test_an_out_holding_a_checkpoint_is_refused_and_left_intact(tiny_dir, tmp_path, same_as_model):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_dir, checkpoint)
    before = (checkpoint / "config.json").read_bytes()
    assert transformers.AutoConfig.from_pretrained(checkpoint).model_type == "llama"
    with pytest.raises(SystemExit) as stop:
        train.main(sft_argv(checkpoint if same_as_model else tiny_dir, checkpoint))
    assert f"{checkpoint / 'config.json'} is there and is not a training run's settings" in str(stop.value.code)
    assert (checkpoint / "config.json").read_bytes() == before
    assert transformers.AutoConfig.from_pretrained(checkpoint).model_type == "llama"
    assert not (checkpoint / "checkpoints").exists() and not (checkpoint / "metrics.jsonl").exists()


def test_an_earlier_runs_directory_is_still_the_checkpoint_rule(tiny_dir, tmp_path):
    """A run's own --out (its config.json is the settings) is not refused by this rule: rerunning there still
    gets the 'already holds checkpoints; pass --resume' answer, and --resume continues."""
    out = tmp_path / "run"
    train.main(sft_argv(tiny_dir, out))
    with pytest.raises(SystemExit) as stop:
        train.main(sft_argv(tiny_dir, out))
    assert "already holds checkpoints; pass --resume" in str(stop.value.code)
    train.main(sft_argv(tiny_dir, out) + ["--resume"])
