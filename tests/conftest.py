"""Shared fixtures: tiny HF checkpoints built by transformers (the oracle) in a session temp dir."""
import pytest
import torch

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
