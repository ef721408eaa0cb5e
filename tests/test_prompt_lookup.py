"""NgramIndex, the lookup behind prompt-lookup drafts, on hand-checked sequences."""
import pytest

from minagent.prompt_lookup import NgramIndex


def test_draft_is_what_followed_the_last_ngram_before():
    # last 2 tokens (1, 2) occurred at positions 0-1, followed by 3, 4, 1
    assert NgramIndex([1, 2, 3, 4, 1, 2], ngram=2).draft(3) == [3, 4, 1]
    assert NgramIndex([1, 2, 3, 4, 1, 2], ngram=2).draft(1) == [3]


def test_latest_earlier_occurrence_wins():
    # (5, 6) occurs at 0-1 (then 7) and at 3-4 (then 8): the latest one before the end is used
    assert NgramIndex([5, 6, 7, 5, 6, 8, 5, 6], ngram=2).draft(2) == [8, 5]


def test_draft_stops_at_the_end_of_the_sequence():
    # (1,) occurred at 0, followed by 2 and then the current last token: only two tokens exist after it
    assert NgramIndex([1, 2, 1], ngram=1).draft(5) == [2, 1]


def test_no_earlier_occurrence_or_too_short_gives_no_draft():
    assert NgramIndex([1, 2, 3, 4], ngram=2).draft(4) == []
    assert NgramIndex([1], ngram=2).draft(4) == []
    assert NgramIndex([1, 2, 1, 2], ngram=2).draft(0) == []


def test_appending_updates_the_index_incrementally():
    idx = NgramIndex([9, 1, 2, 3], ngram=2)
    assert idx.draft(2) == []
    idx.extend([9, 1])  # (9, 1) occurred at 0-1, followed by 2, 3
    assert idx.draft(2) == [2, 3]
    idx.append(7)  # (1, 7) is new
    assert idx.draft(2) == []
    assert idx.ids == [9, 1, 2, 3, 9, 1, 7]


def test_ngram_must_be_positive():
    with pytest.raises(ValueError, match="ngram must be >= 1"):
        NgramIndex([1, 2], ngram=0)
