"""`infer.py ask` prints the run as it goes; when the steps ran out, the reply to the forced-answer prompt is
printed before the answer read from it. It used to be left out: `ask` showed "=== final answer ===\\nanswer"
under two steps that never wrote that word (the reply was `final_answer(answer)`, whose argument is read as its
source). Oracle: hand-written scripted replies, so what must be printed is known by construction.
"""
from minagent.agent import commands
from minagent.agent.executor import Agent, AgentConfig
from minagent.agent.llm import ScriptedLLM

FORCED = "Thought: I know it.\nfinal_answer(answer)"


def run_to_the_forced_answer(on_event):
    llm = ScriptedLLM(["I am not sure what to write.", FORCED])
    return Agent(llm, {}, AgentConfig(max_steps=1), on_event=on_event).run("What is the default port?")


def test_the_forced_reply_is_an_event_before_the_final_answer():
    events = []
    result = run_to_the_forced_answer(lambda kind, text: events.append((kind, text)))
    assert [kind for kind, _ in events] == ["step", "observation", "forced", "final"]
    assert events[2] == ("forced", FORCED)
    assert events[3] == ("final", "answer") and result.answer == "answer" and result.forced_answer


def test_ask_prints_the_forced_reply(capsys):
    run_to_the_forced_answer(commands.print_event)
    out = capsys.readouterr().out
    assert out.index("final_answer(answer)") < out.index("=== final answer ===\nanswer")
    assert "--- steps used up: asked for the final answer, without tools ---" in out
