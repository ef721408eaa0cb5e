"""Exact resume, at more kill points than test_training_loop covers: a run stopped after any step (saved or lost),
a checkpoint save that fails at each of its file operations (os.replace raising: a full disk) and a process that
dies inside one (os._exit). The oracle is the same run left uninterrupted: the final weights, AdamW's moments and
every logged loss and rate must be equal bit for bit (CPU, fp32, one thread), with grad_accum 2, LoRA dropout and
a warmup that the stops fall inside."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minagent.training import TrainConfig
from minagent.training.trainer import run
from training_tiny import MANUALS, TRAJECTORIES

ROOT = Path(__file__).resolve().parent.parent
STEPS = 6

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = {
    "lora": dict(),
    "lora-mica": dict(lora_init="mica", lora_targets="q,v,down"),
    "full": dict(method="full", lr=1e-3),
    "cpt-full": dict(stage="cpt", data=str(MANUALS), max_length=48, method="full", lr=5e-3, eval_fraction=0.0),
}


def _settings(tiny_dir, out, variant="lora", **kw):
    base = dict(model=str(tiny_dir), out=str(out), progress=False, seed=3, stage="sft", data=str(TRAJECTORIES),
                max_length=640, batch_size=1, grad_accum=2, lora_r=4, lora_alpha=8, lr=1e-2, lora_dropout=0.2,
                eval_fraction=0.2, eval_every=3, max_steps=STEPS, warmup_steps=3, save_every=2, export=False,
                cache_dir=str(Path(out).parent / "cache"))
    return {**base, **VARIANTS[variant], **kw}


def _cfg(*a, **kw):
    return TrainConfig(**_settings(*a, **kw))


def _final_state(out):
    """The last checkpoint's weights and AdamW moments, and every metrics line but the timing."""
    step = Path(out) / "checkpoints" / f"step_{STEPS:08d}"
    optimizer = torch.load(step / "optimizer.pt")["state"]
    metrics = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
               for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(step / "trainable.safetensors")), optimizer, metrics


def _assert_same_run(want, got):
    (w_weights, w_opt, w_metrics), (g_weights, g_opt, g_metrics) = want, got
    assert w_weights.keys() == g_weights.keys()
    assert all(torch.equal(w_weights[k], g_weights[k]) for k in w_weights)
    assert w_opt.keys() == g_opt.keys()
    for i in w_opt:
        assert all(torch.equal(w_opt[i][k], g_opt[i][k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert g_metrics == w_metrics  # loss, lr (warmup included), grad_norm, eval_loss at steps 3 and 6


@pytest.fixture(scope="module")
def whole_runs(tiny_dir, tmp_path_factory):
    """The uninterrupted run of each variant (the oracle), computed once."""
    root = tmp_path_factory.mktemp("whole")
    out = {}
    for variant in VARIANTS:
        run(_cfg(tiny_dir, root / variant, variant))
        out[variant] = _final_state(root / variant)
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stopped_after_any_step_resumes_bitwise(tiny_dir, tmp_path, whole_runs, variant):
    """Stopped after step 1 (nothing saved), 3 (step 3 lost: a warmup step and an eval redone) and 5."""
    for stop in (1, 3, 5):
        out = tmp_path / f"stop{stop}"
        assert run(_cfg(tiny_dir, out, variant), stop_after_step=stop)["stopped_at"] == stop
        run(_cfg(tiny_dir, out, variant, resume=True))
        _assert_same_run(whole_runs[variant], _final_state(out))


class _FailingCall:
    """Wraps a function so that its n-th call made while a checkpoint of step `at_step` is written fails."""

    def __init__(self, real, n, fail):
        self.real, self.n, self.fail, self.calls, self.armed = real, n, fail, 0, False

    def __call__(self, *a, **k):
        if self.armed:
            self.calls += 1
            if self.calls == self.n:
                self.fail()
        return self.real(*a, **k)


# The file operations of save_checkpoint, in order: trainable.safetensors, optimizer.pt, rng.pt, the rename of the
# finished directory, the rename of the `latest` pointer, the removal of the oldest checkpoint.
SAVE_STEPS = [("trainable.safetensors", "minagent.training.checkpoint.save_file", 1),
              ("optimizer.pt", "torch.save", 1), ("rng.pt", "torch.save", 2),
              ("directory rename", "os.replace", 1), ("latest rename", "os.replace", 2),
              ("pruning", "shutil.rmtree", 1)]


def _arm_during_save(monkeypatch, target, n, fail, at_step):
    from minagent.training import checkpoint, trainer

    module_name, _, attr = target.rpartition(".")
    module = sys.modules[module_name]
    wrapper = _FailingCall(getattr(module, attr), n, fail)
    monkeypatch.setattr(module, attr, wrapper)
    real_save = checkpoint.save_checkpoint

    def save(root, step, *a, **k):
        wrapper.armed = step == at_step
        try:
            return real_save(root, step, *a, **k)
        finally:
            wrapper.armed = False

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    return wrapper


def _disk_full():
    raise OSError(28, "No space left on device (simulated)")


@pytest.mark.parametrize("variant", ["lora", "full"])
@pytest.mark.parametrize("what, target, n", SAVE_STEPS, ids=[s[0] for s in SAVE_STEPS])
def test_a_checkpoint_save_that_fails_midway_resumes_bitwise(tiny_dir, tmp_path, whole_runs, monkeypatch,
                                                              variant, what, target, n):
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        wrapper = _arm_during_save(patch, target, n, _disk_full, at_step=4)
        with pytest.raises(OSError, match="simulated"):
            run(_cfg(tiny_dir, out, variant, keep_checkpoints=1))
        assert wrapper.calls == n
    run(_cfg(tiny_dir, out, variant, keep_checkpoints=1, resume=True))
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the half-written directory is gone
    _assert_same_run(whole_runs[variant], _final_state(out))


DIE = """
import json, os, sys
sys.path[:0] = [{root!r}, {tests!r}]
import torch
torch.set_num_threads(1)
import test_training_resume as t
from minagent.training import TrainConfig
from minagent.training.trainer import run

class Patch:  # the monkeypatch API, without pytest
    def setattr(self, obj, name, value):
        setattr(obj, name, value)

t._arm_during_save(Patch(), {target!r}, {n}, lambda: os._exit(9), at_step=4)
run(TrainConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.parametrize("what, target, n", [SAVE_STEPS[1], SAVE_STEPS[4]], ids=["optimizer.pt", "latest rename"])
def test_a_process_that_dies_inside_a_checkpoint_save_resumes_bitwise(tiny_dir, tmp_path, whole_runs, what,
                                                                       target, n):
    """os._exit: no exception handler, no finally block runs, as with a kill."""
    out = tmp_path / "o"
    script = DIE.format(root=str(ROOT), tests=str(ROOT / "tests"), target=target, n=n)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(_settings(tiny_dir, out))], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002"  # died before step 4 counted
    run(_cfg(tiny_dir, out, resume=True))
    _assert_same_run(whole_runs["lora"], _final_state(out))
    shutil.rmtree(out)


def test_mica_resume_reads_the_frozen_b_back_instead_of_recomputing_it(tiny_dir, tmp_path, whole_runs, monkeypatch):
    """MiCA's frozen lora_B comes from an SVD whose last bits depend on the thread count, so a resume on another
    machine or thread count recomputed a slightly different B (~3e-6) and trained A against it. The checkpoint
    now holds B: a resume whose own SVD comes out different (here: nudged by 1e-3) still ends bit for bit where
    the uninterrupted run ends."""
    from minagent import lora
    out = tmp_path / "o"
    run(_cfg(tiny_dir, out, "lora-mica"), stop_after_step=2)
    saved = load_file(str(out / "checkpoints" / f"step_{2:08d}" / "trainable.safetensors"))
    assert any(".lora_B." in k for k in saved)
    real = lora._mica_init

    def nudged(layer):
        real(layer)
        with torch.no_grad():
            layer.lora_B.weight.add_(1e-3)
    monkeypatch.setattr(lora, "_mica_init", nudged)
    run(_cfg(tiny_dir, out, "lora-mica", resume=True))
    _assert_same_run(whole_runs["lora-mica"], _final_state(out))
