"""A reply that opens with a letter, explains it in parentheses and then joins a second option names no one
option. Expectations written by hand (what a reader concludes), and they are what to_letter gave before the
leading-letter rule (ecbc151) read the first letter as the answer. Likewise an answer that is an option's own
text ("B (bytes)") names that option."""
import pytest

from minagent.agent.multiple_choice import to_letter

CHOICES = {"A": "git log", "B": "git add", "C": "git stash", "D": "git blame"}


@pytest.mark.parametrize("reply", [
    "A (git log) or B (git add)", "B (git add), or maybe A (git log)", "C (git stash) and D (git blame)",
    "B (stages files) or C",
])
def test_a_second_option_after_the_aside_hedges(reply):
    assert to_letter(reply, CHOICES) is None


@pytest.mark.parametrize("reply,letter", [
    # letters inside the aside stay mentions; an aside alone keeps the leading letter
    ("B (A is wrong)", "B"), ("B (not A)", "B"), ("B (git add)", "B"), ("B (A only logs), because it stages", "B"),
])
def test_the_aside_alone_keeps_the_leading_letter(reply, letter):
    assert to_letter(reply, CHOICES) == letter


@pytest.mark.parametrize("reply,letter", [
    # an answer that is an option's own text names that option, even when the text opens like a letter
    ("B (bytes)", "C"), ("b (bytes)", "C"), ("A, then B", "D"), ("B (bytes).", "C"),
    # and a letter that explains itself is still that letter
    ("B (20)", "B"), ("A, because 10", "A"),
])
def test_an_option_text_that_opens_with_a_letter_is_that_option(reply, letter):
    assert to_letter(reply, {"A": "10", "B": "20", "C": "B (bytes)", "D": "A, then B"}) == letter
