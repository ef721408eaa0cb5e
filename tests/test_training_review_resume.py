"""Resume, beyond test_training_resume: a run interrupted inside an accumulation cycle (between the micro-batches
of one optimizer step) ends bit for bit where the uninterrupted run does, and a resume that changes a setting of
the optimisation's arithmetic is refused naming it, as the README promises ("A resume whose settings ... differ
from the checkpoint's is refused, naming what changed")."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minagent.training import TrainConfig
from minagent.training import trainer
from minagent.training.checkpoint import CheckpointStateError
from minagent.training.objective import PackedLMLoss
from training_tiny import TRAJECTORIES

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 5


def _cfg(tiny_dir, out, **kw):
    base = dict(model=str(tiny_dir), out=str(out), progress=False, seed=5, stage="sft", data=str(TRAJECTORIES),
                max_length=640, batch_size=1, grad_accum=2, lora_r=4, lora_alpha=8, lr=1e-2, lora_dropout=0.3,
                clip=0.5, eval_fraction=0.2, max_steps=STEPS, warmup_steps=2, save_every=2, export=False,
                device="cpu")
    return TrainConfig(**{**base, **kw})


def _state(out):
    step = Path(out) / "checkpoints" / f"step_{STEPS:08d}"
    metrics = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
               for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(step / "trainable.safetensors")), torch.load(step / "optimizer.pt")["state"], metrics


class _Interrupted(Exception):
    pass


def test_an_interrupt_between_the_micro_batches_of_a_step_resumes_bitwise(tiny_dir, tmp_path, monkeypatch):
    trainer.run(_cfg(tiny_dir, tmp_path / "whole"))
    want = _state(tmp_path / "whole")

    real_forward, calls = PackedLMLoss.forward, [0]

    def forward(self, *a):
        calls[0] += 1
        if calls[0] == 2 * 3 + 2:  # step 4's second micro-batch (checkpoint at step 2, step 3 done and lost)
            raise _Interrupted
        return real_forward(self, *a)

    monkeypatch.setattr(PackedLMLoss, "forward", forward)
    with pytest.raises(_Interrupted):
        trainer.run(_cfg(tiny_dir, tmp_path / "cut"))
    monkeypatch.setattr(PackedLMLoss, "forward", real_forward)
    trainer.run(_cfg(tiny_dir, tmp_path / "cut", resume=True))
    got = _state(tmp_path / "cut")
    assert want[0].keys() == got[0].keys() and all(torch.equal(want[0][k], got[0][k]) for k in want[0])
    for i in want[1]:
        assert all(torch.equal(want[1][i][k], got[1][i][k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert got[2] == want[2]


@pytest.mark.parametrize("setting, value", [("clip", 0.25), ("lora_dropout", 0.0)])
def test_a_resume_that_changes_the_arithmetic_is_refused_naming_the_setting(tiny_dir, tmp_path, setting, value):
    """Clipping and LoRA dropout change every update after the resume as much as the learning rate does (which
    is refused): resuming with another value would silently train a run that is neither the old nor the new."""
    out = tmp_path / "o"
    trainer.run(_cfg(tiny_dir, out), stop_after_step=2)
    was = getattr(_cfg(tiny_dir, out), setting)
    with pytest.raises(CheckpointStateError, match=rf"written with {setting}={was!r} but this run has "
                                                   rf"{setting}={value!r}"):
        trainer.run(_cfg(tiny_dir, out, resume=True, **{setting: value}))


def test_a_checkpoint_written_before_clip_and_dropout_were_recorded_still_resumes(tiny_dir, tmp_path):
    out = tmp_path / "o"
    trainer.run(_cfg(tiny_dir, out, max_steps=3), stop_after_step=2)
    state_file = out / "checkpoints" / "step_00000002" / "state.json"
    state = json.loads(state_file.read_text())
    for key in ("clip", "lora_dropout"):
        state["settings"].pop(key, None)
    state_file.write_text(json.dumps(state))
    assert trainer.run(_cfg(tiny_dir, out, max_steps=3, resume=True))["steps"] == 3


def test_epochs_are_not_compared_when_max_steps_set_the_length(tiny_dir, tmp_path):
    """--epochs only decides how many steps a run takes; with --max-steps given it is not read, and a resume that
    passed another --epochs (a script's default changed) was refused for it. A changed length is still refused:
    without --max-steps, another --epochs is another run (named by the epochs it came from)."""
    out = tmp_path / "o"
    trainer.run(_cfg(tiny_dir, out, epochs=1), stop_after_step=2)
    trainer.run(_cfg(tiny_dir, out, epochs=3, resume=True))
    assert (out / "checkpoints" / f"step_{STEPS:08d}").is_dir()
    other = tmp_path / "by_epochs"
    trainer.run(_cfg(tiny_dir, other, max_steps=None, epochs=1, save_every=1), stop_after_step=1)
    with pytest.raises(CheckpointStateError, match=r"written with epochs=1 but this run has epochs=2"):
        trainer.run(_cfg(tiny_dir, other, max_steps=None, epochs=2, save_every=1, resume=True))
