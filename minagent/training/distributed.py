"""One training loop for one process or many (torchrun + DDP), with the same batches either way.

The rows an optimizer step uses depend only on the seed, the epoch and the global batch size, never on the
number of processes: step s takes rows perm[s*G:(s+1)*G] of that epoch's permutation (G = batch_size *
grad_accum * world_size), and process r takes every world_size-th micro-batch slice of them. With the loss
normalised by the global count of trained tokens, 2 processes of batch 1 compute the gradient 1 process of
batch 2 computes (up to float summation order).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_setting: str) -> tuple[DistEnv, torch.device]:
    """Read torchrun's environment; start the process group (NCCL on GPU, gloo on CPU) when world_size > 1."""
    env = DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                  int(os.environ.get("WORLD_SIZE", 1)))
    if device_setting == "auto":
        device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        from ..weights import check_device
        device = check_device(device_setting)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return env, device


def same_on_all_ranks(value: int, env: DistEnv, device) -> bool:
    """Whether every process holds the same integer (one all-reduce of (value, -value) by max)."""
    if not env.enabled:
        return True
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t[0].item() == -t[1].item()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def epoch_permutation(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def step_rows(n_rows: int, seed: int, step: int, steps_per_epoch: int, global_batch: int) -> np.ndarray:
    """The row indices optimizer step `step` trains on (all processes, all micro-batches)."""
    epoch, k = divmod(step, steps_per_epoch)
    return epoch_permutation(n_rows, seed, epoch)[k * global_batch:(k + 1) * global_batch]


def micro_batches(rows: np.ndarray, batch_size: int, grad_accum: int, env: DistEnv) -> list[np.ndarray]:
    """This process's micro-batches of one step: slice m*world + rank of the step's rows, for m < grad_accum."""
    out = []
    for m in range(grad_accum):
        s = (m * env.world_size + env.rank) * batch_size
        out.append(rows[s:s + batch_size])
    return out


def shutdown(env: DistEnv):
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
