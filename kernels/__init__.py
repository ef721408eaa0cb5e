"""Hand-written kernels and the dispatcher the model calls.

Every op has a Triton kernel and a short pure-PyTorch reference side by side in its own module:

    flash_attention.py  attention: FA2 forward/backward, GQA, packed documents, decode (reference: torch SDPA)
    rmsnorm.py          RMSNorm forward/backward
    rope.py             rotary embedding (rotate-half) forward/backward
    silu_mul.py         SwiGLU's silu(gate) * up forward/backward
    cross_entropy.py    fused linear + cross-entropy, chunked so the logits never exist in full
    matvec.py           CPU fp32 linear by per-CPU policy: few rows split over the threads, W @ X.T, or oneDNN
    onednn_linear.py    oneDNN's linear (AMD with AVX-512): inference, and training with its gradients; opt-in
                        prepacked weights (MINAGENT_MATVEC=onednn)
    dispatch.py         which path runs; _triton.py imports Triton if it is installed
    compile_check.py    compiles every kernel for an NVIDIA GPU on a machine without one

The functions below choose between them (see dispatch.py: Triton on CUDA, PyTorch elsewhere, forced with
MINAGENT_KERNELS=triton|torch or `kernels.use_backend(...)`). The model imports only these names.
Tensor layout follows torch SDPA: q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D].

The op modules load on first use, not on `import kernels`, so importing the package never imports Triton.
"""
import torch

from .dispatch import BACKENDS, get_backend, set_backend, use_backend, use_triton
from .matvec import linear  # x @ W.T (+ b): F.linear, or a faster CPU fp32 path by policy (matvec.py)

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # the kernels compute in fp32 at most


# Under `auto`, an op on fewer elements than this runs torch's kernels even on a GPU. A Triton launch costs
# ~25-110 us of host time (argument binding and specialisation of ~20-40 arguments, measured on the H100
# machines' hosts), several times a torch kernel launch, and at decoding sizes (one token) the GPU work is a
# microsecond either way: a decode step is host-bound, and its Triton launches were most of its time.
AUTO_MIN_ELEMENTS = 1 << 16


def _triton_for(*tensors, work: torch.Tensor | None = None) -> bool:
    """Triton for these tensors? `auto` also leaves dtypes the kernels would lose precision on (fp64) to torch,
    and calls whose `work` tensor is smaller than AUTO_MIN_ELEMENTS (see above)."""
    if not use_triton(*tensors):
        return False
    if get_backend() == "triton":
        return True
    return all(t.dtype in _KERNEL_DTYPES for t in tensors) and (work is None or work.numel() >= AUTO_MIN_ELEMENTS)

__all__ = ["linear", "rms_norm", "apply_rope", "apply_rope_joint", "swiglu", "attention",
           "fused_linear_cross_entropy", "document_positions", "get_backend", "set_backend", "use_backend", "BACKENDS"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32, cast back before the weight multiply (the order HF uses, so fp32 logits match)."""
    from . import rmsnorm

    if _triton_for(x, weight, work=x):
        return rmsnorm.rms_norm_triton(x, weight, eps)
    return rmsnorm.rms_norm_reference(x, weight, eps)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate-half RoPE on q [B, Hq, T, D] and k [B, Hk, T, D]. cos/sin are [B, T, D] (or [T, D]) and broadcast
    over heads. Returns (q, k). cos/sin get no gradient on the Triton path (they are tables, not weights)."""
    from . import rope

    if _triton_for(q, k, cos, sin, work=q):
        return rope.apply_rope_triton(q, k, cos, sin)
    return rope.apply_rope_reference(q, k, cos, sin)


def apply_rope_joint(qk: torch.Tensor, n_q_heads: int, cos: torch.Tensor, sin: torch.Tensor):
    """RoPE on q and k held side by side in one tensor qk [B, Hq + Hk, T, D] (the first columns of a packed
    q/k/v product, seen as heads); returns (q, k), the first n_q_heads heads and the rest. The same numbers as
    apply_rope on the two parts (it picks its path by the same rule, on q's size); the PyTorch path rotates
    both with one set of ops (half the op count of rotating them apart, which a decoding step notices)."""
    from . import rope

    if _triton_for(qk, cos, sin, work=qk[:, :n_q_heads]):  # the size apply_rope judges, so both agree
        return rope.apply_rope_triton(qk[:, :n_q_heads], qk[:, n_q_heads:], cos, sin)
    return rope.rotate_reference(qk, cos, sin).split((n_q_heads, qk.shape[1] - n_q_heads), dim=1)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up."""
    from . import silu_mul

    if _triton_for(gate, up, work=gate):
        return silu_mul.swiglu_triton(gate, up)
    return silu_mul.swiglu_torch(gate, up)


def attention(q, k, v, *, causal: bool = True, attn_mask=None, scale=None, doc_ids=None):
    """Scaled dot-product attention with grouped-query K/V (Hq a multiple of Hkv, never repeated in memory).

    attn_mask: bool [B|1, 1|Hq, Tq, Tk], True = may attend; when given it replaces the causal rule.
    Without a mask and with Tq < Tk, causal queries are the last Tq positions (decode against a cache).
    doc_ids: int [B, Tk] for packed sequences: each run of equal ids is one document, and tokens attend only
    within their own run (combined with the causal rule or the mask).
    """
    from . import flash_attention as fa

    # Under autocast, attention runs in autocast's dtype, as SDPA (on autocast's list) does. Qwen3's q/k RMSNorm
    # has fp32 weights, so there q and k arrive in fp32 beside a bf16 v.
    dev = q.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        q, k, v = (t.to(dt) if t.dtype in (torch.float32, torch.float16, torch.bfloat16) else t for t in (q, k, v))
    if _triton_for(q, k, v, work=q) and (get_backend() == "triton" or _triton_can_attend(q)):
        return fa.flash_attention(q, k, v, causal=causal, scale=scale, doc_ids=doc_ids, attn_mask=attn_mask)
    return fa.attention_sdpa(q, k, v, causal=causal, scale=scale, doc_ids=doc_ids, attn_mask=attn_mask)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """RoPE positions for packed rows (doc_ids [B, T]): every document starts again at position 0."""
    from .flash_attention import document_positions as positions

    return positions(doc_ids)


def _triton_can_attend(q) -> bool:
    """What `auto` sends to the Triton attention on a GPU: fp16/bf16, what it is tuned for (fp32 runs when
    forced, with small blocks and 3xTF32 dots)."""
    return q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256


def fused_linear_cross_entropy(hidden, weight, targets, ignore_index: int = -100, reduction: str = "mean",
                               chunk_size=None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets) as a 0-dim fp32 tensor, never holding all the logits at once.

    hidden [..., H], weight [V, H] (the LM head), targets [...] int; rows whose target is ignore_index count
    for nothing; reduction 'mean' (over the valid rows, like F.cross_entropy) or 'sum'. Both paths chunk over
    tokens; the Triton path also runs each chunk's softmax/gradient as one kernel.
    """
    from . import cross_entropy

    return cross_entropy.fused_linear_cross_entropy(hidden, weight, targets, ignore_index, reduction, chunk_size,
                                                    use_triton=_triton_for(hidden, weight))
