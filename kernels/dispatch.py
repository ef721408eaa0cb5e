"""Which implementation an op runs: the Triton kernel or the PyTorch reference.

The choice, from the environment variable MINAGENT_KERNELS or from code (`set_backend`, `use_backend`):

    auto    (default) Triton when the tensors are on a CUDA device and Triton is installed; else PyTorch.
            Calls smaller than kernels.AUTO_MIN_ELEMENTS (decoding sizes) run PyTorch there too.
    triton  always Triton, float64 excepted (the kernels compute in fp32: fp64 keeps the PyTorch path). On CPU
            tensors this runs Triton's interpreter, which the process must have asked for before Triton was
            imported (TRITON_INTERPRET=1); otherwise this raises and says so.
    torch   always the PyTorch reference.

`import kernels` never imports Triton: the op modules (each a reference beside its kernel) load on an op's
first call, and Triton with them when it is installed. A process that wants the interpreter sets
TRITON_INTERPRET=1 before that first call (the test suite does so before collecting anything).
"""
from __future__ import annotations

import contextlib
import os

import torch

BACKENDS = ("auto", "triton", "torch")
_ENV = "MINAGENT_KERNELS"


def _checked(name: str, where: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"{where}: kernel backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_backend = _checked(os.environ.get(_ENV, "auto"), f"environment variable {_ENV}")


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    """Choose 'auto', 'triton' or 'torch' for every op from now on."""
    global _backend
    _backend = _checked(name, "kernels.set_backend")


@contextlib.contextmanager
def use_backend(name: str):
    """`with kernels.use_backend("torch"): ...` runs the block on that backend, then restores the old one."""
    global _backend
    old, _backend = _backend, _checked(name, "kernels.use_backend")
    try:
        yield
    finally:
        _backend = old


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the op should run its Triton kernel on these tensors (all on one device). float64 never does, not
    even when Triton is forced: the kernels compute in fp32, and fp64 callers want fp64 (the torch path)."""
    if _backend == "torch" or any(t.dtype == torch.float64 for t in tensors):
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if _backend == "auto" and not on_cuda:
        return False
    from . import _triton

    if _backend == "auto":  # on CUDA: compiled kernels only (an interpreted one would copy every block to host)
        return _triton.HAS_TRITON and not _triton.INTERPRETER
    if not _triton.HAS_TRITON:
        raise RuntimeError(f"{_ENV}=triton (or set_backend('triton')) but the `triton` package is not "
                           "installed: pip install triton")
    if not on_cuda and not _triton.INTERPRETER:
        raise RuntimeError("Triton kernels were asked for on CPU tensors, but Triton was imported in GPU mode. "
                           "Run with TRITON_INTERPRET=1 set before Python starts (Triton reads it when it is "
                           "first imported) to use its CPU interpreter.")
    return True
