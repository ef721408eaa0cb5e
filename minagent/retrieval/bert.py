"""A BERT encoder (post-LayerNorm transformer) that loads HF `BertModel` safetensors, e.g. all-MiniLM-L6-v2.

Only what sentence embedding needs: embeddings (word + position + token type, LayerNorm), N layers of
self-attention and GELU MLP each followed by residual + LayerNorm, and the last hidden states. No pooler, no
dropout (inference only). Q, K and V are fused into one matmul at load time; attention is PyTorch's SDPA with a
padding mask. Weight names follow HF (`encoder.layer.{i}.attention.self.query.weight`, ...), optionally prefixed
with `bert.` as in task-head checkpoints.
"""

import json
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        kwargs = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        cfg = cls(**kwargs)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"{path}: hidden_size {cfg.hidden_size} not divisible by "
                             f"num_attention_heads {cfg.num_attention_heads}")
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"{path}: hidden_act {cfg.hidden_act!r} not supported; expected one of "
                             f"{sorted(_ACTIVATIONS)}")
        pos_type = raw.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(f"{path}: position_embedding_type {pos_type!r} not supported (only 'absolute')")
        return cfg


_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.mlp_in = nn.Linear(h, cfg.intermediate_size)
        self.mlp_out = nn.Linear(cfg.intermediate_size, h)
        self.mlp_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x, mask):
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, h // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, t, h)))
        return self.mlp_norm(x + self.mlp_out(self.act(self.mlp_in(x))))


class BertModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.word_emb = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.pos_emb = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.emb_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, input_ids, attention_mask=None):
        """Last hidden states [B, T, H]. attention_mask: [B, T] with 1 for real tokens, 0 for padding."""
        b, t = input_ids.shape
        if t > self.cfg.max_position_embeddings:
            raise ValueError(f"sequence of {t} tokens exceeds max_position_embeddings "
                             f"{self.cfg.max_position_embeddings}")
        pos = torch.arange(t, device=input_ids.device)
        # token type 0 everywhere (single-segment input): add its embedding row directly
        x = self.word_emb(input_ids) + self.pos_emb(pos) + self.type_emb.weight[0]
        x = self.emb_norm(x)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]       # broadcast over heads and query positions
        for layer in self.layers:
            x = layer(x, mask)
        return x


def _hf_to_ours(sd, n_layers, path):
    """Rename HF BertModel tensors to this module's names, fusing Q/K/V."""
    if any(k.startswith("bert.") for k in sd):
        sd = {k[5:]: v for k, v in sd.items() if k.startswith("bert.")}

    def take(name):
        if name not in sd:
            raise ValueError(f"{path}: missing tensor {name!r} (is this a BERT checkpoint?)")
        return sd[name]

    out = {
        "word_emb.weight": take("embeddings.word_embeddings.weight"),
        "pos_emb.weight": take("embeddings.position_embeddings.weight"),
        "type_emb.weight": take("embeddings.token_type_embeddings.weight"),
        "emb_norm.weight": take("embeddings.LayerNorm.weight"),
        "emb_norm.bias": take("embeddings.LayerNorm.bias"),
    }
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"layers.{i}.qkv.{kind}"] = torch.cat(
                [take(f"{p}attention.self.{n}.{kind}") for n in ("query", "key", "value")])
            out[f"layers.{i}.attn_out.{kind}"] = take(f"{p}attention.output.dense.{kind}")
            out[f"layers.{i}.attn_norm.{kind}"] = take(f"{p}attention.output.LayerNorm.{kind}")
            out[f"layers.{i}.mlp_in.{kind}"] = take(f"{p}intermediate.dense.{kind}")
            out[f"layers.{i}.mlp_out.{kind}"] = take(f"{p}output.dense.{kind}")
            out[f"layers.{i}.mlp_norm.{kind}"] = take(f"{p}output.LayerNorm.{kind}")
    return out


def load_bert(model_dir, dtype=torch.float32):
    """BertModel from a directory holding config.json and model.safetensors."""
    cfg_path = os.path.join(model_dir, "config.json")
    weights = os.path.join(model_dir, "model.safetensors")
    for p in (cfg_path, weights):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"BERT encoder file {p!r} not found")
    cfg = BertConfig.from_json(cfg_path)
    model = BertModel(cfg)
    state = _hf_to_ours(load_file(weights), cfg.num_hidden_layers, weights)
    for name, tensor in model.state_dict().items():
        if state[name].shape != tensor.shape:
            raise ValueError(f"{weights}: tensor for {name} has shape {tuple(state[name].shape)}, "
                             f"config.json implies {tuple(tensor.shape)}")
    model.load_state_dict(state)
    return model.to(dtype).eval()

