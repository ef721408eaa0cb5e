"""Prefill and decode throughput: minagent vs transformers on the same checkpoint, same dtype, same threads.

    python bench/model.py [--model models/SmolLM2-135M-Instruct] [--threads 2] [--prompt-len 512]
    python bench/model.py --model DIR --device cuda --dtype bfloat16      (a GPU: decoding is launch-bound there)

Prefill = one forward over a prompt producing the next-token logits (both sides compute only the last
position's logits, as generation does). Decode tokens/s = (time to generate 1+N tokens - time to generate 1) / N
per row, greedy, with each library's own generate loop and KV cache. Prints a table and minagent/transformers
ratios (higher is better for minagent). Fetches SmolLM2 with `python infer.py fetch` when the default is absent.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of_interleaved(fns: dict, repeats: int, sync=lambda: None) -> dict:
    """Best wall time of each function, measured in rounds that run every function once (after a warm-up
    round), so a slow spell on this shared machine hits both libraries instead of only one. `sync` waits for
    queued GPU work, so a timing ends when the work does."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: fetched SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--decode-prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    import transformers

    from minagent import load_model
    from minagent.generation import SamplingParams, generate

    torch.set_num_threads(args.threads)
    if args.model is None:
        from minagent.fetch import fetch_smollm2

        args.model = fetch_smollm2("models")
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ours = load_model(args.model, dtype=dtype, device=device)
    hf = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()
    vocab = ours.config.vocab_size
    g = torch.Generator().manual_seed(0)
    rows = []

    prompt = torch.randint(100, vocab, (1, args.prompt_len), generator=g).to(device)
    with torch.inference_mode():
        t = best_of_interleaved({"ours": lambda: ours(prompt, last_only=True),
                                 "hf": lambda: hf(prompt, logits_to_keep=1, use_cache=False)}, args.repeats, sync)
    rows.append((f"prefill tok/s (batch 1, {args.prompt_len} tokens)", args.prompt_len / t["ours"],
                 args.prompt_len / t["hf"]))

    for batch in (1, 8):
        ids = torch.randint(100, vocab, (batch, args.decode_prompt_len), generator=g).to(device)

        def ours_gen(n):
            return lambda: generate(ours, ids.tolist(), SamplingParams(max_new_tokens=n))

        def hf_gen(n):
            return lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                       min_new_tokens=n, do_sample=False, pad_token_id=0)

        with torch.inference_mode():
            t = best_of_interleaved({"ours_1": ours_gen(1), "ours_n": ours_gen(1 + args.new_tokens),
                                     "hf_1": hf_gen(1), "hf_n": hf_gen(1 + args.new_tokens)}, args.repeats, sync)
        n = args.new_tokens * batch
        rows.append((f"decode tok/s (batch {batch})", n / (t["ours_n"] - t["ours_1"]),
                     n / (t["hf_n"] - t["hf_1"])))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU threads={args.threads}"
    print(f"\nmodel {args.model}  {args.dtype}  {where}  torch {torch.__version__}  "
          f"transformers {transformers.__version__}")
    print(f"| {'metric':<38} | {'minagent':>10} | {'transformers':>12} | {'ratio':>6} |")
    print(f"|{'-' * 40}|{'-' * 12}|{'-' * 14}|{'-' * 8}|")
    for name, o, h in rows:
        print(f"| {name:<38} | {o:>10.1f} | {h:>12.1f} | {o / h:>5.2f}x |")


if __name__ == "__main__":
    main()
