"""Dropping a decimal's trailing zeros (8db9ee0) must not merge options that only those zeros tell apart.

Hand-checked oracle: Python 3.10 and Python 3.1 are two different releases, as are options "3.10" and "3.1"
of a version question; before 8db9ee0 an answer naming one exactly scored as that option."""
from minagent.agent.multiple_choice import is_correct, to_letter

VERSIONS = {"A": "Python 3.1", "B": "Python 3.10", "C": "Python 3.12"}


def test_an_answer_naming_an_option_exactly_is_that_option_though_another_differs_by_a_trailing_zero():
    assert to_letter("Python 3.10", VERSIONS) == "B"
    assert to_letter("Python 3.1", VERSIONS) == "A"
    assert is_correct("Python 3.10", {"choices": VERSIONS, "correct": "B"})
    assert not is_correct("Python 3.1", {"choices": VERSIONS, "correct": "B"})


def test_a_bare_number_and_a_reply_holding_the_option_are_told_apart_too():
    assert to_letter("3.10", {"A": "3.1", "B": "3.10"}) == "B"
    assert to_letter("3.1", {"A": "3.10", "B": "3.1"}) == "B"
    assert to_letter("It was added in Python 3.10.", VERSIONS) == "B"


def test_the_zeros_still_go_where_no_other_option_needs_them():
    assert to_letter("30.0 seconds", {"A": "3 seconds", "B": "30 seconds", "C": "300 seconds"}) == "B"
    assert to_letter("1.50 s", {"A": "1.5 s", "B": "15 s"}) == "A"
