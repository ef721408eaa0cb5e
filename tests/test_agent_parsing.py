"""Step parsing and answer normalisation on what small models really write. Expectations are hand-written."""
import pytest

from minagent.agent.multiple_choice import is_correct, normalize_text, to_letter
from minagent.agent.parsing import parse_step, step_message
from minagent.agent.executor import parse_forced_answer

CANONICAL = "Thought: look it up\nCode:\n```py\nprint(search('git log'))\n```<end_code>"


def test_canonical_step():
    s = parse_step(CANONICAL)
    assert (s.thought, s.code, s.error) == ("look it up", "print(search('git log'))", None)
    assert step_message(s) == CANONICAL


@pytest.mark.parametrize("raw,code", [
    # the model writes the observation itself: everything from it on is dropped
    ("Thought: t\nCode:\n```py\nx = 1\n```\nObservation: x is 1, the answer is 7", "x = 1"),
    # no <end_code>, prose after the block
    ("Thought: t\nCode:\n```python\nprint(2)\n```\nThis prints 2. Then I will answer.", "print(2)"),
    # an unclosed fence (the stop string cut it, or it was forgotten)
    ("Thought: t\nCode:\n```py\nprint(3)\n", "print(3)"),
    # no fence at all after Code:
    ("Thought: t\nCode:\nprint(4)\nfinal_answer(4)", "print(4)\nfinal_answer(4)"),
    # a bare final_answer line
    ("Thought: I know it.\nfinal_answer('git log')", "final_answer('git log')"),
    # a plain "Final answer:" sentence
    ("Thought: done.\nFinal answer: git stash", "final_answer('git stash')"),
    # two blocks are joined in order
    ("Thought: t\n```py\na = 1\n```\nand\n```py\nprint(a)\n```<end_code>", "a = 1\n\nprint(a)"),
    # Calling tools: (the JSON tool-call habit) ends the step
    ("Thought: t\nCode:\n```py\nprint(5)\n```Calling tools:\n[{'name': 'x'}]", "print(5)"),
    # a shell command or JSON shown in its own block before the code: not code to run, and its closing fence
    # must not open a block of the prose that follows
    ("Thought: in a shell: \n```bash\ngit log\n```\nLet me check.\nCode:\n```py\nprint(6)\n```", "print(6)"),
    ("Thought: plan\n```json\n{\"q\": 1}\n```\nCode:\n```python\nprint(7)\n```<end_code>", "print(7)"),
    # Windows line ends, an indented block (inside a list item)
    ("Thought: t\r\nCode:\r\n```python\r\nprint(8)\r\n```\r\n", "print(8)"),
    ("Thought: t\n  ```py\n  for i in range(2):\n      print(i)\n  ```", "for i in range(2):\n    print(i)"),
    # a closed block, then a second one left open
    ("Thought: t\n```py\na = 1\n```\nNow:\n```py\nfinal_answer(a)\n", "a = 1\n\nfinal_answer(a)"),
    # Code: then the code with only a closing fence
    ("Thought: t\nCode:\nprint(9)\n```<end_code>", "print(9)"),
    # markdown emphasis around "Final Answer:"; the answer on the next line; underscores that are the answer
    ("Thought: done.\n**Final Answer:** B", "final_answer('B')"),
    ("Thought: done.\nFinal answer:\ngit stash", "final_answer('git stash')"),
    ("Thought: done.\nFinal answer: __init__.py", "final_answer('__init__.py')"),
    # backticks inside the prose open no block
    ("Thought: I will run ```git log``` via search.\nCode:\n```py\nprint(10)\n```<end_code>", "print(10)"),
])
def test_tolerated_variants(raw, code):
    s = parse_step(raw)
    assert s.error is None and s.code == code


@pytest.mark.parametrize("raw,code", [
    # ``` inside a string literal is code, not the closing fence (smolagents closes only at a line's start)
    ('Thought: t\nCode:\n```py\nfinal_answer("run ```git log``` first")\n```<end_code>',
     'final_answer("run ```git log``` first")'),
    ("Thought: t\nCode:\n```py\nprint('```')\nprint(1)\n```", "print('```')\nprint(1)"),
    # a fence closed at the end of the code's own line still closes
    ("Thought: t\nCode:\n```py\nfinal_answer('x')```<end_code>", "final_answer('x')"),
    ("Thought: t\nCode:\n```py\nprint(1)```\nDone.", "print(1)"),
    # ... also when prose with a quote or apostrophe follows it on the same line (outside any string literal)
    ("Thought: t\nCode:\n```py\nr = search('x')\nprint(r)``` Let's see what it says.", "r = search('x')\nprint(r)"),
    ('Thought: t\nCode:\n```py\nfinal_answer("40")```The answer is "40".', 'final_answer("40")'),
    ("Thought: t\nCode:\n```py\nprint(r)  # it's here```", "print(r)  # it's here"),
])
def test_backticks_inside_code_strings_do_not_close_the_block(raw, code):
    s = parse_step(raw)
    assert s.error is None and s.code == code
    compile(s.code, "<step>", "exec")


def test_no_code_is_a_parse_failure_that_explains_the_format():
    s = parse_step("Thought: I am not sure what to do.")
    assert s.code is None and "no code found" in s.error and "```py" in s.error
    assert step_message(s) == "Thought: I am not sure what to do."


def test_unclosed_fence_is_closed_in_the_kept_step():
    assert step_message(parse_step("Thought: t\nCode:\n```py\nprint(3)")) == "Thought: t\nCode:\n```py\nprint(3)\n```<end_code>"


@pytest.mark.parametrize("answer,letter", [
    ("B", "B"), ("(b)", "B"), ("C.", "C"), ("B) git log", "B"), ("The answer is D.", "D"),
    ("Answer: a", "A"), ("git stash", "C"), ("I would use git stash here", "C"), ("E", None), ("", None),
    ("**B**", "B"), ("** B", "B"),
    # "is" and a colon together, the letter in bold
    ("The correct answer is: C", "C"), ("The answer is: b.", "B"), ("The correct answer is: **D**", "D"),
    # two letters named together are no one option; a letter only mentioned beside the answer does not count
    ("The answer is A or B", None), ("(A) and (B)", None), ("Answer: A, B", None), ("Option B or option C", None),
    ("A) git log, B) git add", None), ("The answer is B, not A", "B"), ("(C) git stash (not A)", "C"),
    # other letters joined to each other, not to the answer, are ruled out, not hedged
    ("Answer: B (not A or C)", "B"), ("The answer is B. Options A and C are wrong.", "B"),
    ("B) git add. A, C and D do something else.", "B"), ("Answer: B. I ruled out A and D", "B"),
    ("The answer is **C** or D", None), ("B/C", None),
])
def test_multiple_choice_letters(answer, letter):
    choices = {"A": "git log", "B": "git add", "C": "git stash", "D": "git blame"}
    assert to_letter(answer, choices) == letter


@pytest.mark.parametrize("answer,choices,letter", [
    # an option counts only as whole words: no "1" inside "12", "60" inside "600", "seconds" inside "milliseconds"
    ("12", {"A": "1", "B": "20", "C": "30", "D": "40"}, None),
    ("600", {"A": "60", "B": "90", "C": "120", "D": "180"}, None),
    ("45 seconds", {"A": "5", "B": "45", "C": "90", "D": "300"}, "B"),
    ("milliseconds (ms)", {"A": "seconds", "B": "milliseconds", "C": "minutes", "D": "hours"}, "B"),
    # an article is no letter; a capital after "answer is" is
    ("The answer is a timeout", {"A": "a retry", "B": "a timeout"}, "B"),
    ("The answer is B because the manual says so", {"A": "x", "B": "y"}, "B"),
    ("the answer is b because it lists commits", {"A": "x", "B": "y"}, "B"),
    ("\u221230 dB", {"A": "30 dB", "B": "-30 dB"}, "B"),  # U+2212, the minus sign, is a minus
    ("x = search(1)", {"A": "1", "B": "4", "C": "8", "D": "16"}, None),
    # a numeric answer matches a numeric option by value (final_answer(10.0) gives "10.0")
    ("10.0", {"A": "10", "B": "20", "C": "30", "D": "40"}, "A"), ("-30.0", {"A": "30", "B": "-30"}, "B"),
    ("1.50", {"A": "1.5", "B": "15"}, "A"), ("20", {"A": "10.0", "B": "20.0"}, "B"),
])
def test_option_text_matches_whole_words_only(answer, choices, letter):
    assert to_letter(answer, choices) == letter


def test_numbers_keep_their_sign_and_point_and_compare_by_value():
    assert not is_correct("-30", {"answer": "30"}) and not is_correct("1.5", {"answer": "15"})
    assert is_correct("30.0", {"answer": "30"}) and is_correct("1,500", {"answer": 1500})
    assert is_correct("1.5 MB", {"answer": "1.5 mb"}) and not is_correct("15 MB", {"answer": "1.5 MB"})


def test_a_number_with_a_unit_compares_by_value_too():
    """Value comparison covered bare numbers only: "30.0 seconds" failed against the gold "30 seconds" (the recipe's
    unit questions are answered this way). Hand-checked: trailing decimal zeros go, nothing else changes."""
    assert is_correct("30.0 seconds", {"answer": "30 seconds"}) and is_correct("1.50 s", {"answer": "1.5 s"})
    assert is_correct("100.00 MB", {"answer": "100 MB"}) and is_correct("0.0 ms", {"answer": "0 ms"})
    assert not is_correct("300 seconds", {"answer": "30 seconds"}) and not is_correct("30.05 s", {"answer": "30.5 s"})
    assert not is_correct("version 2.4.10", {"answer": "version 2.4.1"})   # a version is not a decimal
    assert not is_correct("10.0.0.1", {"answer": "10.0.0"}) and not is_correct("007 s", {"answer": "7 s"})
    assert to_letter("30.0 seconds", {"A": "3 seconds", "B": "30 seconds", "C": "300 seconds"}) == "B"


def test_free_text_scoring_uses_normalised_match_and_aliases():
    item = {"answer": "The git log command", "aliases": ["git-log"]}
    assert normalize_text("The  git-log, command!") == "gitlog command"
    assert is_correct("git log command", item) and not is_correct("git commit", item)
    assert is_correct("git-log", item)
    assert is_correct("b", {"choices": {"A": "x", "B": "y"}, "correct": "B"})
    assert not is_correct("A", {"choices": {"A": "x", "B": "y"}, "correct": "B"})


@pytest.mark.parametrize("text,answer", [
    ("Final answer: git log", "git log"), ("final_answer('git add')", "git add"), ("git bisect\nmore", "git bisect"),
    # prose after the call, with parentheses of its own, is not part of the answer
    ("final_answer('git stash')\n\nIt saves your work (see the manual).", "git stash"),
    ('final_answer("B") (stash saves work)', "B"), ("final_answer('f(x)')", "f(x)"),
    ("final_answer(answer)", "answer"), ("**Final Answer:** git log", "git log"),
    ("Final answer:\ngit stash", "git stash"), ("Final answer: _netrc", "_netrc"),
])
def test_forced_answer_parsing(text, answer):
    assert parse_forced_answer(text) == answer
