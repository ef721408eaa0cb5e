"""minagent training CLI: the whole microdomain recipe, or one stage: continual pretraining (cpt) and
trajectory fine-tuning (sft), full or LoRA.

    python train.py                                          # = python train.py recipe --tier tiny
    python train.py recipe --tier smollm2 --work runs/smollm2 [--teacher http://host:8000/v1]
    python train.py cpt --model DIR --data MANUALS_DIR_OR_JSONL --out DIR [...]
    python train.py sft --model DIR --data TRAJ.jsonl --out DIR [--lora-r 16 ...]
    python train.py sft --recipe agent-distillation --model DIR --data TRAJ.jsonl --out DIR
    torchrun --nproc_per_node 2 train.py sft ...            # the same loop under DDP

Settings: defaults < --recipe (a named recipe or a JSON file of settings) < flags given here.
Every flag is a field of minagent.training.TrainConfig; `python train.py sft --help` lists them all.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields

from minagent.training.recipe import RECIPES, TrainConfig, load_recipe


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _seed(s: str) -> int:
    """A seed is a non-negative integer: numpy's generators refuse a negative one, but only once the first
    stage that shuffles has started (after minutes of earlier stages) and without naming --seed."""
    try:
        value = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; expected an integer >= 0")
    return value


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default, unless its help already says it or there is none to say (None, off, empty)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False \
                or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{recipe,cpt,sft}")
    r = sub.add_parser("recipe", help="the whole pipeline: generate -> index -> CPT -> teacher -> SFT -> eval table",
                       formatter_class=_ShowDefaults)
    r.add_argument("--tier", default="tiny", choices=["tiny", "smollm2", "ci"],
                   help="tiny: from-scratch model, minutes on CPU; smollm2: SmolLM2-135M-Instruct; ci: tiny, shrunk")
    r.add_argument("--work", default=None, help="working directory (default runs/<tier>); stages cache there")
    r.add_argument("--seed", type=_seed, default=0, help="which synthetic product and exam")
    r.add_argument("--teacher", default=None, help="OpenAI-compatible base URL of a real teacher (default: the "
                                                   "domain's oracle teacher)")
    r.add_argument("--base-model", default=None, help="smollm2 tier: the base checkpoint (default: fetched)")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a tier setting, e.g. --set sft.epochs=5 (JSON values)")
    r.add_argument("--force", action="store_true", help="re-run every stage even when cached")
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
                kw["type"] = _seed if f.name == "seed" else kind
            default = f.default if f.default is not MISSING else None
            if f.name in ("model", "data", "out"):
                kw["help"] += " (required: here or in the --recipe file)"
            elif "(default" not in kw["help"] and default is not None:
                kw["help"] += f" (default: {default})"
            p.add_argument(flag, **kw)
    return parser


def config_from_args(argv=None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    if args["stage"] == "recipe":
        raise ValueError("config_from_args is for the cpt and sft stages")
    settings = {}
    if "recipe" in args:
        settings.update(load_recipe(args.pop("recipe")))
        if settings.get("stage", args["stage"]) != args["stage"]:
            raise SystemExit(f"train.py: the recipe is for stage {settings['stage']!r}, not {args['stage']!r}")
    settings.update(args)
    return TrainConfig(**settings)


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"train.py: --set {pair!r}: expected SECTION.KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _refuse_output_under_a_file(flag: str, path):
    """An --out/--work below a file (runs/x/y where runs/x is a file) stops now with one line, not after the
    first stages with a NotADirectoryError traceback from mkdir."""
    from minagent.cli_paths import output_path_problem

    problem = path is not None and output_path_problem(flag, path)
    if problem:
        raise SystemExit(f"train.py: {problem}")


def _refuse_a_model_that_is_no_checkpoint(flag: str, path):
    """A --model/--base-model that is a training run's directory (its model is in final/model) or holds no
    config.json stops now, naming the flag and the directory to pass instead, not as a tokenizer or config
    error from inside the run (the recipe's --base-model: after its first stages)."""
    from minagent.cli_paths import model_dir_problem

    problem = path is not None and model_dir_problem(flag, path)
    if problem:
        raise SystemExit(f"train.py: {problem}")


def run_recipe_command(args) -> int:
    from minagent.agent.llm import LLMError
    from minagent.microdomain.pipeline import run_recipe

    _refuse_output_under_a_file("--work", args.work or f"runs/{args.tier}")
    _refuse_a_model_that_is_no_checkpoint("--base-model", args.base_model)
    try:
        run_recipe(args.tier, work=args.work or f"runs/{args.tier}", seed=args.seed, teacher=args.teacher,
                   base_model=args.base_model, overrides=parse_overrides(args.set), force=args.force)
    except (ValueError, FileNotFoundError, LLMError) as e:  # LLMError: a --teacher URL that does not answer
        raise SystemExit(f"train.py: {e}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["recipe", *argv]  # `python train.py --tier smollm2` is the recipe, as bare `python train.py` is
    if argv[0] == "recipe":
        return run_recipe_command(build_parser().parse_args(argv))
    try:
        cfg = config_from_args(argv).validate()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"train.py: {e}")
    _refuse_output_under_a_file("--out", cfg.out)
    _refuse_a_model_that_is_no_checkpoint("--model", cfg.model)
    from minagent.training import train

    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the file/line; no traceback
        raise SystemExit(f"train.py: {e}")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every process returns; one summary is the run's
        print(result)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # checkpoints and finished stages are on disk: say how to go on from them
        stage = sys.argv[1:2] in (["cpt"], ["sft"])
        print("\ntrain.py: interrupted; " + ("run the same command with --resume to go on from its last checkpoint"
                                             if stage else "run the same command again to resume"), file=sys.stderr)
        sys.exit(130)
