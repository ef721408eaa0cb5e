"""Step parsing on more of what small models (SmolLM2-135M style) write. Every expected step is written by hand
from what a human reader of the reply would run; code that should run is also checked with Python's own `ast`."""
import ast

import pytest

from minagent.agent.parsing import parse_step, step_message


def parses_to(raw, code):
    s = parse_step(raw)
    assert s.error is None and s.code == code
    ast.parse(s.code)
    return s


@pytest.mark.parametrize("raw,code", [
    # the closing fence of a shell block is no Python opener: the prose after it is not code
    ("Thought: t\n```py\nx = 1\n```\nIn a shell:\n```bash\nls\n```\nThat lists files.", "x = 1"),
    ("Thought: t\n```bash\nls\n```\nCode:\n```py\nprint(1)", "print(1)"),
])
def test_a_closed_block_of_another_language_opens_no_python_block(raw, code):
    parses_to(raw, code)


def test_prose_after_a_shell_block_alone_is_a_parse_failure():
    s = parse_step("Thought: in a shell:\n```bash\ngit log\n```\nI think that is it.")
    assert s.code is None and "no code found" in s.error
    assert step_message(s) == "Thought: in a shell:\n```bash\ngit log\n```\nI think that is it."


@pytest.mark.parametrize("raw,code", [
    # a bare final_answer line with a comment or prose after the call: the call is the action
    ("Thought: I know it.\nfinal_answer('git log')  # the manual says so", "final_answer('git log')"),
    ("Thought: I know it.\nfinal_answer('git log') and that is the answer.", "final_answer('git log')"),
    # its argument spans lines (a triple-quoted string) or nests parentheses and quotes
    ('Thought: t\nfinal_answer("""git log\n(shows history)""")', 'final_answer("""git log\n(shows history)""")'),
    ("Thought: t\nfinal_answer(f\"{len(str(x))} ({y!r})\")", "final_answer(f\"{len(str(x))} ({y!r})\")"),
])
def test_a_bare_final_answer_call_is_cut_where_python_ends_it(raw, code):
    parses_to(raw, code)


def test_a_bare_final_answer_call_is_not_repeated_in_the_thought():
    s = parses_to("Thought: I know it.\nfinal_answer('git log')", "final_answer('git log')")
    assert s.thought == "I know it."
    assert step_message(s) == "Thought: I know it.\nCode:\n```py\nfinal_answer('git log')\n```<end_code>"


@pytest.mark.parametrize("raw", [
    "Thought: t\nCode: ```py\nprint(search('x'))\n```", "Thought: t\nCode:```python\nprint(search('x'))\n```<end_code>",
    "Thought: t\nCode: ```py\nprint(search('x'))",  # left open
])
def test_a_fence_opened_on_the_code_label_line(raw):
    assert parses_to(raw, "print(search('x'))").thought == "t"
