"""Fine-tuning throughput and peak memory: minagent vs transformers + peft, same model, batch and length.

    python bench/train.py [--model models/SmolLM2-135M-Instruct] [--batch 2] [--seq 512] [--steps 4] [--packed 3]

Each (library, method) pair runs in its own subprocess, so one measurement's allocations never inflate the
next one's peak. A step is forward + backward + AdamW update on random tokens (all positions trained).
  minagent: load_model -> LoRA (or full) -> the training objective (chunked fused linear cross-entropy)
  transformers: AutoModelForCausalLM -> peft.get_peft_model (or full) -> model(input_ids, labels=...).loss
LoRA: r=16, alpha=32, dropout 0.05, all linear layers but lm_head, on both sides. Same dtype (fp32 on CPU; on GPU
bf16 weights + autocast for LoRA, fp32 weights + autocast for full fine-tuning), same optimizer (AdamW, foreach
off on CPU).
Memory: on GPU torch.cuda.max_memory_allocated during the steps, weights included (which pulls GPU ratios toward
1); on CPU the peak resident set size, sampled every millisecond by a thread, above the resident size once the
weights are loaded and touched by one forward (so the weights are not counted, whether a library copies them or
maps the file). Both include the optimizer state, the gradients and the activations. Prints one table and the
minagent/transformers ratios. Each side is one sample (one subprocess, minagent first): a machine whose load
changes during the run biases one side, so compare runs taken on a quiet machine (the load average is printed).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class PeakRSS:
    """Highest resident set size seen while running (polled by a thread; torch releases the GIL in kernels)."""

    def __enter__(self):
        import threading

        self.peak, self._stop = _rss_bytes(), False

        def poll():
            while not self._stop:
                self.peak = max(self.peak, _rss_bytes())
                time.sleep(0.001)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def make_batch(rows, seq, vocab, packed):
    """Random tokens and their next-token targets. packed=0: one sequence per row, every position trained.
    packed=N: N documents per row at random cut points (as SFT packs trajectories), positions restarting at each,
    the first 60% of each document a prompt (not trained) and no target across a document boundary."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (rows, seq), generator=g)
    targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)
    positions = torch.arange(seq).repeat(rows, 1)
    doc_ids = torch.zeros_like(ids)
    for b in range(rows if packed else 0):
        cuts = [0] + sorted((torch.randperm(seq - 1, generator=g)[:packed - 1] + 1).tolist()) + [seq]
        for d, (s, e) in enumerate(zip(cuts[:-1], cuts[1:])):
            doc_ids[b, s:e] = d
            positions[b, s:e] = torch.arange(e - s)
            targets[b, s:s + int(0.6 * (e - s))] = -100
            targets[b, e - 1] = -100
    return ids, targets, positions, doc_ids


def one(args):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    lora = args.method == "lora"
    wdtype = torch.bfloat16 if gpu and lora else torch.float32
    if args.library == "minagent":
        import minagent
        from minagent.lora import LoraConfig, inject_lora
        from minagent.training.objective import PackedLMLoss

        model = minagent.load_model(args.model, dtype=wdtype, device=device)
        if lora:
            inject_lora(model, LoraConfig(r=16, alpha=32, dropout=0.05, target_modules="all-linear"))
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        model.train()
        objective = PackedLMLoss(model)
        vocab = model.config.vocab_size

        def loss_of(ids, targets, positions, doc_ids):
            return objective(ids, targets, positions, doc_ids) / (targets != -100).sum()
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=wdtype).to(device)
        if lora:
            import peft

            model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                               target_modules="all-linear", task_type="CAUSAL_LM"))
        model.train()
        vocab = model.config.vocab_size

        def loss_of(ids, targets, positions, doc_ids):
            labels = torch.cat([torch.full_like(targets[:, :1], -100), targets[:, :-1]], dim=1)  # HF shifts them
            if not args.packed:
                return model(input_ids=ids, labels=labels).loss
            same = doc_ids[:, :, None] == doc_ids[:, None, :]  # transformers takes a 4-d mask as given
            mask = (same & torch.ones_like(same[0]).tril())[:, None]
            return model(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels).loss
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, foreach=gpu)
    batch = [t.to(device) for t in make_batch(args.batch, args.seq, vocab, args.packed)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            loss = loss_of(*batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    with torch.no_grad():  # touch every weight once, so mapped files count in the baseline
        loss_of(*(t[:1, :64] for t in batch))
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_bytes()
    with PeakRSS() as rss:
        step()  # warm-up (allocates the optimizer state)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        if gpu:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if gpu else rss.peak - rss0
    print(json.dumps({"tokens_per_s": args.batch * args.seq * args.steps / dt, "peak_bytes": peak,
                      "loss": float(loss), "device": str(device),
                      "trainable": sum(p.numel() for p in params)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--packed", type=int, default=0, help="documents per row, SFT-like (60%% of each is an "
                        "untrained prompt; transformers gets the block-diagonal mask); 0: one plain sequence per row")
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library:
        return one(args)
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"{args.model}: no checkpoint (run `python infer.py fetch` for SmolLM2-135M-Instruct)")
    results = {}
    for method in args.methods.split(","):
        for library in ("minagent", "transformers"):
            cmd = [sys.executable, __file__, "--library", library, "--method", method, "--model", args.model,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
                   "--threads", str(args.threads), "--packed", str(args.packed)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{library} {method} failed:\n{proc.stderr[-3000:]}")
            results[(library, method)] = json.loads(proc.stdout.strip().splitlines()[-1])
    device = next(iter(results.values()))["device"]
    packing = f", {args.packed} documents per row (SFT-like)" if args.packed else ""
    print(f"model {args.model}, batch {args.batch} x seq {args.seq}{packing}, {args.steps} timed steps, {device}, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'method':6} {'library':12} {'tokens/s':>10} {'peak MiB':>10} {'trainable':>12} {'loss':>8}")
    for (library, method), r in results.items():
        print(f"{method:6} {library:12} {r['tokens_per_s']:10.1f} {r['peak_bytes'] / 2**20:10.1f} "
              f"{r['trainable']:12,} {r['loss']:8.4f}")
    for method in args.methods.split(","):
        a, b = results[("minagent", method)], results[("transformers", method)]
        print(f"{method}: minagent/transformers tokens/s {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
              f"peak memory {a['peak_bytes'] / max(b['peak_bytes'], 1):.2f}x")


if __name__ == "__main__":
    main()
