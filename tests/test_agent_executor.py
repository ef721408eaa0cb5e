"""The agent loop driven by a scripted model (the unit under test is the executor, not a model): every
expectation below is written by hand from the script."""
from minagent.agent import Agent, AgentConfig, ContextExtractor, ScriptedLLM
from minagent.agent.parsing import STOP_STRINGS


def step(code, thought="t"):
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_code>"


def make_agent(script, honor_stop=True, **cfg):
    llm = ScriptedLLM(script, honor_stop=honor_stop)
    searched = []

    def search(query, k=3):
        searched.append(query)
        return f"[1] git-log.txt\ngit log shows the commit logs ({query})"
    return Agent(llm, {"search": search}, AgentConfig(timeout=3, **cfg)), llm, searched


def test_search_then_answer():
    agent, llm, searched = make_agent([step("print(search('history'))"), step("final_answer('git log')")])
    r = agent.run("Which command shows history?")
    assert r.answer == "git log" and r.steps == 2 and searched == ["history"]
    roles = [m["role"] for m in r.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert r.messages[3]["content"] == ("Observation:\nExecution logs:\n[1] git-log.txt\ngit log shows the commit "
                                        "logs (history)\nLast output from code snippet:\nNone")
    assert r.messages[2]["content"].endswith("```<end_code>")
    assert llm.calls[0][1]["stop"] == STOP_STRINGS
    assert not r.hit_max_steps and r.parse_failures == 0 and r.exec_errors == 0


def test_self_written_observation_is_not_believed_when_stops_are_ignored():
    fake = step("x = 6 * 7\nprint(x)").replace("<end_code>", "") + "\nObservation: 41\nThought: so 41"
    agent, _, _ = make_agent([fake, step("final_answer(x)")], honor_stop=False)
    r = agent.run("6*7?")
    assert "41" not in r.messages[2]["content"]
    assert r.messages[3]["content"].startswith("Observation:\nExecution logs:\n42\n")
    assert r.answer == 42


def test_parse_failure_is_fed_back_and_the_model_recovers():
    agent, llm, _ = make_agent(["I think the answer is obvious.", step("final_answer('git add')")])
    r = agent.run("q")
    assert r.answer == "git add" and r.parse_failures == 1
    assert r.messages[3]["role"] == "tool" and "no code found" in r.messages[3]["content"]
    assert llm.calls[1][0][-1]["content"] == r.messages[3]["content"]  # the model saw the error


def test_execution_error_is_fed_back_and_variables_survive():
    agent, llm, _ = make_agent([step("a = 5\nprint(undefined_name)"), step("final_answer(a + 1)")])
    r = agent.run("q")
    assert r.exec_errors == 1 and r.answer == 6
    assert "NameError: name 'undefined_name' is not defined (line 2)" in r.messages[3]["content"]
    assert "Now let's retry" in r.messages[3]["content"]


def test_max_steps_then_forced_answer():
    agent, llm, _ = make_agent([step("print(1)"), step("print(2)"), "Final answer: git blame"], max_steps=2)
    r = agent.run("q")
    assert r.hit_max_steps and r.forced_answer and r.answer == "git blame" and r.steps == 2
    assert "used all your steps" in llm.calls[2][0][-1]["content"]


def test_forced_answer_samples_with_the_steps_settings():
    seen = []

    class Recording(ScriptedLLM):
        def complete(self, messages, **kw):
            seen.append((kw["temperature"], kw["top_p"]))
            return super().complete(messages, **kw)
    agent = Agent(Recording([step("print(1)"), "Final answer: git blame"]), {},
                  AgentConfig(max_steps=1, temperature=0.7, top_p=0.9, seed=1))
    assert agent.run("q").answer == "git blame"
    assert seen == [(0.7, 0.9), (0.7, 0.9)]


def test_sandbox_breaches_become_observations():
    agent, _, _ = make_agent([step("while True:\n    pass"), step("import socket\nsocket.socket()"),
                              step("open('/etc/evil', 'w')"), step("final_answer('survived')")], max_steps=4)
    agent.config.timeout = 1
    r = agent.run("q")
    obs = [m["content"] for m in r.messages if m["role"] == "tool"]
    assert "killed" in obs[0] and "network access is not allowed" in obs[1] and "writing '/etc/evil'" in obs[2]
    assert r.answer == "survived" and r.exec_errors == 3


def test_multiple_choice_answer_is_normalised_to_a_letter():
    agent, llm, _ = make_agent([step("final_answer('I pick (c)')")])
    r = agent.run("Which one?", choices={"A": "git log", "B": "git add", "C": "git stash", "D": "git blame"})
    assert r.letter == "C"
    assert "C. git stash" in r.messages[1]["content"] and "letter" in r.messages[0]["content"]


def test_first_thought_prefix_starts_the_first_step_only():
    agent, llm, _ = make_agent([" so I search.\nCode:\n```py\nprint(1)\n```", step("final_answer(1)")])
    r = agent.run("q", prefix="Thought: The manual has a page on this")
    assert r.messages[2]["content"].startswith("Thought: The manual has a page on this so I search.\nCode:")
    assert [c[1]["prefix"] for c in llm.calls] == ["Thought: The manual has a page on this", ""]


def test_sag_takes_the_majority_output_and_runs_the_winner_once():
    candidates = [
        "Thought: a\nCode:\n```py\nn += 1\nprint(search('x'))\nprint('two')\n```",   # output group "two" (n+=1)
        "no code here",                                                             # dropped: parse failure
        "Thought: b\nCode:\n```py\nn += 1\nprint(search('x'))\nprint('two')\n```",   # same group
        "Thought: c\nCode:\n```py\n1/0\n```",                                       # dropped: error
        "Thought: d\nCode:\n```py\nn += 100\nprint('one')\n```",                    # minority
    ]
    agent, _, searched = make_agent([], sag=5)
    script = [[step("n = 0")] * 5, candidates, [step("final_answer(n)")] * 5]
    agent.llm = ScriptedLLM(lambda messages, n, prefix: script.pop(0))
    r = agent.run("q")
    # winner ran once (n == 1, not 2), candidates were isolated (not 1 + 1 + 100), search ran once for 2 asks
    assert r.answer == 1
    assert searched == ["x"] and r.tool_calls == 2 and r.tool_calls_run == 1
    assert r.messages[4]["content"].startswith("Thought: a\n")
    assert agent.llm.calls[1][1]["n"] == 5 and agent.llm.calls[1][1]["temperature"] == 0.4


def test_sag_with_every_candidate_failing_shows_the_first_failure():
    script = [["Thought: x\nCode:\n```py\n1/0\n```", "nothing"], [step("final_answer('ok')")] * 2]
    agent = Agent(ScriptedLLM(lambda m, n, p: script.pop(0)), {}, AgentConfig(sag=2))
    r = agent.run("q")
    assert "ZeroDivisionError" in r.messages[3]["content"] and r.answer == "ok"


def test_extractor_replaces_long_passages_and_is_off_by_default():
    long_passage = "Unrelated sentence. " * 50 + "git stash saves your work."
    def search(query, k=3):
        return long_passage
    extractor_llm = ScriptedLLM(["git stash saves your work."])
    script = [step("print(search('aside'))"), step("final_answer('git stash')")]
    on = Agent(ScriptedLLM(list(script)), {"search": search}, extractor=ContextExtractor(extractor_llm))
    r = on.run("How to put work aside?")
    assert r.messages[3]["content"] == ("Observation:\nExecution logs:\nRelevant text from the passages:\ngit stash "
                                        "saves your work.\nLast output from code snippet:\nNone")
    sent = extractor_llm.calls[0][0]
    assert "How to put work aside?" in sent[1]["content"] and long_passage in sent[1]["content"]
    assert extractor_llm.calls[0][1]["session"] == "extractor"
    off = Agent(ScriptedLLM(list(script)), {"search": search}).run("How to put work aside?")
    assert long_passage in off.messages[3]["content"]


def test_a_full_context_ends_the_question_not_the_exam():
    from minagent.agent.llm import ContextOverflow

    def script(messages, n, prefix):
        if len(messages) > 3:
            raise ContextOverflow("conversation of 5000 tokens + 512 new does not fit the context of 4096 tokens")
        return [step("print('long')")]
    r = Agent(ScriptedLLM(script), {}).run("q")
    assert r.answer is None and r.steps == 1 and "does not fit the context" in r.error


def test_the_extractor_keeps_the_search_tools_own_default_k():
    """`search(q)` under --extractor must return what the tool returns without it (a student trained on one
    passage per search was shown three: the wrapper's own k=3 used to replace the tool's default)."""
    seen = []

    def search(query, k=1):
        seen.append(k)
        return "passage"
    wrapped = ContextExtractor(ScriptedLLM(["x"]), min_chars=10**6).wrap(search, "question?")
    wrapped("q")
    wrapped("q", 4)
    assert seen == [1, 4]
