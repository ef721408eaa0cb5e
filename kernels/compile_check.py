"""Compile the Triton kernels for an NVIDIA GPU on a machine that has none.

Triton's CPU interpreter runs the kernels' *logic* (the correctness tests use it), but it never lowers them, so
an error only the compiler sees (types of loop-carried values, shapes tl.dot refuses, a kernel that needs more
shared memory than the GPU has) would first show up on a GPU. Triton's wheel ships ptxas, so the whole
pipeline down to a cubin runs anywhere. This compiles each kernel in its real configurations and prints
registers, spilled bytes and shared memory per variant.

    python -m kernels.compile_check            # the main variants (a minute or two)
    python -m kernels.compile_check --quick    # one variant per kernel (the test suite runs this)
    python -m kernels.compile_check --arch 80  # A100

Run it in a process without TRITON_INTERPRET=1 (the interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner

from . import _triton, cross_entropy, flash_attention as fa, rmsnorm, rope, silu_mul

FLOAT_ARGS = {"eps", "scale", "scale_log2"}


def compile_variant(kernel, pointers: dict, constants: dict, arch: int, num_warps=4, num_stages=3):
    """Compile `kernel` with pointer element types {name: 'bf16'|...}; other runtime args are i32 (floats fp32)."""
    fn = kernel.fn if isinstance(kernel, Autotuner) else kernel
    signature = {}
    for p in fn.params:
        if p.is_constexpr:
            signature[p.name] = "constexpr"
        elif p.name in pointers:
            signature[p.name] = "*" + pointers[p.name]
        else:
            signature[p.name] = "fp32" if p.name in FLOAT_ARGS else "i32"
    return triton.compile(ASTSource(fn, signature, constexprs=constants), target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def resources(compiled) -> str:
    """Registers / spill stack / shared memory, read from the cubin with the cuobjdump Triton ships."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", out, re.S)
    regs = f"regs {m.group(1)}, spill stack {m.group(2)} B, " if m else ""
    return f"{regs}shared {compiled.metadata.shared} B"


def _attention_pointers(dtype, out=None):
    p = {n: dtype for n in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ")}
    p.update(LSE="fp32", DELTA="fp32", SEG="i32", SEG_START="i32", SEG_END="i32", MASK="u8")
    if out:
        p["O"] = out
    return p


def variants(quick: bool):
    """(name, kernel, pointer types, constants, num_warps, num_stages) for every case worth compiling."""
    out = []
    for dt in ("bf16", "fp32") if not quick else ("bf16",):
        ptr = {n: dt for n in ("X", "W", "Y", "DY", "DX", "G", "U", "OUT", "DOUT", "DG", "DU", "LOGITS",
                               "Q", "K", "QO", "KO", "COS", "SIN")}
        ptr.update(RSTD="fp32", DW_PARTIAL="fp32", TARGETS="i64", LOSS="fp32", GRAD_SCALE="fp32")
        out += [
            (f"rms_norm fwd {dt}", rmsnorm._rms_norm_fwd, ptr, dict(BLOCK_D=1024), 4, 1),
            (f"rms_norm bwd {dt}", rmsnorm._rms_norm_bwd, ptr, dict(BLOCK_D=1024), 4, 1),
            (f"rope fwd {dt}", rope._rope_kernel, ptr, dict(BLOCK_T=4, BLOCK_HQ=16, BLOCK_HK=2, BLOCK_HALF=32,
                                                             BACKWARD=False), 4, 1),
            (f"swiglu bwd {dt}", silu_mul._swiglu_bwd, ptr, dict(BLOCK=1024), 4, 1),
            (f"cross-entropy {dt}", cross_entropy._ce_kernel, ptr, dict(BLOCK_V=4096), 8, 1),
        ]
    cases = [(64, True, False, False)] if quick else [
        (64, True, False, False), (128, True, False, False), (80, True, True, False), (96, False, False, True)]
    for D, causal, docs, mask in cases:
        flags = dict(GROUP=7, CAUSAL=causal, DOCS=docs, HAS_MASK=mask, BLOCK_D=max(16, triton.next_power_of_2(D)),
                     PRECISION="tf32")
        tag = f"bf16 D={D}{' causal' if causal else ''}{' docs' if docs else ''}{' mask' if mask else ''}"
        ptr = _attention_pointers("bf16")
        for kernel, extra in ((fa._fwd, dict(PACK_GQA=False)), (fa._dq, {}), (fa._dkdv, dict(HEADS_PER_PROGRAM=7))):
            for cfg in kernel.configs[:1] if quick else kernel.configs:
                name = f"attention {kernel.fn.__name__} {tag} {cfg.kwargs} warps={cfg.num_warps}"
                out.append((name, kernel, ptr, dict(flags, **extra, **cfg.kwargs), cfg.num_warps, cfg.num_stages))
    out.append(("attention decode bf16", fa._attn_fwd, _attention_pointers("bf16", out="fp32"),
                dict(GROUP=7, CAUSAL=True, DOCS=False, HAS_MASK=True, BLOCK_D=64, PRECISION="tf32", PACK_GQA=True,
                     BLOCK_M=16, BLOCK_N=64), 4, 2))
    if not quick:
        for kernel, extra, bm, bn in ((fa._attn_fwd, dict(PACK_GQA=False), 32, 32), (fa._attn_bwd_dq, {}, 32, 32),
                                      (fa._attn_bwd_dkdv, dict(HEADS_PER_PROGRAM=7), 32, 32)):
            consts = dict(GROUP=7, CAUSAL=True, DOCS=False, HAS_MASK=False, BLOCK_D=128, PRECISION="tf32x3",
                          BLOCK_M=bm, BLOCK_N=bn, **extra)
            out.append((f"attention {kernel.__name__} fp32 D=128", kernel, _attention_pointers("fp32"), consts, 4, 2))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100, 80 = A100)")
    ap.add_argument("--quick", action="store_true", help="one configuration per kernel")
    args = ap.parse_args(argv)
    if _triton.INTERPRETER:
        sys.exit("compile_check: TRITON_INTERPRET=1 is set; run without it (the interpreter replaces the compiler)")
    shared_limit = {80: 166912, 86: 101376, 89: 101376, 90: 232448}.get(args.arch, 232448)
    failures = 0
    for name, kernel, pointers, constants, warps, stages in variants(args.quick):
        t = time.time()
        try:
            compiled = compile_variant(kernel, pointers, constants, args.arch, warps, stages)
        except Exception as e:  # report every failing variant, not just the first
            failures += 1
            print(f"FAIL {name}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}", flush=True)
            continue
        note = "  (over the shared-memory limit: the autotuner will skip it)" \
            if compiled.metadata.shared > shared_limit else ""
        print(f"ok   {name}: {resources(compiled)}, {time.time() - t:.1f} s{note}", flush=True)
    print(f"{failures} failed" if failures else "all kernels compiled", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
