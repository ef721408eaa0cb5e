"""The training objective as an nn.Module: packed rows in, summed next-token loss out.

It is a module (not a function) so DistributedDataParallel can wrap it: DDP synchronises gradients of whatever
its wrapped module's forward used. The loss is a *sum* over trained tokens; the caller divides by the global
count of trained tokens so every token weighs the same however the batch is split across micro-batches and
processes.

Documents packed into one row must not attend to each other. Rows holding one document each take the plain
causal path; when the model's forward takes `doc_ids` the attention kernel separates documents itself (no mask
tensor); otherwise this module runs the layer stack with a block-diagonal causal mask [B, 1, T, T] built from the
doc ids, the reference path.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from minagent.lora import LoRALinear
from .packing import IGNORE


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, T, T]: query i may see key j <= i of the same document."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same & causal).unsqueeze(1)


class PackedLMLoss(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._native_doc_ids = "doc_ids" in inspect.signature(model.forward_hidden).parameters

    def hidden(self, tokens, positions, doc_ids):
        m = self.model
        if bool((doc_ids == doc_ids[:, :1]).all()):  # one document per row: plain causal attention (no mask)
            return m.forward_hidden(tokens, positions=positions)
        if self._native_doc_ids:
            return m.forward_hidden(tokens, positions=positions, doc_ids=doc_ids)
        mask = document_causal_mask(doc_ids)
        x = m.model.embed_tokens(tokens)
        cos, sin = m.model.rotary_emb(positions, x.dtype)
        for i, layer in enumerate(m.model.layers):
            if m.gradient_checkpointing and m.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, None, i)
        return m.model.norm(x)

    def forward(self, tokens, targets, positions, doc_ids):
        """Sum of the cross-entropy over positions whose target is not IGNORE (fp32, 0-dim)."""
        h = self.hidden(tokens, positions, doc_ids)
        head = self.model.lm_head
        if isinstance(head, LoRALinear):  # a LoRA'd head has no single weight matrix: materialise the logits
            logits = head(h)
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                   reduction="sum")
        return kernels.fused_linear_cross_entropy(h, head.weight, targets, ignore_index=IGNORE, reduction="sum",
                                                  chunk_size=loss_chunk_rows(head.weight.shape[0], h.device.type))


def loss_chunk_rows(vocab: int, device_type: str = "cpu") -> int:
    """Rows per fused-loss chunk (a power of two, at least 64 rows).

    CPU: ~64 MiB of fp32 logits. The loss's peak is a few chunk-sized temporaries, so a small chunk keeps it well
    under the model's activations, and on CPU matmuls of 64+ rows already run at full speed.
    GPU: ~1 GiB. Every chunk reads the whole [vocab, hidden] head three times and adds a [vocab, hidden] product
    into the weight gradient, which a 64-row chunk cannot amortise: at Qwen's 151,936 tokens that made the loss
    most of the gap to transformers in a training step (measured on an H100, bench/RESULTS.md)."""
    budget_bytes = 2**30 if device_type == "cuda" else 64 * 2**20
    rows = max(64, budget_bytes // (4 * vocab))
    return 1 << (rows.bit_length() - 1)
