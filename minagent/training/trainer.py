"""The training loop shared by CPT and SFT.

run(config):
  1. data    -> packed rows (train and held-out), see data.py
  2. model   -> loaded, LoRA injected (or every weight trainable), gradient checkpointing if asked
  3. resume  -> trainable weights, AdamW state, RNG and step from the latest checkpoint
  4. loop    -> per optimizer step: the step's rows (a pure function of seed and step, so resuming needs no
               sampler state), grad accumulation over micro-batches, loss summed and divided by the global
               count of trained tokens, clipping, cosine lr, AdamW; metrics.jsonl; checkpoints; eval
  5. export  -> final/model: merged HF safetensors (+ tokenizer files) that transformers loads;
               final/adapter: the LoRA adapter in PEFT's format
On CPU in fp32 every step is deterministic, so a run killed and resumed ends with bitwise the same weights.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from minagent.cli_paths import is_training_run_settings
from minagent.chat import write_agent_settings
from minagent.config import ModelConfig
from minagent.lora import (LoraConfig, _pattern_value, base_state_dict, inject_lora, load_adapter, merge_lora,
                           save_adapter, target_names)
from minagent.tokenizer import load_tokenizer
from minagent.weights import DTYPES, load_model, save_hf_checkpoint
from .checkpoint import latest_checkpoint, remove_partial_checkpoints, resume_checkpoint, save_checkpoint
from .errors import CheckpointStateError
from .data import build_rows
from .distributed import all_reduce_sum, init_distributed, micro_batches, same_on_all_ranks, shutdown, step_rows
from .objective import PackedLMLoss
from .packing import IGNORE, PackedRows
from .recipe import TrainConfig
from .schedule import cosine_with_warmup

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def _to_device(rows: PackedRows, device):
    return [torch.from_numpy(a).to(device) for a in (rows.tokens, rows.targets, rows.positions, rows.doc_ids)]


def _base_dtype(cfg: TrainConfig, device) -> torch.dtype:
    if cfg.base_dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.base_dtype]
    return torch.bfloat16 if device.type == "cuda" and cfg.method == "lora" else torch.float32


def _autocast(cfg: TrainConfig, device):
    use = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def lora_config(cfg: TrainConfig, model) -> LoraConfig:
    """The run's LoraConfig, checked against the model: every error names the setting at fault."""
    selection = cfg.lora_selection()
    layers = selection["layers_to_transform"]
    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else \
        [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    if layers is not None:
        n_layers = model.config.num_hidden_layers
        if max(layers) >= n_layers:
            raise ValueError(f"--lora-layers {cfg.lora_layers}: the model has {n_layers} blocks (0-{n_layers - 1})")
        if targets == "all-linear":
            # peft takes a layer selection only with a list of names: all-linear's names, as peft expands it
            targets = sorted({n.rsplit(".", 1)[-1] for n in target_names(model, "all-linear")})
    try:
        config = LoraConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=targets,
                            use_rslora=cfg.rslora, base_model_name_or_path=str(cfg.model), **selection,
                            extra={"init_lora_weights": "mica"} if cfg.lora_init == "mica" else {})
        chosen = target_names(model, config.target_modules, config.layers_to_transform, config.layers_pattern,
                              config.exclude_modules)
    except ValueError as e:
        raise ValueError(f"--lora-targets {cfg.lora_targets}"
                         + "".join(f" {flag} {v}" for flag, v in (("--lora-layers", cfg.lora_layers),
                                                                    ("--lora-exclude", cfg.lora_exclude)) if v)
                         + f": {e}") from None
    for name, pattern in (("lora_rank_pattern", config.rank_pattern), ("lora_alpha_pattern", config.alpha_pattern)):
        for key in pattern:  # a key that matches nothing (a typo, "down" for down_proj) would be silently unused
            if all(_pattern_value({key: 1}, module, None) is None for module in chosen):
                raise ValueError(f"--{name.replace('_', '-')}: key {key!r} matches none of the {len(chosen)} "
                                 f"adapted modules (a key is a regex matching the end of a name at a dot, e.g. "
                                 f"'down_proj' or 'layers\\.0\\.self_attn\\.q_proj'; adapted: {chosen[0]}, ...)")
    if cfg.lora_init == "mica":
        for module in chosen:
            shape = model.get_submodule(module).weight.shape
            if config.rank_of(module) > min(shape):
                raise ValueError(f"--lora-init mica: rank {config.rank_of(module)} of {module} is more than "
                                 f"min(in, out) = {min(shape)} (MiCA takes that many singular vectors of W); "
                                 "lower --lora-r or --lora-rank-pattern")
    return config


def build_model(cfg: TrainConfig, device):
    model = load_model(cfg.model, dtype=_base_dtype(cfg, device), device=device)
    torch.manual_seed(cfg.seed)  # LoRA init
    if cfg.method == "lora":
        inject_lora(model, lora_config(cfg, model))
    else:
        model.float()  # full fine-tuning keeps fp32 master weights; autocast does the bf16 math
        for p in model.parameters():
            p.requires_grad_(True)
    model.gradient_checkpointing = cfg.grad_checkpointing
    return model.train()


def make_optimizer(model, cfg: TrainConfig):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # norms, biases and LoRA B (zero-initialised: decay would just pull it back to no adapter) are not decayed
        (no_decay if p.ndim < 2 or n.endswith("lora_B.weight") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             foreach=False)


@torch.no_grad()
def evaluate(loss_module, rows: PackedRows, cfg: TrainConfig, env, device) -> float | None:
    if rows is None or len(rows) == 0:
        return None
    was_training = loss_module.training
    loss_module.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    mine = np.arange(env.rank, len(rows), env.world_size)
    for s in range(0, len(mine), cfg.batch_size):
        tokens, targets, positions, doc_ids = _to_device(rows.select(mine[s:s + cfg.batch_size]), device)
        with _autocast(cfg, device):
            loss = loss_module(tokens, targets, positions, doc_ids)
        total += torch.stack([loss.double(), (targets != IGNORE).sum().double()])
    all_reduce_sum(total, env)
    loss_module.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else None


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; inf (dropped on resume) for a blank or torn one (a kill mid-append)."""
    try:
        record = json.loads(line)
    except ValueError:
        return float("inf")
    return record.get("step", 0) if isinstance(record, dict) else float("inf")


class MetricsLog:
    """metrics.jsonl: one JSON object per line. On resume, lines past the resumed step (and a line torn by the
    kill) are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            lines = []
        elif path.exists():
            lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
                     if _step_of(ln) <= resume_step]
        else:
            lines = []
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        os.replace(tmp, path)

    def write(self, record: dict):
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def _checkpoint_dtype(path) -> torch.dtype:
    return DTYPES.get(ModelConfig.from_hf(Path(path)).torch_dtype, torch.float32)


def export(model, cfg: TrainConfig, out: Path, log=print) -> dict:
    """final/adapter (PEFT) for LoRA, then final/model: the merged weights as a HF checkpoint + tokenizer."""
    final = out / "final"
    paths = {}
    if cfg.method == "lora":
        paths["adapter"] = save_adapter(model, final / "adapter")
        if torch.finfo(model.model.embed_tokens.weight.dtype).bits < torch.finfo(_checkpoint_dtype(cfg.model)).bits:
            # The frozen base was trained in a rounded copy (bf16 of an fp32 checkpoint, on a GPU): merge into
            # the checkpoint's own weights instead (reloaded on CPU), so the export loses none of their precision.
            # (An upcast copy, fp32 of a bf16 checkpoint on CPU, is exact: merged in place and exported in fp32.)
            model = load_model(cfg.model)
            load_adapter(model, final / "adapter")
        merge_lora(model)
    state = base_state_dict(model)
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    hf_cfg = model.config.to_hf_dict()
    dtype = model.model.embed_tokens.weight.dtype
    hf_cfg["torch_dtype"] = hf_cfg["dtype"] = str(dtype).removeprefix("torch.")
    paths["model"] = save_hf_checkpoint(state, hf_cfg, final / "model")
    for name in TOKENIZER_FILES:
        src = Path(cfg.model) / name
        if src.is_file():
            shutil.copyfile(src, final / "model" / name)
    if cfg.stage == "sft":  # how the agent must render observations for this model (minagent.chat.agent_settings)
        write_agent_settings(final / "model", cfg.observation_role)
    log(f"exported {', '.join(f'{k}: {v}' for k, v in paths.items())}")
    return paths


def refuse_an_out_holding_another_config(out: Path):
    """A run writes its settings to OUT/config.json. When OUT already holds a config.json that is not an earlier
    run's settings (a model checkpoint: --out given the --model directory, or a models/ folder), writing there
    would replace the checkpoint's config with the run's and leave that model unloadable: refused, naming it."""
    config = out / "config.json"
    if config.is_file() and not is_training_run_settings(config):
        raise ValueError(f"--out {out}: {config} is there and is not a training run's settings (a model "
                         "checkpoint's?); the run would overwrite it with its own: choose another --out")


def run(cfg: TrainConfig, stop_after_step: int | None = None) -> dict:
    """Train one stage. stop_after_step ends the run abruptly after that step (tests simulate a kill with it:
    nothing is saved beyond what the periodic checkpoints already wrote)."""
    cfg.validate()
    env, device = init_distributed(cfg.device)
    log = print if env.is_main else (lambda *a, **k: None)
    out = Path(cfg.out)
    refuse_an_out_holding_another_config(out)
    try:
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(cfg.model)
        train_rows, eval_rows = build_rows(cfg, tokenizer, log)
        G = cfg.batch_size * cfg.grad_accum * env.world_size
        steps_per_epoch = len(train_rows) // G
        if steps_per_epoch == 0:
            raise ValueError(f"{len(train_rows)} training rows of {cfg.max_length} tokens cannot fill one global "
                             f"batch of {G} rows (batch_size x grad_accum x processes); lower --batch-size/"
                             f"--grad-accum or --max-length, or add data")
        total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.03 * total_steps))
        log(f"{cfg.stage}: {len(train_rows)} train rows x {cfg.max_length} tokens "
            f"({train_rows.num_targets():,} trained targets), {len(eval_rows) if eval_rows else 0} eval rows; "
            f"{total_steps} steps of {G} rows on {env.world_size} process(es), device {device}")

        model = build_model(cfg, device)
        optimizer = make_optimizer(model, cfg)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"trainable parameters: {n_train:,} of {model.num_parameters():,} ({cfg.method})")
        settings = {**cfg.to_dict(), "warmup_steps": warmup, "max_steps": total_steps, "global_batch": G,
                    "train_data": train_rows.fingerprint()}

        start_step = 0
        ckpt_root = out / "checkpoints"
        if cfg.resume:
            if env.is_main and ckpt_root.is_dir():
                remove_partial_checkpoints(ckpt_root)  # a kill while one was being written
            resumed = resume_checkpoint(ckpt_root, model, optimizer, settings, log)
            if resumed is None:
                log(f"--resume: no checkpoint in {ckpt_root}; starting from step 0")
            else:
                start_step = resumed[1]["step"]
                log(f"resumed from {resumed[0]} (step {start_step} of {total_steps})")
            # every rank reads the checkpoints itself: one that found the newest unreadable fell back alone
            if not same_on_all_ranks(start_step, env, device):
                raise CheckpointStateError(f"{ckpt_root}: the processes resumed from different steps (a checkpoint "
                                           "file readable on some ranks only?); check the disk and rerun")
        elif latest_checkpoint(ckpt_root) is not None or any(ckpt_root.glob("step_*")):
            raise ValueError(f"{ckpt_root} already holds checkpoints; pass --resume to continue that run or "
                             "choose a new --out")
        if env.is_main:
            (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

        loss_module = PackedLMLoss(model)
        ddp = DDP(loss_module, device_ids=[device.index] if device.type == "cuda" else None) if env.enabled \
            else loss_module
        metrics = MetricsLog(out / "metrics.jsonl", env.is_main, start_step if cfg.resume else None)

        bar = None
        if cfg.progress and env.is_main:
            from tqdm import tqdm

            bar = tqdm(total=total_steps, initial=start_step, desc=cfg.stage, dynamic_ncols=True)
        last_loss, eval_loss = None, None
        for step in range(start_step, total_steps):
            t0 = time.perf_counter()
            lr = cosine_with_warmup(step, cfg.lr, warmup, total_steps, cfg.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            rows = step_rows(len(train_rows), cfg.seed, step, steps_per_epoch, G)
            micro = [train_rows.select(r) for r in micro_batches(rows, cfg.batch_size, cfg.grad_accum, env)]
            n_targets = all_reduce_sum(torch.tensor([float(sum(m.num_targets() for m in micro))],
                                                    dtype=torch.float64, device=device), env).item()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            tokens_seen = 0
            for i, mb in enumerate(micro):
                tokens, targets, positions, doc_ids = _to_device(mb, device)
                sync = ddp.no_sync() if env.enabled and i < len(micro) - 1 else contextlib.nullcontext()
                with sync:
                    with _autocast(cfg, device):
                        loss = ddp(tokens, targets, positions, doc_ids)
                    # DDP averages gradients over processes; * world_size makes the result a sum over all of
                    # them, / n_targets the mean over every trained token of the global batch.
                    (loss * (env.world_size / max(n_targets, 1.0))).backward()
                loss_sum += loss.detach().double()
                tokens_seen += mb.tokens.size
            params = [p for p in model.parameters() if p.requires_grad]
            if cfg.clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip, foreach=False))
            else:
                grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params
                                                                        if p.grad is not None])))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            stats = all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(tokens_seen), dtype=torch.float64,
                                                                       device=device)]), env)
            last_loss = float(stats[0]) / max(n_targets, 1.0)
            elapsed = time.perf_counter() - t0
            tok_s = float(stats[1]) / elapsed
            done = step + 1
            record = {"step": done, "epoch": round(done / steps_per_epoch, 4), "loss": last_loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens": int(stats[1]), "tokens_per_s": round(tok_s, 1)}
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == total_steps:
                eval_loss = evaluate(ddp if not env.enabled else loss_module, eval_rows, cfg, env, device)
                if eval_loss is not None:
                    record["eval_loss"] = eval_loss
            if done % cfg.log_every == 0 or "eval_loss" in record or done == total_steps:
                metrics.write(record)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
                bar.update(1)
            if done % cfg.save_every == 0 or done == total_steps:
                if env.is_main:
                    save_checkpoint(ckpt_root, done, model, optimizer, settings,
                                    {"loss": last_loss, "total_steps": total_steps}, cfg.keep_checkpoints)
                if env.enabled:
                    torch.distributed.barrier()
            if stop_after_step is not None and done >= stop_after_step:
                return {"stopped_at": done, "loss": last_loss}
        if bar is not None:
            bar.close()
        result = {"steps": total_steps, "loss": last_loss, "eval_loss": eval_loss}
        if cfg.export and env.is_main:
            result["exported"] = {k: str(v) for k, v in export(model, cfg, out, log).items()}
        return result
    finally:
        shutdown(env)
