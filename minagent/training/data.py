"""From a TrainConfig to packed train and held-out rows, for either stage.

The held-out split is drawn over documents (CPT) or trajectories (SFT) before packing, with the run's seed, so
no eval token was ever a training token and the split is the same in every process and after a resume.
"""
from __future__ import annotations

import numpy as np

from .cpt_data import default_cache_dir, read_cpt_documents, tokenize_corpus
from .errors import TrainingDataError
from .packing import PackedRows, pack_examples, pack_stream
from .recipe import TrainConfig
from .trajectories import encode_trajectories, read_trajectories


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) index arrays: round(fraction * n) items held out, at least 1 when fraction > 0 and n >= 2."""
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    k = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng([seed, 1234]).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pid is None else pid


def _cpt_rows(cfg: TrainConfig, tokenizer, data: str, fraction: float, log):
    docs = read_cpt_documents(data, cfg.on_bad_line, log)
    cache = cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir()
    stream, owner = tokenize_corpus(docs, tokenizer, cfg.model, cache, log)
    train_idx, eval_idx = split_indices(len(docs), fraction, cfg.seed)

    def rows_for(idx):
        if len(idx) == 0:
            return None
        keep = np.isin(owner, idx)
        return pack_stream(stream[keep], owner[keep], cfg.max_length, _pad_id(tokenizer))

    return rows_for(train_idx), rows_for(eval_idx)


def _sft_rows(cfg: TrainConfig, tokenizer, data: str, fraction: float, log):
    trajectories = read_trajectories(data, cfg.on_bad_line, cfg.observation_role, log)
    train_idx, eval_idx = split_indices(len(trajectories), fraction, cfg.seed)

    def rows_for(idx, split):
        if len(idx) == 0:
            return None
        try:
            examples = encode_trajectories([trajectories[i] for i in idx], tokenizer, cfg.max_length,
                                           cfg.truncation, log)
        except TrainingDataError as e:
            if split == "train" or not str(e).startswith("every trajectory"):
                raise
            log(f"WARNING: no held-out evaluation rows: {e}")  # the run can train; it only loses its eval loss
            return None
        return pack_examples([(e.ids, e.trainable) for e in examples], cfg.max_length, _pad_id(tokenizer))

    return rows_for(train_idx, "train"), rows_for(eval_idx, "eval")


def build_rows(cfg: TrainConfig, tokenizer, log=print) -> tuple[PackedRows, PackedRows | None]:
    make = _cpt_rows if cfg.stage == "cpt" else _sft_rows
    if cfg.eval_data:
        train, _ = make(cfg, tokenizer, cfg.data, 0.0, log)
        evals, _ = make(cfg, tokenizer, cfg.eval_data, 0.0, log)
    else:
        train, evals = make(cfg, tokenizer, cfg.data, cfg.eval_fraction, log)
    if train is None or train.num_targets() == 0:
        raise TrainingDataError(f"{cfg.data}: no trained tokens after splitting and packing")
    return train, evals
