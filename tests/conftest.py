"""Shared fixtures: tiny HF checkpoints built by transformers (the oracle) in a session temp dir."""
import os

import torch

# Triton (imported by transformers, by kernels on first use) reads this once at import: set it before anything
# imports it, so the kernel tests run the Triton interpreter on a machine without a GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from hf_tiny import VARIANTS, save_hf_model

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """variant -> (directory, the transformers model that wrote it)."""
    made = {}

    def get(variant):
        if variant not in made:
            d = tmp_path_factory.mktemp(variant)
            made[variant] = (d, save_hf_model(variant, d))
        return made[variant]

    return get


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    return request.param


def _force_bm25_path(monkeypatch, path):
    """Make every BM25 query (single and batched) take one path: "maxscore" or "exhaustive" (bm25_dense, which
    an index with zero scores can never take)."""
    import numpy as np
    from minagent.retrieval.bm25 import BM25Index

    def exhaustive(self, volume, single):
        take = path == "exhaustive" and self.positive
        return take if single else np.full(np.shape(volume), take)

    monkeypatch.setattr(BM25Index, "exhaustive", exhaustive)


@pytest.fixture(params=["maxscore", "exhaustive"])
def bm25_path(request, monkeypatch):
    """Runs a BM25 test once per query path: test indexes are small, and left alone every query on them would
    be summed in full."""
    _force_bm25_path(monkeypatch, request.param)
    return request.param


@pytest.fixture
def maxscore_only(monkeypatch):
    """BM25 queries by MaxScore alone (for tests of its internals)."""
    _force_bm25_path(monkeypatch, "maxscore")


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path of the cached SmolLM2-135M-Instruct.Q4_1.gguf (skips when it cannot be downloaded, fails under CI)."""
    from minagent.fetch import FetchError, fetch_smollm2_gguf

    try:
        return fetch_smollm2_gguf(verbose=False)
    except FetchError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"SmolLM2 GGUF not available: {e}")


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory):
    """SmolLM2-135M-Instruct converted by the code under test (fresh each session), float32."""
    from minagent.gguf import convert_gguf

    return convert_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls with 2 OpenMP threads on a loaded 2-core machine spin for milliseconds each: use 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama with a Qwen-style BPE tokenizer and Qwen2.5's chat template (tests/training_tiny.py)."""
    from training_tiny import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.getbasetemp() / "training-tiny")
