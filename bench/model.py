"""Prefill and decode throughput: minagent vs transformers on the same checkpoint, same dtype, same threads.

    python bench/model.py [--model models/SmolLM2-135M-Instruct] [--threads 2] [--prompt-len 512]

Prefill = one forward over a prompt producing the next-token logits (both sides compute only the last
position's logits, as generation does). Decode tokens/s = (time to generate 1+N tokens - time to generate 1) / N
per row, greedy, with each library's own generate loop and KV cache. Prints a table and minagent/transformers
ratios (higher is better for minagent). Fetches SmolLM2 with `python infer.py fetch` when the default is absent.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: fetched SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--decode-prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import transformers

    from minagent import load_model
    from minagent.generation import SamplingParams, generate

    torch.set_num_threads(args.threads)
    if args.model is None:
        from minagent.fetch import fetch_smollm2

        args.model = fetch_smollm2("models")
    ours = load_model(args.model, dtype="float32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    vocab = ours.config.vocab_size
    g = torch.Generator().manual_seed(0)
    rows = []

    prompt = torch.randint(100, vocab, (1, args.prompt_len), generator=g)
    with torch.inference_mode():
        t_ours, _ = best_of(lambda: ours(prompt, last_only=True), args.repeats)
        t_hf, _ = best_of(lambda: hf(prompt, logits_to_keep=1, use_cache=False), args.repeats)
    rows.append((f"prefill tok/s (batch 1, {args.prompt_len} tokens)", args.prompt_len / t_ours,
                 args.prompt_len / t_hf))

    for batch in (1, 8):
        ids = torch.randint(100, vocab, (batch, args.decode_prompt_len), generator=g)

        def ours_gen(n):
            return lambda: generate(ours, ids.tolist(), SamplingParams(max_new_tokens=n))

        def hf_gen(n):
            return lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                       min_new_tokens=n, do_sample=False, pad_token_id=0)

        with torch.inference_mode():
            t1_o, _ = best_of(ours_gen(1), args.repeats)
            tn_o, _ = best_of(ours_gen(1 + args.new_tokens), args.repeats)
            t1_h, _ = best_of(hf_gen(1), args.repeats)
            tn_h, _ = best_of(hf_gen(1 + args.new_tokens), args.repeats)
        n = args.new_tokens * batch
        rows.append((f"decode tok/s (batch {batch})", n / (tn_o - t1_o), n / (tn_h - t1_h)))

    print(f"\nmodel {args.model}  fp32  CPU threads={args.threads}  torch {torch.__version__}  "
          f"transformers {transformers.__version__}")
    print(f"| {'metric':<38} | {'minagent':>10} | {'transformers':>12} | {'ratio':>6} |")
    print(f"|{'-' * 40}|{'-' * 12}|{'-' * 14}|{'-' * 8}|")
    for name, o, h in rows:
        print(f"| {name:<38} | {o:>10.1f} | {h:>12.1f} | {o / h:>5.2f}x |")


if __name__ == "__main__":
    main()
