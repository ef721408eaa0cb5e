"""Triton, imported only if it is there.

Triton ships inside the CUDA builds of PyTorch, but minagent must not need it: the CPU path of every op is a
pure-PyTorch reference. So the kernel modules import Triton through this file. Without Triton, `triton.jit`
here returns a placeholder that raises a clear error if anyone launches it, and the references beside the
kernels still import and run.

Triton decides at *import* time whether kernels compile for the GPU or run in its CPU interpreter
(TRITON_INTERPRET=1, numpy underneath): its own standard library (`tl.sum`, `tl.max`, ...) is decorated then.
`INTERPRETER` records which mode this process got, so the dispatcher can refuse CPU tensors when the kernels
were compiled for a GPU instead of failing somewhere deep inside Triton.
"""
import types

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted

    HAS_TRITON = True
    INTERPRETER = isinstance(tl.standard.sum, _Interpreted)
except ImportError as e:  # no Triton: keep the module importable, fail only when a kernel is launched
    HAS_TRITON, INTERPRETER = False, False
    _IMPORT_ERROR = e

    class _Unavailable:
        """Stands in for a @triton.jit kernel when Triton is not installed."""

        def __init__(self, fn):
            self.__name__ = getattr(fn, "__name__", "kernel")

        def __getitem__(self, grid):
            raise RuntimeError(f"Triton kernel {self.__name__} needs the `triton` package "
                               f"(pip install triton; import failed with: {_IMPORT_ERROR})")

    def _jit(fn=None, **_):
        return _Unavailable(fn) if fn is not None else _Unavailable

    def _autotune(*_, **__):
        return lambda fn: fn

    triton = types.SimpleNamespace(jit=_jit, autotune=_autotune, Config=lambda *a, **k: None,
                                   cdiv=lambda a, b: -(-a // b),
                                   next_power_of_2=lambda n: 1 << max(0, (n - 1).bit_length()))
    tl = types.SimpleNamespace(constexpr=None)  # only ever evaluated as a parameter annotation


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
