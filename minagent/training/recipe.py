"""Every training setting in one dataclass; `train.py` builds its flags (and their --help) from it.

Settings come from three layers, later ones winning: the defaults below, a recipe (a named one such as
`agent-distillation`, or a JSON file whose keys are these field names), and the flags given on the command line.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..chat import OBSERVATION_ROLES
from ..lora import SHORT_NAMES


def _f(default, help_text, **kw):
    return field(default=default, metadata={"help": help_text, **kw})


@dataclass
class TrainConfig:
    stage: str = _f("sft", "cpt: next-token loss on manuals; sft: loss on the assistant turns of trajectories",
                    choices=("cpt", "sft"))
    model: str = _f(None, "base checkpoint directory (HF config.json + safetensors + tokenizer files)")
    data: str = _f(None, "cpt: a directory of .txt/.md/.html manuals, one such file, or a JSONL of "
                         "{\"text\": ...}; "
                         "sft: a trajectory JSONL (see README, 'Trajectory format')")
    out: str = _f(None, "output directory: checkpoints/, metrics.jsonl, final/model (merged HF checkpoint), "
                        "final/adapter (PEFT LoRA adapter)")
    eval_data: str = _f(None, "held-out data in the same format as --data (default: split off --eval-fraction)")
    eval_fraction: float = _f(0.05, "share of documents/trajectories held out for the eval loss when "
                                     "--eval-data is not given (0 = no eval)")
    method: str = _f("lora", "lora: train low-rank adapters on a frozen base; full: train every weight",
                     choices=("lora", "full"))
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: float = _f(32.0, "LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with --rslora)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input")
    lora_targets: str = _f("all-linear", "comma-separated module names (q,k,v,o,gate,up,down or q_proj,...) or "
                                         "all-linear (every linear layer but lm_head, as peft)")
    rslora: bool = _f(False, "rank-stabilised LoRA: scale alpha/sqrt(r)")
    lora_rank_pattern: str = _f(None, "per-module ranks, peft's rank_pattern: a JSON object {regex: r} whose keys "
                                      "match the end of a module name at a dot, the first matching key winning, e.g. "
                                      "'{\"down_proj\": 8}' (a recipe file may give the object itself)",
                                recipe_types=(dict, str))
    lora_alpha_pattern: str = _f(None, "per-module alphas, peft's alpha_pattern: a JSON object {regex: alpha}, "
                                       "matched as --lora-rank-pattern", recipe_types=(dict, str))
    lora_layers: str = _f(None, "adapt only these transformer blocks: comma-separated indices, e.g. 0,1,2 (peft's "
                                "layers_to_transform; a recipe file may give a list)", recipe_types=(list, int, str))
    lora_exclude: str = _f(None, "comma-separated module names that --lora-targets would select but that get no "
                                 "adapter, e.g. down or o_proj (peft's exclude_modules; a recipe file may give a "
                                 "list)", recipe_types=(list, str))
    lora_init: str = _f("default", "LoRA initialisation: default (A kaiming-uniform, B zero) or mica (peft's MiCA: "
                                   "B = the minor left singular vectors of each W, frozen; A zero and trained)",
                        choices=("default", "mica"))
    max_length: int = _f(2048, "tokens per packed row; sft: longest trajectory kept (see --truncation)")
    truncation: str = _f("drop", "sft trajectories longer than --max-length: drop (skip, reported), truncate "
                                 "(keep the start), fail (stop)", choices=("drop", "truncate", "fail"))
    on_bad_line: str = _f("fail", "a malformed JSONL line: fail (stop with file:line) or skip (report and go on)",
                          choices=("fail", "skip"))
    observation_role: str = _f("user", "chat role that tool/observation messages are rendered with (an SFT "
                               "export records it for the agent)", choices=OBSERVATION_ROLES)
    batch_size: int = _f(4, "rows per micro-batch per process")
    grad_accum: int = _f(1, "micro-batches per optimizer step (global batch = batch_size * grad_accum * "
                            "processes rows)")
    epochs: float = _f(1.0, "passes over the training rows (ignored when --max-steps is set)")
    max_steps: int = _f(None, "optimizer steps to run (default: from --epochs)")
    lr: float = _f(2e-4, "peak learning rate")
    min_lr_ratio: float = _f(0.1, "cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = _f(None, "linear warmup steps (default: 3%% of the steps, at least 1)")
    weight_decay: float = _f(0.0, "AdamW weight decay (not applied to norms, biases or LoRA B)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    clip: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping)")
    precision: str = _f("auto", "auto: bf16 autocast on GPU, fp32 on CPU; bf16: autocast bf16; fp32: none",
                        choices=("auto", "bf16", "fp32"))
    base_dtype: str = _f("auto", "dtype of the frozen base weights: auto (bf16 on GPU for LoRA, else fp32), "
                                 "float32, bfloat16", choices=("auto", "float32", "bfloat16"))
    grad_checkpointing: bool = _f(False, "recompute each layer's activations in the backward (less memory, "
                                         "~30%% more compute)")
    seed: int = _f(0, "seed for the data split, the data order, LoRA init and dropout")
    eval_every: int = _f(0, "evaluate every N optimizer steps (0 = only at the end)")
    save_every: int = _f(100, "write a checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    log_every: int = _f(1, "write a metrics.jsonl line every N optimizer steps")
    resume: bool = _f(False, "continue from the latest checkpoint in --out (model, optimizer, schedule, RNG, "
                             "data position)")
    cache_dir: str = _f(None, "where the tokenised CPT corpus is cached (default $MINAGENT_CACHE/cpt-tokens or "
                              "~/.cache/minagent/cpt-tokens)")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto (cuda:LOCAL_RANK when a GPU exists)")
    export: bool = _f(True, "at the end write final/model (merged HF safetensors) and final/adapter (PEFT)")
    progress: bool = _f(True, "show a tqdm progress bar (loss, tokens/s)")

    def validate(self):
        for name in ("model", "data", "out"):
            if getattr(self, name) in (None, ""):
                raise ValueError(f"--{name.replace('_', '-')} is required")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, f.name)!r}")
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "save_every", "log_every",
                     "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ValueError(f"--max-steps must be >= 1 (or left out: from --epochs), got {self.max_steps!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"--lr must be > 0, got {self.lr!r}")
        # Out of range, these would not fail: a negative warmup starts the cosine part-way, min_lr_ratio > 1 makes
        # the rate rise, a negative clip turns clipping off, epochs 0 runs one step, eval_every < 0 evaluates
        # every step. (NaN fails every comparison, so each check is written to refuse it.)
        finite = math.isfinite
        checks = {"epochs": (lambda v: finite(v) and v > 0, "> 0"),
                  "warmup_steps": (lambda v: v >= 0, ">= 0"),
                  "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
                  "weight_decay": (lambda v: finite(v) and v >= 0, ">= 0"),
                  "clip": (lambda v: finite(v) and v >= 0, ">= 0 (0 = no clipping)"),
                  "beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
                  "beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
                  "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
                  "eval_every": (lambda v: v >= 0, ">= 0 (0 = only at the end)"),
                  "seed": (lambda v: isinstance(v, int) and 0 <= v < 2 ** 64, "an integer >= 0")}
        for name, (ok, rule) in checks.items():
            v = getattr(self, name)
            if v is None and name == "warmup_steps" or name == "epochs" and self.max_steps is not None:
                continue  # warmup None: 3% of the steps; epochs is ignored when --max-steps is set
            if not ok(v):
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {v!r}")
        self._normalise_lora_selection()
        for name in ("model", "data"):
            if not Path(getattr(self, name)).exists():
                raise FileNotFoundError(f"--{name} {getattr(self, name)}: no such file or directory")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out}: a file is there; --out names the run's directory")
        return self

    def _normalise_lora_selection(self):
        """The LoRA selection settings as canonical text (given as flags, recipe values or Python objects): checked
        here, before any work, and written the same way however they were spelled, so a resumed run compares equal
        settings as equal (key order is kept: in a pattern the first matching key wins)."""
        self.lora_rank_pattern = _pattern_setting("lora_rank_pattern", self.lora_rank_pattern, rank=True)
        self.lora_alpha_pattern = _pattern_setting("lora_alpha_pattern", self.lora_alpha_pattern, rank=False)
        self.lora_layers = _layers_setting(self.lora_layers)
        self.lora_exclude = _names_setting("lora_exclude", self.lora_exclude)

    def lora_selection(self) -> dict:
        """The LoRA selection settings as LoraConfig's keyword arguments (peft's names and types)."""
        self._normalise_lora_selection()
        return dict(rank_pattern=json.loads(self.lora_rank_pattern or "{}"),
                    alpha_pattern=json.loads(self.lora_alpha_pattern or "{}"),
                    layers_to_transform=[int(i) for i in self.lora_layers.split(",")] if self.lora_layers else None,
                    exclude_modules=self.lora_exclude.split(",") if self.lora_exclude else None)

    def to_dict(self) -> dict:
        return asdict(self)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _pattern_setting(name: str, value, rank: bool) -> str | None:
    """A rank/alpha pattern as canonical JSON text (None when unset or empty). Keys are regexes (peft compiles them
    on load: a bad one would fail there, after training); ranks are positive integers, alphas finite numbers > 0."""
    what = "rank" if rank else "alpha"
    example = '{"down_proj": 8}' if rank else '{"down_proj": 16}'
    if value is None or isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{_flag(name)}: not JSON ({e.msg} at column {e.colno}); expected an object "
                             f"{{module regex: {what}}}, e.g. '{example}'") from None
    if not isinstance(value, dict):
        # a bare number is one rank/alpha for every module, which is another flag: argparse takes `--lora-rank 4`
        # (no such flag) as an abbreviation of --lora-rank-pattern, so name the flag that was meant
        meant = ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            meant = (" (one rank for every module is --lora-r; argparse reads --lora-rank as short for "
                     "--lora-rank-pattern)" if rank else " (one alpha for every module is --lora-alpha)")
        raise ValueError(f"{_flag(name)}: expected a JSON object {{module regex: {what}}}, e.g. '{example}', "
                         f"got {value!r}{meant}")
    for key, v in value.items():
        try:
            re.compile(key)
        except re.error as e:
            raise ValueError(f"{_flag(name)}: key {key!r} is not a valid regular expression ({e})") from None
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # (JSON's Infinity)
        if rank and not (number and v == int(v) and v >= 1):
            raise ValueError(f"{_flag(name)}: the rank for {key!r} must be a positive integer, got {v!r}")
        if not rank and not (number and math.isfinite(v) and v > 0):
            raise ValueError(f"{_flag(name)}: the alpha for {key!r} must be a number > 0, got {v!r}")
    if rank:
        value = {k: int(v) for k, v in value.items()}
    return json.dumps(value) if value else None


def _layers_setting(value) -> str | None:
    """Block indices as "0,2,5" (sorted, unique), from "0, 2,5", [0, 2, 5] or 3; None when unset."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    out = set()
    for item in items:
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise ValueError(f"--lora-layers: {item!r} is not a block index (expected comma-separated integers "
                             ">= 0, e.g. 0,1,2)")
        out.add(item)
    return ",".join(map(str, sorted(out))) if out else None


def _names_setting(name: str, value) -> str | None:
    """Module names as "q_proj,down_proj" (short names such as q or down spelled out, as --lora-targets takes
    them; order kept, duplicates dropped), from a comma-separated string or a list; None when unset."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{_flag(name)}: expected comma-separated module names (or a list of them), got {value!r}")
    names = [SHORT_NAMES.get(v.strip(), v.strip()) for v in items if v.strip()]
    return ",".join(dict.fromkeys(names)) or None


# The agent-distillation paper's SFT setting (ANCHORS.md): LoRA r=64, alpha=128, dropout 0.05 on all linear
# layers, lr 2e-4, 2 epochs, effective batch 8, max length 10240, bf16.
RECIPES = {
    "agent-distillation": dict(stage="sft", method="lora", lora_r=64, lora_alpha=128.0, lora_dropout=0.05,
                               lora_targets="all-linear", lr=2e-4, epochs=2.0, batch_size=1, grad_accum=8,
                               max_length=10240, precision="auto"),
}


def load_recipe(name_or_path: str) -> dict:
    """A named recipe or a JSON file {field: value}; unknown keys are an error naming the file."""
    if name_or_path in RECIPES:
        return dict(RECIPES[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {name_or_path!r}: not a named recipe ({', '.join(RECIPES)}) "
                                "and no such file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:  # a ValueError too, but its message would not name the file
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); a recipe "
                         "is a JSON file of settings") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of settings")
    known = {f.name: f for f in fields(TrainConfig)}
    out = {}
    for k, v in raw.items():
        key = k.replace("-", "_")
        if key not in known:
            raise ValueError(f"{path}: unknown setting {k!r}; known: {', '.join(sorted(known))}")
        out[key] = _checked(path, k, v, known[key])
    return out


_JSON_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _checked(path, key: str, value, f):
    """A recipe file's value of the field's type ("lr": "1e-3" or "export": "false" would fail late or mean the
    opposite); null only where the field's default is None (e.g. max_steps: from the epochs)."""
    if value is None and f.default is None:
        return value
    kinds = f.metadata.get("recipe_types") or _JSON_TYPES[f.type]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ValueError(f"{path}: setting {key!r} must be a JSON {_json_kind_names(f)}"
                         f"{' or null' if f.default is None else ''}, got {value!r}")
    return value


def _json_kind_names(f) -> str:
    names = {dict: "object", list: "list", int: "int", float: "float", str: "str", bool: "bool"}
    kinds = f.metadata.get("recipe_types")
    return " or ".join(names[k] for k in kinds) if kinds else f.type
