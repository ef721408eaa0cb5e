"""The decoder-only transformer behind every minagent model (Llama, Mistral, Qwen2, Qwen3).

Module and parameter names mirror HF's (`model.layers.3.self_attn.q_proj.weight`, ...) so a checkpoint's
state dict loads with no renaming and no permutation (HF keeps rotate-half RoPE, and so do we). The math ops go
through `kernels`, which picks a Triton kernel on GPU and a short PyTorch reference elsewhere.

The KV cache is a preallocated buffer indexed by *slot* (how many tokens have been fed), kept apart from each
row's *position* (what RoPE sees). That one split serves every case: plain decoding (slot == position), and
batches of prompts of different lengths padded left or right, where a key-validity mask hides the pad slots
and each row's positions skip them, so a padded row computes exactly what it would alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

import kernels
from .config import ModelConfig, rope_inverse_frequencies
from .packing import packed_projection


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict names) whose product goes through `kernels.linear`, which
    spreads few-row (decoding) products over the CPU threads."""

    def forward(self, x):
        return kernels.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return kernels.rms_norm(x, self.weight, self.eps)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the given positions; the frequencies carry the config's RoPE scaling."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("inv_freq", rope_inverse_frequencies(cfg), persistent=False)

    def reset_parameters(self, device=None):
        """Recompute the (non-persistent) frequencies, e.g. after the model was built on the meta device."""
        self.inv_freq = rope_inverse_frequencies(self.cfg).to(device or self.inv_freq.device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        freqs = positions[..., None].float() * self.inv_freq  # [B, T, D/2], fp32 as HF computes it
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class KVCache:
    """Per-layer K/V buffers of shape [B, n_kv_heads, max_len, head_dim], filled slot by slot.

    `key_valid[b, s]` is False where slot s of row b holds padding; None means every slot is real.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, dtype=None, device=None):
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self.max_len = max_len
        self.length = 0
        self.key_valid: torch.Tensor | None = None

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store new K/V at slots [length, length+T) and return the keys/values of all filled slots."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} slots needed, {self.max_len} allocated")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=cfg.o_bias)
        self.split_sizes = (self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim,
                            self.n_kv_heads * self.head_dim)
        if cfg.qk_norm:  # Qwen3: RMSNorm over each head's vector, before RoPE
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, doc_ids=None):
        B, T, _ = x.shape
        packed = packed_projection((self.q_proj, self.k_proj, self.v_proj), Linear)
        if packed is not None:  # one matmul for q, k and v (see packing.py)
            q, k, v = kernels.linear(x, *packed).split(self.split_sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        q, k = kernels.apply_rope(q, k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)
        y = kernels.attention(q, k, v, causal=True, attn_mask=mask, doc_ids=doc_ids)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x):
        packed = packed_projection((self.gate_proj, self.up_proj), Linear)
        if packed is not None:  # one matmul for gate and up (see packing.py)
            gate, up = kernels.linear(x, *packed).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(kernels.swiglu(gate, up))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache, layer, doc_ids=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, doc_ids)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """HF's inner `model.*`: embeddings, the layer stack and the final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.gradient_checkpointing = False

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch_size, max_len, dtype=p.dtype, device=p.device)

    def forward_hidden(self, input_ids, positions=None, cache: KVCache | None = None, key_valid=None,
                       doc_ids=None):
        """Final-normed hidden states [B, T, hidden]. Training's fused loss and the dense encoder start here.

        positions: [B, T] RoPE positions (default: the slot numbers). key_valid: bool [B, slots so far + T]
        marking real (non-pad) slots; with a cache it is kept in the cache, so later steps need not pass it.
        doc_ids: int [B, T] for packed training rows (no cache): tokens attend only within their document,
        and positions restart at 0 for each document unless given.
        """
        x, cos, sin, mask = self.embed_inputs(input_ids, positions, cache, key_valid, doc_ids)
        for i, layer in enumerate(self.model.layers):
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, cache, i, doc_ids,
                                                      use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache, i, doc_ids)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.model.norm(x)

    def embed_inputs(self, input_ids, positions=None, cache: KVCache | None = None, key_valid=None, doc_ids=None):
        """What every layer reads besides the hidden state: (embeddings, cos, sin, attention mask or None).
        Also records the new tokens' padding in the cache. Shared by forward_hidden and inference.py."""
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        window = self.config.attention_window
        if window is not None and start + T > window:
            raise ValueError(f"{start + T} tokens: this {self.config.architecture} checkpoint uses sliding-window "
                             f"attention over {window} tokens, which minagent does not implement; it attends to "
                             f"every key, the same only up to {window} tokens")
        if doc_ids is not None:
            if cache is not None or key_valid is not None:
                raise ValueError("doc_ids (packed documents) cannot be combined with a KV cache or padding mask")
            if positions is None:
                positions = kernels.document_positions(doc_ids)
        if positions is None:
            positions = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        if cache is not None:
            if key_valid is not None:
                cache.key_valid = key_valid
            elif cache.key_valid is not None:  # keep the padding record growing with the new (real) tokens
                cache.key_valid = torch.cat([cache.key_valid, cache.key_valid.new_ones(B, T)], dim=1)
            key_valid = cache.key_valid
        mask = None if key_valid is None else _padded_causal_mask(key_valid, start, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary_emb(positions, x.dtype)
        return x, cos, sin, mask

    def forward(self, input_ids, positions=None, cache: KVCache | None = None, key_valid=None,
                last_only: bool = False, doc_ids=None):
        """Logits [B, T, vocab] (or [B, 1, vocab] with last_only, which skips the head on the other tokens)."""
        h = self.forward_hidden(input_ids, positions, cache, key_valid, doc_ids)
        return self.lm_head(h[:, -1:] if last_only else h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def _padded_causal_mask(key_valid: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """bool [B, 1, T, start+T]: query slot i sees key slot j <= i that is real; a pad query sees itself only
    (its output is never used, but a row with no allowed key would make softmax NaN)."""
    S = start + T
    q_slot = torch.arange(start, S, device=key_valid.device)[:, None]
    k_slot = torch.arange(S, device=key_valid.device)[None, :]
    allowed = (k_slot <= q_slot) & key_valid[:, None, :S]
    return (allowed | (k_slot == q_slot)).unsqueeze(1)
