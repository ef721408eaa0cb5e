"""python -m minagent.gguf MODEL.gguf OUT_DIR [--dtype bfloat16] [--no-tokenizer] [--overwrite]"""
import argparse
import sys

from .convert import DTYPES, convert_gguf
from .reader import GGUFError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minagent.gguf",
                                     description="Convert a GGUF model into a HF checkpoint directory.")
    parser.add_argument("gguf", help="the .gguf file (llama, qwen2 or qwen3 architecture)")
    parser.add_argument("out_dir", help="checkpoint directory to create")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype of the saved weights")
    parser.add_argument("--no-tokenizer", action="store_true", help="weights and config only")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    try:
        out = convert_gguf(args.gguf, args.out_dir, dtype=args.dtype, tokenizer=not args.no_tokenizer,
                           overwrite=args.overwrite, progress=True)
    except (GGUFError, ValueError, FileNotFoundError, FileExistsError) as e:
        sys.exit(f"error: {e}")
    print(out)


if __name__ == "__main__":
    main()
