"""Reciprocal rank fusion and weighted fusion against hand-computed examples and an exact-fraction oracle."""

import random
from fractions import Fraction

import numpy as np
import pytest

from minagent.retrieval.fusion import reciprocal_rank_fusion, weighted_fusion


def exact_rrf(ranked_lists, k=60):
    """Oracle: RRF in exact rational arithmetic, sorted by score then lower id."""
    total = {}
    for ids in ranked_lists:
        for rank, pid in enumerate(ids, start=1):
            total[pid] = total.get(pid, 0) + Fraction(1, k + rank)
    order = sorted(total, key=lambda pid: (-total[pid], pid))
    return order, [total[pid] for pid in order]


def test_rrf_hand_computed_with_passages_in_one_list_only():
    # 20: 1/62 + 1/61, 10: 1/61, 40: 1/62, 30: 1/63
    ids, scores = reciprocal_rank_fusion([[10, 20, 30], [20, 40]])
    assert ids.tolist() == [20, 10, 40, 30]
    np.testing.assert_allclose(scores, [1 / 62 + 1 / 61, 1 / 61, 1 / 62, 1 / 63], rtol=1e-15)
    ids, _ = reciprocal_rank_fusion([[2, 1], [1, 2]])          # equal scores: lower id first
    assert ids.tolist() == [1, 2]
    assert reciprocal_rank_fusion([[], []])[0].shape == (0,)


def test_rrf_equal_rank_sets_tie_exactly_whatever_the_list_order():
    """Passages 7, 3 and 5 hold ranks 1, 5 and 9 across three lists, each in a different order: their RRF
    scores are the same number, so they must come back as 3, 5, 7. Summing 1/61, 1/65, 1/69 in list order
    rounds differently for different orders, which broke the tie order."""
    def ranked(at_1, at_5, at_9, filler):
        lst = [filler + i for i in range(9)]
        lst[0], lst[4], lst[8] = at_1, at_5, at_9
        return lst
    lists = [ranked(7, 3, 5, 100), ranked(3, 5, 7, 200), ranked(5, 7, 3, 300)]
    ids, scores = reciprocal_rank_fusion(lists)
    assert ids[:3].tolist() == [3, 5, 7]
    assert scores[0] == scores[1] == scores[2]
    ref_ids, ref_scores = exact_rrf(lists)
    assert ids.tolist() == ref_ids
    np.testing.assert_allclose(scores, [float(s) for s in ref_scores], rtol=1e-15)


def test_rrf_random_lists_match_exact_fractions():
    rng = random.Random(5)
    for _ in range(200):
        pool = list(range(rng.randint(1, 30)))
        lists = [rng.sample(pool, rng.randint(0, len(pool))) for _ in range(rng.randint(1, 5))]
        ids, _ = reciprocal_rank_fusion(lists)
        assert ids.tolist() == exact_rrf(lists)[0], lists


def test_weighted_fusion_hand_computed():
    # bm25 min-max: 3 -> 1, 1 -> 0.5, 7 -> 0; dense: 1 -> 1, 4 -> 0; missing from a list counts 0
    bm25 = ([3, 1, 7], [10.0, 6.0, 2.0])
    dense = ([1, 4], [0.8, 0.4])
    ids, scores = weighted_fusion([bm25, dense], [0.5, 0.5])
    assert ids.tolist() == [1, 3, 4, 7]                      # 4 and 7 tie at 0: lower id first
    np.testing.assert_allclose(scores, [0.75, 0.5, 0.0, 0.0])
    ids, scores = weighted_fusion([bm25, dense], [0.2, 0.8])
    assert ids.tolist() == [1, 3, 4, 7]
    np.testing.assert_allclose(scores, [0.2 * 0.5 + 0.8, 0.2, 0.0, 0.0])
    ids, scores = weighted_fusion([([5, 6], [3.0, 3.0]), ([], [])], [0.5, 0.5])   # all equal: every one 1
    assert ids.tolist() == [5, 6] and scores.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="2 lists but 1 weights"):
        weighted_fusion([bm25, dense], [1.0])


def test_weighted_fusion_refuses_ids_and_scores_of_different_lengths():
    with pytest.raises(ValueError, match="list 1: 3 ids but 2 scores"):
        weighted_fusion([([1], [1.0]), ([1, 2, 3], [0.5, 0.4])], [0.5, 0.5])
