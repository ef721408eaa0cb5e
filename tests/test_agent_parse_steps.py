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


@pytest.mark.parametrize("raw,code,thought", [
    # function-calling habits: a JSON tool call, bare, after Action:, in a ```json block, after Code:
    ('Thought: I will search.\n{"name": "search", "arguments": {"query": "git log"}}',
     "print(search(query='git log'))", "I will search."),
    ('Thought: t\nAction:\n{"name": "search", "arguments": {"query": "git log", "k": 2}}',
     "print(search(query='git log', k=2))", "t"),
    ('Thought: t\n```json\n{"name": "search", "parameters": {"query": "x"}}\n```', "print(search(query='x'))", "t"),
    ('Thought: t\nCode:\n{"name": "search", "arguments": {"query": "x"}}', "print(search(query='x'))", "t"),
    # "arguments" as a JSON-encoded string (the OpenAI API's form), or a plain string
    ('Thought: t\n{"name": "search", "arguments": "{\\"query\\": \\"q\\"}"}', "print(search(query='q'))", "t"),
    ('Thought: t\nAction: {"name": "search", "arguments": "git log"}', "print(search('git log'))", "t"),
    ('Thought: done\n{"name": "final_answer", "arguments": {"answer": "git log"}}', "final_answer('git log')", "done"),
    ('Thought: done\n{"name": "final_answer", "arguments": {"answer": 42}}', "final_answer(42)", "done"),
])
def test_a_json_tool_call_runs_as_the_call_it_names(raw, code, thought):
    s = parses_to(raw, code)
    assert s.thought == thought
    assert step_message(s) == f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_code>"


@pytest.mark.parametrize("raw,code", [
    # a dict literal in real code stays code; JSON that is not a tool call is no action
    ('Thought: t\nCode:\nx = {"name": "a", "arguments": 1}\nprint(x)', 'x = {"name": "a", "arguments": 1}\nprint(x)'),
    ('Thought: t\n{"name": "Alice"}', None), ('Thought: t\n{"name": "os.system", "arguments": {"c": "ls"}}', None),
])
def test_json_that_is_not_a_tool_call_is_left_alone(raw, code):
    assert parse_step(raw).code == code


@pytest.mark.parametrize("raw,code,value", [
    # a ``` line inside a triple-quoted string is part of the string (Python's tokenizer agrees), not the end
    ("Thought: t\nCode:\n```py\nfinal_answer(\"\"\"Run:\n```\ngit log\n```\n\"\"\")\n```<end_code>",
     "final_answer(\"\"\"Run:\n```\ngit log\n```\n\"\"\")", "Run:\n```\ngit log\n```\n"),
    ("Thought: t\nCode:\n```py\nfinal_answer('''Run\ngit log``` now''')\n```",
     "final_answer('''Run\ngit log``` now''')", "Run\ngit log``` now"),
])
def test_fences_inside_a_multi_line_string_do_not_close_the_block(raw, code, value):
    s = parses_to(raw, code)
    assert ast.literal_eval(ast.parse(s.code, mode="eval").body.args[0]) == value


def test_a_string_left_open_by_mistake_does_not_swallow_the_prose_after_the_block():
    # the model forgot to close its string: the first fence that starts a line still ends the block
    s = parse_step('Thought: t\nCode:\n```py\nprint("""oops)\n```\nDone. final_answer is next.')
    assert s.code == 'print("""oops)'


@pytest.mark.parametrize("raw,code", [
    # the call written after the label is the action, not the answer's text
    ("Thought: done.\nFinal Answer: final_answer('B')", "final_answer('B')"),
    ('Thought: done.\nFinal Answer: `final_answer("git log")`', 'final_answer("git log")'),
])
def test_a_final_answer_call_after_the_final_answer_label(raw, code):
    parses_to(raw, code)


@pytest.mark.parametrize("raw,kept", [
    # an action found outside a Python fence is kept in the step format (no lone closing fence, no <end_code> after
    # prose), as the unclosed-fence case is: these turns are what a student is trained on
    ("Thought: t\nCode:\nprint(9)\n```<end_code>", "Thought: t\nCode:\n```py\nprint(9)\n```<end_code>"),
    ("Thought: in a shell:\n```bash\ngit log\n```\nFinal answer: git log",
     "Thought: in a shell:\nCode:\n```py\nfinal_answer('git log')\n```<end_code>"),
    ("Thought: t\n```bash\nls\n```\nfinal_answer('x')", "Thought: t\nCode:\n```py\nfinal_answer('x')\n```<end_code>"),
])
def test_an_unfenced_action_is_kept_in_the_step_format(raw, kept):
    assert step_message(parse_step(raw)) == kept
