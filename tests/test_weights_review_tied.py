"""A config that says tie_word_embeddings but a checkpoint that stores a *different* lm_head.weight.

Oracle: transformers 5, which in that case does not tie (it warns that the config is wrong and loads both
matrices); only when the two stored tensors are equal does it tie them. minagent must compute the same logits.
"""
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minagent import load_model, save_model
from minagent.weights import CheckpointError

IDS = torch.randint(0, 257, (2, 11), generator=torch.Generator().manual_seed(5))


def _tied_checkpoint_with_head(src, dst, head_from_embedding: bool):
    """Copy of a tied checkpoint that also stores lm_head.weight: a copy of the embedding, or other values."""
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    sd = load_file(dst / "model.safetensors")
    embed = sd["model.embed_tokens.weight"]
    sd["lm_head.weight"] = embed.clone() if head_from_embedding else torch.randn(
        embed.shape, generator=torch.Generator().manual_seed(0)) * 0.08
    save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})


def _transformers(path):
    transformers.logging.set_verbosity_error()  # (it warns about the untied pair, which is the point here)
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    finally:
        transformers.logging.set_verbosity_warning()


def test_a_stored_head_that_differs_from_the_embedding_is_used_untied_as_in_transformers(hf_checkpoint, tmp_path):
    _tied_checkpoint_with_head(hf_checkpoint("qwen2-tied")[0], tmp_path, head_from_embedding=False)
    hf = _transformers(tmp_path)
    assert hf.lm_head.weight is not hf.model.embed_tokens.weight  # the oracle's own reading: not tied
    ours = load_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)
    assert not ours.config.tie_word_embeddings  # the config now says what the model is, so an export is right
    save_model(ours, tmp_path / "export")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(IDS).logits, hf(IDS).logits)


def test_a_stored_head_equal_to_the_embedding_stays_tied_as_in_transformers(hf_checkpoint, tmp_path):
    _tied_checkpoint_with_head(hf_checkpoint("qwen2-tied")[0], tmp_path, head_from_embedding=True)
    hf = _transformers(tmp_path)
    ours = load_model(tmp_path)
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) and ours.config.tie_word_embeddings
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)


def test_a_stored_head_of_the_wrong_shape_is_named(hf_checkpoint, tmp_path):
    _tied_checkpoint_with_head(hf_checkpoint("qwen2-tied")[0], tmp_path, head_from_embedding=True)
    sd = load_file(tmp_path / "model.safetensors")
    sd["lm_head.weight"] = sd["lm_head.weight"][:-1].clone()
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError):  # the oracle refuses it too (mismatched sizes)
        _transformers(tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'lm_head\.weight'.*\(256, 64\).*\(257, 64\)"):
        load_model(tmp_path)
