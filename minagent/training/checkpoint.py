"""Training checkpoints that a killed run resumes from exactly.

A checkpoint is a directory `checkpoints/step_00000040/` with
    trainable.safetensors  the trainable parameters (all weights for full fine-tuning, the adapter for LoRA)
    optimizer.pt           AdamW's state (moments and step counts)
    rng.pt                 torch (CPU and CUDA), Python and numpy RNG states: dropout continues identically
    state.json             the optimizer step reached (the data position and the learning rate follow from it)
                           and the settings that must not change across a resume
It is written under a temporary name and renamed into place, then `checkpoints/latest` (a one-line file) is
replaced atomically; a kill at any moment leaves either the old or the new checkpoint, never a torn one.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointStateError, CorruptCheckpointError

# Settings a resumed run must share with the run that wrote the checkpoint (anything else may change).
RESUME_KEYS = ("stage", "model", "data", "eval_data", "eval_fraction", "method", "lora_r", "lora_alpha",
               "lora_targets", "rslora", "lora_rank_pattern", "lora_alpha_pattern", "lora_layers", "lora_exclude",
               "lora_init", "max_length", "truncation", "observation_role", "seed", "lr",
               "min_lr_ratio", "warmup_steps", "epochs", "max_steps", "weight_decay", "beta1", "beta2",
               "clip", "lora_dropout",  # every update after the resume depends on them as on the lr
               "global_batch",  # batch_size x grad_accum x processes: the data position depends on it, not its split
               "train_data")  # PackedRows.fingerprint of the training rows: the file at --data may have changed
# Keys added after checkpoints were first written: a checkpoint from before has none and is not refused for it.
LATER_KEYS = ("train_data", "lora_rank_pattern", "lora_alpha_pattern", "lora_layers", "lora_exclude", "lora_init",
              "clip", "lora_dropout")


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _adapter_tensor(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def checkpoint_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """What a checkpoint holds: the trainable parameters and an adapter's frozen tensors. MiCA freezes lora_B,
    computed by an SVD whose last bits depend on the thread count (~3e-6 between 1 and 2 threads): a resume
    reads it back instead of recomputing it, so A goes on training against the same B."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad or _adapter_tensor(n)}


def rng_state() -> dict:
    """The RNG states to save. CUDA: the current device's generator only. Under DDP only rank 0 saves, and each
    rank draws on its own device; every rank makes the same draws (same seed, same shapes), so rank 0's device
    state is the right one for each rank's device — where rank 0's copies of the other devices' generators were
    never advanced, and a machine with fewer GPUs could not take them back."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # checkpoints before 2026-11-24 saved every device's: rank 0's is first
            cuda = cuda[0]
        torch.cuda.set_rng_state(cuda)


def remove_partial_checkpoints(root: Path) -> None:
    """Delete what a run killed while writing a checkpoint left behind (.tmp-* directories: up to a whole model
    plus optimizer state). Only the writing process (rank 0) calls this, and only it creates them."""
    for p in root.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(ckpt_root: str | Path, step: int, model, optimizer, settings: dict, extra: dict,
                    keep: int = 2) -> Path:
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    remove_partial_checkpoints(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    tensors = {n: p.detach().cpu().contiguous() for n, p in checkpoint_parameters(model).items()}
    save_file(tensors, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = {"step": step, "settings": {k: settings.get(k) for k in RESUME_KEYS}, **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name + "\n", encoding="utf-8")
    os.replace(pointer, root / "latest")
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The checkpoint `latest` points to (None when there is no pointer)."""
    pointer = Path(ckpt_root) / "latest"
    if not pointer.is_file():
        return None
    return Path(ckpt_root) / pointer.read_text(encoding="utf-8").strip()


def resume_checkpoint(ckpt_root: str | Path, model, optimizer, settings: dict, log=print) -> tuple[Path, dict] | None:
    """Restore the newest readable checkpoint under ckpt_root: (its path, its state.json), or None when there is
    none. Checkpoints are written atomically, so an unreadable one means damage on disk (or by hand): it is
    reported, naming the file, and the next older one is tried; the run never starts over silently while a
    checkpoint is there (settings that differ are an error, not a reason to fall back)."""
    root = Path(ckpt_root)
    pointed = latest_checkpoint(root)
    older = sorted((p for p in root.glob("step_*") if p.is_dir() and p != pointed), reverse=True)
    candidates = ([pointed] if pointed is not None else []) + older
    failures = []
    for path in candidates:
        try:
            return path, load_checkpoint(path, model, optimizer, settings)
        except CorruptCheckpointError as e:
            log(f"skipping checkpoint {path.name}: {e}")
            failures.append(str(e))
    if failures:
        raise CorruptCheckpointError(f"{root}: no readable checkpoint ({len(failures)} tried; newest: {failures[0]})")
    return None


def _read(path: Path, reader):
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing")
    try:
        return reader(path)
    except Exception as e:  # whatever the format's reader raises on a damaged file
        raise CorruptCheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def load_checkpoint(path: str | Path, model, optimizer, settings: dict) -> dict:
    """Restore model weights, optimizer and RNG; return state.json. Refuses a checkpoint of other settings.
    Every file is read and checked before anything is restored: a damaged file leaves the model untouched."""
    path = Path(path)
    state = _read(path / "state.json", lambda f: json.loads(f.read_text(encoding="utf-8")))
    if not (isinstance(state, dict) and isinstance(state.get("step"), int)
            and isinstance(state.get("settings"), dict)):
        raise CorruptCheckpointError(f"{path / 'state.json'}: expected an object with an integer \"step\" and "
                                     f"a \"settings\" object")
    for k in RESUME_KEYS:
        if k in LATER_KEYS and k not in state["settings"]:
            continue
        if k == "epochs" and state["settings"].get("max_steps") == settings.get("max_steps"):
            continue  # epochs only set the run's length, which max_steps (the total) holds: --max-steps decided it
        was, now = state["settings"].get(k), settings.get(k)
        if was != now:
            raise CheckpointStateError(f"{path / 'state.json'}: the checkpoint was written with {k}={was!r} but "
                                       f"this run has {k}={now!r}; resume with the same setting or use a new --out")
    params = checkpoint_parameters(model)
    saved = _read(path / "trainable.safetensors", lambda f: load_file(str(f)))
    # (checkpoints before 2026-11-24 hold the trainable ones only: a frozen adapter tensor then stays as built)
    frozen_not_saved = {n for n, p in params.items() if not p.requires_grad} - set(saved)
    params = {n: p for n, p in params.items() if n not in frozen_not_saved}
    if set(saved) != set(params):
        diff = sorted(set(saved) ^ set(params))[:4]
        raise CheckpointStateError(f"{path / 'trainable.safetensors'}: trainable parameters differ from the "
                                   f"model's (e.g. {diff})")
    optimizer_state = _read(path / "optimizer.pt", lambda f: torch.load(f, map_location="cpu", weights_only=False))
    rng = _read(path / "rng.pt", lambda f: torch.load(f, weights_only=False))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n])
    optimizer.load_state_dict(optimizer_state)
    set_rng_state(rng)
    return state
