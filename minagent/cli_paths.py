"""Output paths given on the command line, checked before any work starts.

Why: `--out runs/x/results.jsonl` where `runs/x` is a file used to end (after a whole exam, or after the
recipe's first stages) in a bare FileExistsError / NotADirectoryError traceback from deep inside mkdir that
named neither the flag nor which part of the path was the problem. Model directories given as input are
checked here too (model_dir_problem): a training run's own directory is named as such, with its model's path.
"""
from __future__ import annotations

import json
from pathlib import Path


def file_in_the_way(path: str | Path) -> Path | None:
    """The nearest existing ancestor of `path` (not `path` itself) when it is not a directory: nothing can be
    created under it. None when the path can be made (missing ancestors are created by the writers)."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_path_problem(flag: str, path: str | Path) -> str | None:
    """One line naming the flag, the path and the file in the way; None when nothing is in the way."""
    blocker = file_in_the_way(path)
    if blocker is None:
        return None
    return f"{flag} {path}: {blocker} is a file, not a directory; nothing can be written under it"


CHECKPOINT_FILES = "config.json, model.safetensors and the tokenizer files"
# where a model lies inside a directory users mistake for one: train.py's --out, and a recipe stage's directory
EXPORTED_MODEL_SUBDIRS = ("final/model", "run/final/model")


def is_training_run_settings(config_json: Path) -> bool:
    """True when a config.json reads as the settings train.py writes into its --out ("stage", and none of a
    model config's model_type / architectures); False for a model's config.json and for an unreadable file."""
    try:
        data = json.loads(Path(config_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "stage" in data and "model_type" not in data and "architectures" not in data


def model_dir_problem(flag: str, path: str | Path) -> str | None:
    """One line naming the flag when `path` cannot be a checkpoint directory; None when it may be one.

    Why: a training run's --out holds a config.json of its own (the run's settings), so `--model runs/my-sft`
    (meant: runs/my-sft/final/model) used to fail as "field 'architectures' is None", and a directory with no
    config.json at all as "no tokenizer found": neither says which directory to pass. An http(s) URL (a model
    server, where the flag takes one) is not checked here."""
    if str(path).startswith(("http://", "https://")):
        return None
    p = Path(path)
    if not p.exists():
        return f"{flag} {path}: no such directory; expected a checkpoint directory ({CHECKPOINT_FILES})"
    if not p.is_dir():
        return f"{flag} {path}: a file, not a directory; expected a checkpoint directory ({CHECKPOINT_FILES})"
    config = p / "config.json"
    if config.is_file() and not is_training_run_settings(config):
        return None  # a model's (an unreadable one: the loader's own error names what is wrong with it)
    exported = next((p / sub for sub in EXPORTED_MODEL_SUBDIRS if (p / sub / "config.json").is_file()), None)
    if exported is not None:
        return f"{flag} {path}: a training run's directory, not a checkpoint; its model is {exported}"
    if config.is_file():
        return (f"{flag} {path}: {config} holds a training run's settings (train.py --out), not a model's; the "
                f"run's model would be {p / 'final' / 'model'}, which is not there (the run has not finished, "
                "or ran with --export false)")
    return f"{flag} {path}: no config.json; expected a checkpoint directory ({CHECKPOINT_FILES})"
