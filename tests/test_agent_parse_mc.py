"""Multiple-choice replies that open with the chosen letter and then explain it. Every expectation is what a human
reader concludes from the reply, written by hand: the answer is the first committed letter; letters named in the
explanation are mentions; a letter joined to it by or/and/a comma/a slash names no one option."""
import pytest

from minagent.agent.multiple_choice import to_letter

CHOICES = {"A": "git log", "B": "git add", "C": "git stash", "D": "git blame"}


@pytest.mark.parametrize("reply,letter", [
    ("B, because A is wrong", "B"), ("B because A is wrong", "B"), ("B,because A is wrong", "B"),
    ("B, since A and C are wrong", "B"), ("B; A is wrong", "B"), ("B - A is wrong", "B"),
    ("B (A is wrong)", "B"), ("B, not A", "B"), ("B, and not A", "B"), ("B, but A is close", "B"),
    ("B, as A only logs", "B"), ("**B**, because A is wrong", "B"), ("(B), because (A) is wrong", "B"),
    ("b, because a only shows history", "B"), ("B is correct", "B"),
    ("B is the correct answer because A only logs", "B"),
    # "option A" in the explanation is a mention (it was read as the answer)
    ("C, because option A lists commits", "C"),
])
def test_the_first_committed_letter_is_the_answer(reply, letter):
    assert to_letter(reply, CHOICES) == letter


@pytest.mark.parametrize("reply", [
    "A or B", "either A or C", "Either B or D", "The answer is either A or B", "A, B", "B, A", "A and B",
    "Both A and B", "B/A", "B or A", "B, or A", "B, or maybe A", "B (or A)", "The answer is B, or possibly C",
    "**A**, **B**", "The answer is **C** or **D**", "B) git add, or maybe A) git log", "A\nB",
])
def test_hedged_replies_name_no_letter(reply):
    assert to_letter(reply, CHOICES) is None


@pytest.mark.parametrize("reply,letter", [
    # the article "A" opens many option texts and answers: it is no letter unless punctuation or "because" follows
    ("A timeout occurs", None), ("A timeout, then a retry", "B"),
    # an explicit "the answer is" later in the reply beats a leading letter that is only discussed
    ("A is wrong, the answer is B", "B"),
])
def test_a_leading_article_or_discussed_letter_is_not_the_answer(reply, letter):
    assert to_letter(reply, {"A": "a retry", "B": "a timeout, then a retry", "C": "x", "D": "y"}) == letter


@pytest.mark.parametrize("text,answer", [
    # the sandbox's final_answer(answer) takes the keyword too: the answer is its value, not 'answer="B'
    ('final_answer(answer="B")', "B"), ("final_answer(answer = 'git log')  # done", "git log"),
    ('final_answer("""git\nlog""")', "git\nlog"), ('final_answer("it\'s (x")', "it's (x"), ("final_answer()", ""),
])
def test_forced_answer_reads_the_call_as_python_does(text, answer):
    from minagent.agent.executor import parse_forced_answer
    assert parse_forced_answer(text) == answer


@pytest.mark.parametrize("reply,letter", [
    # a letter in quotes or backticks is that letter
    ('"B"', "B"), ("'B'", "B"), ("`B`", "B"), ("**`B`**", "B"),
    # "X is the answer"; "I choose B"
    ("B is the answer", "B"), ("I choose B", "B"), ("I pick A because it logs", "A"), ("I choose a timeout", None),
    # an option named in passing gives way to the one called the answer
    ("Option A is wrong, the answer is B", "B"), ("I would not choose A, the answer is B", "B"),
    ("'B' is wrong, the answer is C", "C"), ("Choose C or D", None),
])
def test_quoted_letters_and_the_answer_named_after_a_mention(reply, letter):
    assert to_letter(reply, CHOICES) == letter
