"""A bare final_answer(...) line that Python cannot parse is still the step's action (its SyntaxError goes back to
the model), so, like a call that parses (7676b01), it is not repeated in the thought and the stored step shows it
once. Expectations written by hand."""
from minagent.agent.parsing import parse_step, step_message


def test_an_unparseable_final_answer_line_is_the_action_not_the_thought():
    step = parse_step("Thought: I know it.\nfinal_answer(x(]))")
    assert step.code == "final_answer(x(]))"
    assert step.thought == "I know it."
    assert step_message(step) == "Thought: I know it.\nCode:\n```py\nfinal_answer(x(]))\n```<end_code>"
    assert step_message(step).count("final_answer(") == 1


def test_a_parsing_call_is_unchanged():
    step = parse_step('Thought: I know it.\nfinal_answer("B")')
    assert (step.thought, step.code) == ("I know it.", 'final_answer("B")')
