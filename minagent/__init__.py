"""minagent: agent distillation for microdomains, from scratch in PyTorch.

The public surface of the core: build or load a model, load its tokenizer, generate.
"""
from .config import ModelConfig
from .model import KVCache, Transformer
from .weights import load_model, save_model


def load_tokenizer(path):
    """Tokenizer of a checkpoint directory (tokenizer.json or tokenizer.model); see minagent.tokenizer."""
    from .tokenizer import load_tokenizer as _load

    return _load(path)


__all__ = ["ModelConfig", "Transformer", "KVCache", "load_model", "save_model", "load_tokenizer"]
