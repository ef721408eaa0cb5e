"""minagent: agent distillation for microdomains, from scratch in PyTorch.

The public surface of the core: build or load a model, load its tokenizer, generate. Names load on first use,
so a BM25-only tool (`infer.py search`) never pays for importing torch.
"""
import importlib

_EXPORTS = {"ModelConfig": ".config", "Transformer": ".model", "KVCache": ".model", "load_model": ".weights",
            "save_model": ".weights", "load_tokenizer": ".tokenizer"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
