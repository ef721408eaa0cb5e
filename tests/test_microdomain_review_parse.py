"""parse_reply on hand-checked chatty replies: a Markdown-emphasised answer marker ("**Answer**: 30", the form
chat models use for a bold label) is still the marker."""
import pytest

from minagent.agent.multiple_choice import is_correct
from minagent.microdomain import formats

SHORT = {"answer": "30", "aliases": ["30 seconds"]}
CHOICE = {"choices": {"A": "15", "B": "30", "C": "45", "D": "60"}, "correct": "B"}


@pytest.mark.parametrize("reply, cot, want", [
    ("**Answer**: 30", False, "30"),
    ("The manual lists it under Defaults.\n\n**Answer**: 30 seconds", False, "30 seconds"),
    ("Thought: alpha_timeout defaults to 30 seconds.\n**Answer**: 30", True, "30"),
    ("Thought: that is option B.\n__Answer__: B", True, "B"),
    ("*Answer*: B", False, "B"),
    ("**The answer is**: B", False, "B"),
])
def test_an_emphasised_answer_marker_is_the_marker(reply, cot, want):
    got = formats.parse_reply(reply, cot=cot)
    assert got == want
    assert is_correct(got, SHORT if want[0].isdigit() else CHOICE)


def test_the_forms_that_worked_before_still_do():
    assert formats.parse_reply("**Answer:** 30") == "** 30"  # the bold closes after the colon: kept as before
    assert is_correct(formats.parse_reply("**Answer:** 30"), SHORT)
    assert formats.parse_reply("Answer: **B**") == "**B**"
    assert formats.parse_reply("B") == "B"
    assert formats.parse_reply("Thought: no marker here", cot=True) == ""
