"""Benchmark minagent's kernels against PyTorch: attention TFLOP/s, fused-CE memory, elementwise GB/s.

    python bench/kernels.py                      # full run on a GPU (minutes: autotuning, 16k sequences)
    python bench/kernels.py --quick              # fewer sizes
    python bench/kernels.py --results bench/RESULTS.md   # also append the tables there

On a GPU (bf16):
  * attention forward and forward+backward, causal, ours vs torch SDPA's flash backend, seq 1k..16k, head_dim
    64 and 128 (batch * seq = 16k tokens, heads * head_dim = 2048, as FlashAttention's own benchmark), plus a
    Qwen2.5-0.5B-shaped GQA row (14 query heads over 2 kv heads). FLOPs: 4*B*H*T^2*D forward, halved for causal,
    x3.5 for forward+backward (the backward does 2.5x the forward's matmul work).
  * fused linear cross-entropy vs the naive logits path at vocab 151,936 and 16k tokens: time of forward+backward
    and peak memory above the inputs.
  * RMSNorm, RoPE and SwiGLU forward and backward in GB/s (bytes each must read and write, once, over the GPU's
    kernel time from torch.profiler) against a measured device-to-device copy; one event-timed call beside it
    shows what the host's launches add.
Without a GPU it says so and times the PyTorch reference paths at small sizes (a smoke test, not a result).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402

# ------------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------


def bench_ms(fn, warmup=3, reps=10) -> float:
    """Median milliseconds of fn(); CUDA events on a GPU, wall clock on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def device_ms(fn, reps=20) -> float:
    """Milliseconds per fn() that the GPU spends in kernels (torch.profiler's device time of every kernel fn
    launches), without the gaps where it waits for the host to launch the next one.

    Memory-bound ops on 16k tokens take 20-200 us on a current GPU, about what Python needs to launch them, so an
    event-timed call measures the host. Bandwidth is a property of the kernel: this is the time to divide by."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / reps / 1e3


def peak_mib(fn) -> float:
    """Peak CUDA memory fn() allocates above what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------------------------


def _sdpa_flash(q, k, v):
    """SDPA's flash backend. Grouped K/V go in with enable_gqa=True (its flash kernel reads them per group, as
    ours does); a torch whose flash backend refuses that gets them repeated inside the timed call, which is what a
    model using SDPA pays (transformers' repeat_kv)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        if q.shape[1] == k.shape[1]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except (RuntimeError, TypeError):
            g = q.shape[1] // k.shape[1]
            return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                  is_causal=True)


def _ours(q, k, v):
    with kernels.use_backend("triton"):
        return kernels.attention(q, k, v, causal=True)


def attention_rows(quick: bool):
    device, dtype = "cuda", torch.bfloat16
    seqs = [1024, 4096, 16384] if quick else [1024, 2048, 4096, 8192, 16384]
    shapes = [(d, 2048 // d, 2048 // d) for d in (64, 128)] + [(64, 14, 2)]
    rows = []
    for D, HQ, HK in shapes:
        for T in seqs:
            B = max(1, 16384 // T)
            q = torch.randn(B, HQ, T, D, device=device, dtype=dtype, requires_grad=True)
            k = torch.randn(B, HK, T, D, device=device, dtype=dtype, requires_grad=True)
            v = torch.randn(B, HK, T, D, device=device, dtype=dtype, requires_grad=True)
            do = torch.randn_like(q)
            flops = 4 * B * HQ * T * T * D * 0.5
            row = [f"{D}", f"{HQ}/{HK}", f"{B}x{T}"]
            kernel_ms = []
            for fn in (_ours, _sdpa_flash):
                try:
                    fwd = bench_ms(lambda: fn(q, k, v))
                    fb = bench_ms(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do))
                    row += [f"{flops / fwd / 1e9:.0f}", f"{3.5 * flops / fb / 1e9:.0f}"]
                    kernel_ms.append(device_ms(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do), reps=10))
                except RuntimeError as e:  # e.g. SDPA's flash backend refusing a shape
                    row += ["n/a", "n/a"]
                    print(f"  {fn.__name__} D={D} T={T}: {str(e).splitlines()[0]}", file=sys.stderr)
            try:
                row.append(f"{float(row[4]) / float(row[6]):.2f}x")
            except ValueError:
                row.append("n/a")
            row.append(f"{kernel_ms[1] / kernel_ms[0]:.2f}x" if len(kernel_ms) == 2 else "n/a")
            rows.append(row)
            print("  attention", row, file=sys.stderr)
            del q, k, v, do
    return table("Attention, causal, bf16 (TFLOP/s)",
                 ["head_dim", "heads q/kv", "batch x seq", "ours fwd", "ours fwd+bwd", "SDPA-flash fwd",
                  "SDPA-flash fwd+bwd", "ours/SDPA fwd+bwd", "same, GPU kernel time only"], rows)


# ------------------------------------------------------------------------------------------------------------
# Fused linear cross-entropy
# ------------------------------------------------------------------------------------------------------------


def cross_entropy_rows(quick: bool, device="cuda", dtype=torch.bfloat16, N=16384, H=896, V=151936):
    hidden = torch.randn(N, H, device=device, dtype=dtype, requires_grad=True)
    weight = (0.02 * torch.randn(V, H, device=device, dtype=dtype)).requires_grad_()
    targets = torch.randint(0, V, (N,), device=device)

    def naive():
        loss = F.cross_entropy((hidden @ weight.T).float(), targets)
        return torch.autograd.grad(loss, (hidden, weight))

    def naive_lowp():  # what many trainers actually do: CE on the bf16 logits
        loss = F.cross_entropy(hidden @ weight.T, targets)
        return torch.autograd.grad(loss, (hidden, weight))

    def fused():
        loss = kernels.fused_linear_cross_entropy(hidden, weight, targets)
        return torch.autograd.grad(loss, (hidden, weight))

    rows = []
    low = str(dtype)[6:]
    paths = [("naive, fp32 logits", naive), (f"naive, {low} logits", naive_lowp), ("fused (ours)", fused)]
    if dtype == torch.float32:
        paths.pop(1)
    for name, fn in paths:
        try:
            ms = bench_ms(fn, warmup=1, reps=3 if quick else 5)
            mem = f"{peak_mib(fn):.0f}" if device == "cuda" else "n/a"
            rows.append([name, f"{ms:.1f}", mem])
        except torch.OutOfMemoryError:
            rows.append([name, "OOM", "OOM"])
        print("  cross-entropy", rows[-1], file=sys.stderr)
    return table(f"Linear + cross-entropy, {N} tokens, hidden {H}, vocab {V}, {str(dtype)[6:]} (forward+backward)",
                 ["path", "ms", "peak MiB above inputs"], rows)


# ------------------------------------------------------------------------------------------------------------
# Elementwise kernels
# ------------------------------------------------------------------------------------------------------------


def copy_gbps(device="cuda") -> float:
    x = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    y = torch.empty_like(x)
    ms = bench_ms(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / ms / 1e6


def elementwise_rows(quick: bool, device="cuda", dtype=torch.bfloat16, copy=None):
    B, T, H, I, HQ, HK, D = 8, 2048, 896, 4864, 14, 2, 64  # Qwen2.5-0.5B shapes, 16k tokens
    if device != "cuda":
        B, T = 1, 256
    e = torch.finfo(dtype).bits // 8
    x = torch.randn(B, T, H, device=device, dtype=dtype, requires_grad=True)
    w = torch.ones(H, device=device, dtype=dtype, requires_grad=True)
    gate = torch.randn(B, T, I, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn(B, T, I, device=device, dtype=dtype, requires_grad=True)
    q = torch.randn(B, T, HQ, D, device=device, dtype=dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(B, HK, T, D, device=device, dtype=dtype, requires_grad=True)
    cos = torch.randn(B, T, D, device=device, dtype=dtype)
    sin = torch.randn(B, T, D, device=device, dtype=dtype)
    n_x, n_g, n_qk, n_cs = x.numel(), gate.numel(), q.numel() + k.numel(), cos.numel() * 2

    cases = [  # name, function returning outputs, its differentiable inputs, forward bytes, backward bytes
        ("rms_norm", lambda: kernels.rms_norm(x, w, 1e-6), (x, w), 2 * n_x * e, 3 * n_x * e),
        ("rope", lambda: kernels.apply_rope(q, k, cos, sin), (q, k), (2 * n_qk + n_cs) * e, (2 * n_qk + n_cs) * e),
        ("swiglu", lambda: kernels.swiglu(gate, up), (gate, up), 3 * n_g * e, 5 * n_g * e),
    ]
    timer = device_ms if device == "cuda" else bench_ms
    rows = []
    for name, fn, inputs, fwd_bytes, bwd_bytes in cases:
        for backend in ("triton", "torch") if device == "cuda" else ("torch",):
            with kernels.use_backend(backend):
                out = fn()
                outs = out if isinstance(out, tuple) else (out,)
                grads = [torch.randn_like(o) for o in outs]
                with torch.no_grad():
                    fwd = timer(fn)
                # autograd.grad, not backward(): accumulating into .grad would add a read-add-write per input
                both = timer(lambda: torch.autograd.grad(fn(), inputs, grads))
                host = bench_ms(lambda: torch.autograd.grad(fn(), inputs, grads)) if device == "cuda" else both
            bwd = max(both - fwd, 1e-3)
            fwd_gbps, bwd_gbps = fwd_bytes / fwd / 1e6, bwd_bytes / bwd / 1e6
            row = [name, "ours" if backend == "triton" else "torch", f"{fwd:.3f}", f"{fwd_gbps:.0f}", f"{both:.3f}",
                   f"{bwd_gbps:.0f}"]
            if copy:
                row += [f"{100 * fwd_gbps / copy:.0f}%", f"{100 * bwd_gbps / copy:.0f}%", f"{host:.3f}"]
            rows.append(row)
            print("  elementwise", row, file=sys.stderr)
    header = ["op", "path", "fwd ms", "fwd GB/s", "fwd+bwd ms", "bwd GB/s"]
    if copy:
        header += ["fwd % of copy", "bwd % of copy", "fwd+bwd ms, event-timed"]
    what = "GPU kernel time (profiler); the last column is one call timed with events, host launches included" \
        if device == "cuda" else "wall clock"
    return table(f"Elementwise kernels, {B * T} tokens, {str(dtype)[6:]} (bytes each op must move, once; {what})",
                 header, rows)


# ------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes")
    ap.add_argument("--results", help="append the report to this markdown file (e.g. bench/RESULTS.md)")
    args = ap.parse_args()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = []
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        import triton

        parts.append(f"## Kernels on {name}, {stamp} (torch {torch.__version__}, triton {triton.__version__})\n")
        gbps = copy_gbps()
        parts.append(f"Device copy bandwidth (read + write, 1 GiB fp32): **{gbps:.0f} GB/s**\n")
        parts.append(attention_rows(args.quick))
        parts.append(cross_entropy_rows(args.quick))
        parts.append(elementwise_rows(args.quick, copy=gbps))
    else:
        print("No CUDA GPU: the Triton kernels are not benchmarked. Timing the PyTorch reference paths at small "
              "sizes instead (a smoke test, not a result).", file=sys.stderr)
        parts.append(f"## PyTorch reference paths on CPU ({torch.get_num_threads()} threads), {stamp}\n")
        q = torch.randn(1, 14, 512, 64)
        k, v = torch.randn(1, 2, 512, 64), torch.randn(1, 2, 512, 64)
        with kernels.use_backend("torch"):
            ms = bench_ms(lambda: kernels.attention(q, k, v), reps=5)
        flops = 4 * 14 * 512 * 512 * 64 * 0.5
        parts.append(table("Attention (torch SDPA), causal, fp32", ["shape", "ms", "GFLOP/s"],
                           [["1x14/2x512x64", f"{ms:.2f}", f"{flops / ms / 1e6:.1f}"]]))
        with kernels.use_backend("torch"):
            parts.append(cross_entropy_rows(True, device="cpu", dtype=torch.float32, N=512, H=64, V=32000))
            parts.append(elementwise_rows(True, device="cpu", dtype=torch.float32))
    report = "\n".join(parts)
    print(report)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
