"""SAG's vote on scripted candidates (the unit under test is choose_step, not a model). Every expectation is
written by hand from the script: which candidates parse, which raise, which agree, and how often each tool and
each winning cell ran."""
from minagent.agent import ScriptedLLM
from minagent.agent.sag import choose_step
from minagent.agent.sandbox import Sandbox, ToolBox


def cand(code, thought="t"):
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```"


def vote(candidates, tools=None, setup="n = 0", choices=None):
    box = Sandbox(toolbox := ToolBox(tools or {}), timeout=3)
    box.start()
    box.run(setup)
    step, result, stats = choose_step(ScriptedLLM(lambda messages, n, prefix: candidates), [], box, n=len(candidates),
                                     choices=choices)
    after = box.run("print(n)").output.strip()  # how many times the committed cells incremented n
    box.close()
    return step, result, stats, after, toolbox


def test_a_tie_goes_to_the_group_sampled_first():
    # two groups of two: "x" (sampled first, #0 and #3) and "y" (#1, #2); x wins, and its first member's step
    step, result, stats, n, toolbox = vote([cand("n += 1\nprint('x')", "a"), cand("n += 10\nprint('y')", "b"),
                                   cand("n += 10\nprint('y')", "c"), cand("n += 1\nprint('x')", "d")])
    assert step.thought == "a" and result.output == "x\n" and stats.group_sizes == [2, 2] and n == "1"


def test_failed_candidates_are_dropped_even_when_they_are_the_majority():
    step, result, stats, n, toolbox = vote(["no code", "no code either", cand("n += 1\n1/0"), cand("n += 1\n1/0"),
                                   cand("n += 5\nprint('ok')", "good")])
    assert step.thought == "good" and result.error is None and n == "5"
    assert (stats.sampled, stats.parsed, stats.executed_ok, stats.group_sizes) == (5, 3, 1, [1])


def test_identical_tool_calls_run_once_and_the_winner_is_not_run_again():
    ran = []

    def search(query, k=3):
        ran.append((query, k))
        return f"passage about {query}"
    candidates = [cand("n += 1\nprint(search('log'))"), cand("n += 1\nprint(search('log', 3))"),
                  cand("n += 1\nprint(search(query='log', k=3))"), cand("n += 1\nprint(search('add'))")]
    step, result, stats, n, toolbox = vote(candidates, {"search": search})
    # three spellings of one call, one other call: the tool ran twice; the winner's cell ran once (n == 1)
    assert ran == [("log", 3), ("add", 3)] and (toolbox.calls, toolbox.real_calls) == (4, 2)
    assert stats.group_sizes == [3, 1]
    assert result.output == "passage about log\n" and n == "1"


def test_the_extractor_passes_the_tools_own_parameter_names():
    """A search tool whose parameters are (q, n): the code's search(q='x', n=2) must reach it under --extractor as
    without it (the wrapper's own (query, k) raised TypeError), and the wrapper shows the tool's signature."""
    import inspect

    from minagent.agent import ContextExtractor

    seen = []

    def search(q, n=1):
        seen.append((q, n))
        return "passage"
    wrapped = ContextExtractor(ScriptedLLM(["x"]), min_chars=10**6).wrap(search, "question?")
    assert wrapped(q="x", n=2) == "passage" and wrapped("y") == "passage" and seen == [("x", 2), ("y", 1)]
    assert inspect.signature(wrapped) == inspect.signature(search)


def test_multiple_choice_final_answers_vote_by_the_letter_they_mean():
    """Hand-checked: "B", "(B) 30 s" and "30 s" all mean option B of these choices, "A" means A: B wins 3 to 1
    (as raw strings A and B were tied at 1 each with the others alone, and A, sampled first, won)."""
    choices = {"A": "10 s", "B": "30 s", "C": "60 s", "D": "90 s"}
    candidates = [cand("final_answer('A')", "a"), cand("final_answer('B')", "b"),
                  cand("final_answer('(B) 30 s')", "c"), cand("final_answer('30 s')", "d")]
    step, result, stats, n, toolbox = vote(candidates, choices=choices)
    assert step.thought == "b" and result.final == "B" and stats.group_sizes == [3, 1]
    step, result, stats, n, toolbox = vote(candidates)  # open question: the raw answers, four groups
    assert step.thought == "a" and stats.group_sizes == [1, 1, 1, 1]
