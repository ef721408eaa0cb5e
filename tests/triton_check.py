"""Can the Triton tests run here? Shared by the kernel test modules so they skip (or, in CI, fail) alike."""
import torch


def triton_problem():
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install -r requirements-dev.txt)"
    from kernels import _triton

    if not torch.cuda.is_available() and not _triton.INTERPRETER:
        return "triton was imported before TRITON_INTERPRET=1 could be set; run these tests in their own process"
    return None

