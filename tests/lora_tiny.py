"""Shared by the LoRA tests: a "trained" adapter (every A and B random) so a wrong load cannot match by accident."""
import torch


def randomize_lora(model, seed=2):
    """A fresh adapter has B = 0 (no effect); give every A and B random values (in name order, so a peft model and
    ours get the same values for the same seed) so the test can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model
