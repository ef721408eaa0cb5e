"""Sampling distributions of generate(): temperature, top-k, top-p on hard logits, and whole sampled runs.

Oracles: transformers' TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper applied in the order its
generate() applies them (temperature, top-k, top-p); transformers' generate(do_sample=True) itself on a tiny
random model, seeded the same way. min_p and repetition penalty are not offered (SamplingParams refuses unknown
fields), so there is nothing of theirs to compare.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from minagent import load_model
from minagent.generation import SamplingParams, generate, sample_next, warp_logits

NEG_INF = float("-inf")


def hf_warped(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """transformers' warpers in generate()'s order, on float32 logits as its generate() hands them over."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.float().clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


def hard_logits() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "ties": torch.tensor([[1., 1., 1., 2., 2., 0., 0., 3.], [3., 3., 1., 1., 1., 1., 0., 0.]]),
        "few_values": torch.randint(-3, 4, (4, 300), generator=g).float(),
        "bf16": (torch.randn(3, 64, generator=g) * 2).bfloat16(),
        "neg_inf": torch.tensor([[0., NEG_INF, 1., NEG_INF, 1., 0.5]]),
        "one_finite": torch.tensor([[NEG_INF, 3., NEG_INF]]),
        "all_equal": torch.zeros(2, 10),
        "spread": torch.randn(4, 500, generator=g) * 4,
    }


GRID = list(itertools.product([0.3, 1.0, 2.5], [0, 1, 3, 7, 10_000], [0.0, 1e-9, 0.1, 0.5, 0.9, 1 - 1e-7, 1.0]))


@pytest.mark.parametrize("name", sorted(hard_logits()))
def test_warped_distribution_equals_transformers(name):
    """Same kept set (the -inf pattern) and the same renormalised probabilities, over temperature x top_k (1, top_k
    above the vocabulary) x top_p (0, tiny, 1 - 1e-7, 1) on logits with ties, -inf entries, all equal, bf16."""
    logits = hard_logits()[name]
    for temperature, top_k, top_p in GRID:
        want = hf_warped(logits, temperature, top_k, top_p)
        got = warp_logits(logits, SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p))
        where = (name, temperature, top_k, top_p)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), where
        torch.testing.assert_close(got.softmax(-1), want.softmax(-1), rtol=0, atol=1e-7, msg=str(where))


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Upper tail of Pearson's chi-square statistic over the tokens of non-zero probability."""
    n, keep = counts.sum(), probs > 0
    expected = probs[keep].double() * n
    stat = ((counts[keep].double() - expected) ** 2 / expected).sum()
    dof = int(keep.sum()) - 1
    if dof == 0:
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.7, 4, 1.0), (1.0, 0, 0.7),
                                                     (0.8, 6, 0.9), (1.3, 10_000, 1e-9)])
def test_sample_frequencies_follow_the_transformers_distribution(temperature, top_k, top_p):
    """sample_next's draws (not only its warped logits): only tokens transformers keeps are ever drawn, with the
    frequencies of its probabilities (chi-square, fixed seed, 40000 draws)."""
    logits = torch.tensor([2., 2., 1., 1., 1., 0.5, NEG_INF, -1., 3., 3., -2., NEG_INF])
    probs = hf_warped(logits[None], temperature, top_k, top_p).softmax(-1)[0]
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    draws = sample_next(logits.expand(40_000, -1), params, torch.Generator().manual_seed(1))
    counts = torch.bincount(draws, minlength=logits.numel())
    assert set(draws.unique().tolist()) <= set(probs.nonzero().flatten().tolist())
    assert chi_square_p_value(counts, probs) > 1e-3


def test_temperature_zero_is_transformers_greedy_even_on_ties():
    logits = torch.tensor([[1., 3., 3., 0.], [NEG_INF, 0., 0., 0.], [5., 5., 5., 5.]])
    assert sample_next(logits, SamplingParams(temperature=0.0, top_k=2, top_p=0.1), None).tolist() == \
        torch.argmax(logits, dim=-1).tolist() == [1, 1, 0]  # transformers' greedy search takes torch.argmax


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.5, 20, 1.0), (1.2, 0, 0.8),
                                                     (0.9, 50, 0.5)])
def test_sampled_batch_equals_transformers_generate_with_the_same_seed(hf_checkpoint, temperature, top_k, top_p):
    """A left-padded batch sampled by transformers' generate after torch.manual_seed(s) and by ours with seed=s:
    the same tokens, row for row. Both draw with torch.multinomial over [B, V] probabilities from a CPU generator
    seeded s, so any difference in the warped distribution, in its order of operations or in how the rows draw
    shows up as a different token."""
    path, hf = hf_checkpoint("llama-gqa")
    model = load_model(path)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 257, (n,), generator=g).tolist() for n in (5, 9, 2)]
    T = max(map(len, prompts))
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):], mask[b, T - len(p):] = torch.tensor(p), 1
    for seed in (0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            want = hf.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=True, temperature=temperature,
                               top_k=top_k, top_p=top_p, eos_token_id=None, pad_token_id=0)
        got = generate(model, prompts, SamplingParams(max_new_tokens=15, temperature=temperature, top_k=top_k,
                                                      top_p=top_p, seed=seed))
        assert [c.token_ids for c in got] == want[:, T:].tolist()
