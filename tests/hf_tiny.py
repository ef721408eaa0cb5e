"""Tiny random HF checkpoints of every supported architecture, built with transformers itself (the oracle).

Every parameter is randomised — norms around 1, biases non-zero — so no part of the model can be skipped or
mis-wired and still match.
"""
import torch
import transformers

COMMON = dict(vocab_size=257, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)

# name -> (config class, model class, overrides): together they cover GQA and MQA, q/k/v bias, tied and untied
# embeddings, every RoPE scaling, explicit head_dim and Qwen3's q/k norm.
VARIANTS = {
    "llama-gqa": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=10000.0)),
    "llama-linear-tied-bias": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "llama-llama3-mqa": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=1, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32})),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=None, head_dim=16)),
    "qwen2-tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True, rope_theta=1e6)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, tie_word_embeddings=False)),
}


def build_hf_model(variant: str, seed: int = 0):
    cfg_name, model_name, overrides = VARIANTS[variant]
    cfg = getattr(transformers, cfg_name)(**{**COMMON, **overrides})
    torch.manual_seed(seed)
    return randomize(getattr(transformers, model_name)(cfg).eval())


def randomize(model, std: float = 0.08, embed_std: float = 0.08):
    """Weights far from HF's init (norms around 1, not exactly 1), so parity tests see every parameter's effect.
    std: the projections'; embed_std: the embeddings' (a larger std than the embeddings' keeps a tied model from
    just repeating its last token)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1 if name.endswith("bias") else embed_std if "embed" in name else std)
    return model


def save_hf_model(variant: str, directory, seed: int = 0, **save_kwargs):
    model = build_hf_model(variant, seed)
    model.save_pretrained(directory, **save_kwargs)
    return model
