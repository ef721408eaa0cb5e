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
