"""minagent training CLI: continual pretraining (cpt) and trajectory fine-tuning (sft), full or LoRA.

    python train.py cpt --model DIR --data MANUALS_DIR_OR_JSONL --out DIR [...]
    python train.py sft --model DIR --data TRAJ.jsonl --out DIR [--lora-r 16 ...]
    python train.py sft --recipe agent-distillation --model DIR --data TRAJ.jsonl --out DIR
    torchrun --nproc_per_node 2 train.py sft ...            # the same loop under DDP

Settings: defaults < --recipe (a named recipe or a JSON file of settings) < flags given here.
Every flag is a field of minagent.training.TrainConfig; `python train.py sft --help` lists them all.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from minagent.training.recipe import RECIPES, TrainConfig, load_recipe


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{cpt,sft}")
    for stage, what in (("cpt", "continual pretraining on manuals (loss on every token)"),
                        ("sft", "fine-tuning on agent trajectories (loss on assistant turns only)")):
        p = sub.add_parser(stage, help=what, description=what,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--recipe", default=argparse.SUPPRESS,
                       help=f"named recipe ({', '.join(RECIPES)}) or a JSON file of settings; flags override it")
        for f in fields(TrainConfig):
            if f.name == "stage":
                continue
            flag = "--" + f.name.replace("_", "-")
            kind = f.type if isinstance(f.type, type) else eval(f.type, {}, {})  # "str" annotations -> types
            kw = dict(help=f.metadata["help"], default=argparse.SUPPRESS)
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
            if kind is bool:
                kw.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL")
            else:
                kw["type"] = kind
            default = f.default if f.default is not MISSING else None
            kw["help"] += f" (default: {default})"
            p.add_argument(flag, **kw)
    return parser


def config_from_args(argv=None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    settings = {}
    if "recipe" in args:
        settings.update(load_recipe(args.pop("recipe")))
        if settings.get("stage", args["stage"]) != args["stage"]:
            raise SystemExit(f"train.py: the recipe is for stage {settings['stage']!r}, not {args['stage']!r}")
    settings.update(args)
    return TrainConfig(**settings)


def main(argv=None):
    try:
        cfg = config_from_args(argv).validate()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"train.py: {e}")
    from minagent.training import train

    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the file/line; no traceback
        raise SystemExit(f"train.py: {e}")
    print(result)


if __name__ == "__main__":
    sys.exit(main())
