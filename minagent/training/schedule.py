"""Learning rate: linear warmup, then cosine decay to min_lr_ratio * peak.

Warmup step s (0-based) runs at peak * (s + 1) / warmup: the first update already moves the weights (peak / warmup)
and the last warmup step reaches the peak. transformers' get_cosine_with_min_lr_schedule_with_warmup runs step s
at peak * s / warmup, spending its first step at rate 0; ours is its warmup one step ahead, and from the end of
warmup on the two are equal step for step (tests/test_training_loop.py checks both against it). With warmup 1
(what the trainer's default of 3% of the steps rounds to below ~50 steps) there is no warmup at all.

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
