"""The whole model with the Triton kernels forced on (the CPU interpreter here) vs the PyTorch references:
the same logits, the same training step, the same greedy generation (padded batch: mask + decode paths).

The oracle for the reference path is transformers (tests/test_model_parity.py); here the references are the
oracle for the kernels, through every op the model calls.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports Triton (see test_kernels_triton)

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from minagent import load_model  # noqa: E402
from minagent.generation import SamplingParams, generate  # noqa: E402


from triton_check import triton_problem  # noqa: E402

_PROBLEM = triton_problem()
if _PROBLEM and os.environ.get("CI") == "true":
    pytest.fail(f"Triton model tests cannot run in CI: {_PROBLEM}", pytrace=False)
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VARIANT = "qwen3"  # GQA 4/2, head_dim 24 (a padded head dim), q/k norms: every kernel is on the path


@pytest.fixture
def model(hf_checkpoint):
    return load_model(hf_checkpoint(VARIANT)[0], dtype=torch.float32, device=DEVICE)


def _batch(vocab, B=2, T=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T + 1), generator=g).to(DEVICE)
    targets = ids[:, 1:].clone()
    targets[0, :3] = -100  # a masked prompt, as in SFT
    return ids[:, :-1], targets


def test_forward_logits_match(model):
    ids, _ = _batch(model.config.vocab_size)
    with torch.no_grad():
        with kernels.use_backend("torch"):
            want = model(ids)
        with kernels.use_backend("triton"):
            got = model(ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _train(model, backend, ids, targets, steps=1):
    """AdamW steps; the loss is the fused linear cross-entropy over the model's final hidden states."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses, first_grads = [], None
    with kernels.use_backend(backend):
        for step in range(steps):
            opt.zero_grad()
            hidden = model.forward_hidden(ids)
            loss = kernels.fused_linear_cross_entropy(hidden, model.lm_head.weight, targets, chunk_size=8)
            loss.backward()
            if step == 0:
                first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.step()
            losses.append(loss.item())
    return losses, first_grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_training_steps_match(hf_checkpoint):
    path = hf_checkpoint(VARIANT)[0]
    cfg_vocab = load_model(path).config.vocab_size
    ids, targets = _batch(cfg_vocab, seed=1)
    ref_losses, ref_grads, ref_params = _train(load_model(path, dtype=torch.float32, device=DEVICE), "torch",
                                               ids, targets)
    losses, grads, params = _train(load_model(path, dtype=torch.float32, device=DEVICE), "triton", ids, targets)

    naive = F.cross_entropy(load_model(path, device=DEVICE)(ids).flatten(0, 1), targets.flatten(),
                            ignore_index=-100)
    assert ref_losses[0] == pytest.approx(naive.item(), rel=1e-5)  # the fused loss is the plain loss
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=f"grad of {name}")
        torch.testing.assert_close(params[name], ref_params[name], atol=1e-5, rtol=1e-4, msg=name)


def test_greedy_generation_matches_on_a_padded_batch(model):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]  # ragged: left padding, a mask, then decode steps
    params = SamplingParams(max_new_tokens=6)
    with kernels.use_backend("torch"):
        want = [c.token_ids for c in generate(model, prompts, params)]
    with kernels.use_backend("triton"):
        got = [c.token_ids for c in generate(model, prompts, params)]
    assert got == want
    assert all(len(t) == 6 for t in want)
