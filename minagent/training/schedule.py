"""Learning rate: linear warmup from 0, then cosine decay to min_lr_ratio * peak.

A pure function of the step (no scheduler object), so resuming needs only the step number and a resumed run
sets exactly the rate the uninterrupted run would have.
"""
import math


def cosine_with_warmup(step: int, peak_lr: float, warmup_steps: int, total_steps: int,
                       min_lr_ratio: float = 0.1) -> float:
    """Rate for optimizer step `step` (0-based: the first update uses step 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = peak_lr * min_lr_ratio
    return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
