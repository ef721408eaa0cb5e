"""The recipe's extractor data: the oracle teacher as the extractor, and teacher runs with the extractor in the loop.

A student evaluated with the extractor reads extracts ("Relevant text from the passages: ...") instead of whole
passages; trained only on whole passages it did not know what to do after one. The teacher stage now runs a
share of the train questions with the extractor in the loop. Oracles: the domain's own facts (the parameter's
default, the message's corrective action), the real BM25 index and sandboxed agent, and the item's answer.
"""
import json

import pytest

from minagent.agent.executor import Agent, AgentConfig
from minagent.agent.extractor import ContextExtractor
from minagent.agent.prompts import EXTRACTOR_SYSTEM
from minagent.agent.teacher import distill
from minagent.microdomain import formats
from minagent.microdomain.domain import make_domain, write_manual
from minagent.microdomain.exam import heldout_names, make_exam
from minagent.microdomain.oracle import oracle_llm
from minagent.microdomain.pipeline import build_index_dir, make_trajectories, searcher
from minagent.training.trajectories import read_trajectories

PREFIX = "Relevant text from the passages:\n"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("extractor_runs")
    d = make_domain(4, n_parameters=30, n_messages=20, n_commands=6)
    write_manual(d, root / "manual")
    items = make_exam(d, 0.25, 4)
    build_index_dir(root / "manual", root / "index")
    return d, items, root


def _extract(llm, question, passages):
    messages = [{"role": "system", "content": EXTRACTOR_SYSTEM},
                {"role": "user", "content": f"Question: {question}\n\nPassages:\n{passages}"}]
    return llm.complete(messages)[0]


def test_oracle_extractor_copies_the_passage_with_the_evidence(small):
    d, items, root = small
    search = searcher(root / "index", 3)
    llm = oracle_llm(d, items)
    item = next(i for i in items if i["type"] == "param_default" and not i.get("choices"))
    p = d.parameter(item["evidence"][0])
    passages = search(p.name)
    blocks = passages.split("\n\n")
    assert len(blocks) == 3 and sum(p.name in b for b in blocks) < 3  # distractors came back too
    reply = _extract(llm, item["question"], passages)
    assert p.name in reply and str(p.default) in reply
    assert "[1]" not in reply and len(reply) < len(passages)  # the passage's text only, not its header
    for block in blocks:  # each passage is copied whole iff it names the parameter
        text = block.split("\n", 1)[1]
        assert (text in reply) == (p.name in block)
    # a message question's first hop: the message's passage, which names the parameter to increase
    item = next(i for i in items if i["type"] == "message_default")
    msg = next(m for m in d.messages if m.id == item["evidence"][0])
    reply = _extract(llm, item["question"], search(msg.id))
    assert msg.id in reply and f"increase {msg.parameter}" in reply
    # nothing that bears on it, or a question it does not know: it says so (the agent then gets the passages)
    assert _extract(llm, item["question"], "[1] Other (x.md)\nNothing here.") == "No relevant text."
    assert _extract(llm, "What is the airspeed of a swallow?", passages) == "No relevant text."


def test_oracle_with_the_extractor_in_the_loop_answers_from_extracts(small, tmp_path):
    """The extractor-side of the teacher: its agent's observations are extracts, and its code still reads the
    answer out of them (one- and two-hop) and gets it right."""
    d, items, root = small
    train = [i for i in items if i["split"] == "train" and i["hops"] == 1][:10] + \
        [i for i in items if i["split"] == "train" and i["hops"] == 2][:5]
    llm = oracle_llm(d, items)
    agent = Agent(llm, {"search": searcher(root / "index", 2)}, AgentConfig(max_steps=5),
                  extractor=ContextExtractor(llm, min_chars=0),
                  system=lambda mc: formats.agent_system(d.product, mc))
    counts = distill(train, agent, tmp_path / "t.jsonl", log=None)
    assert counts["kept"] >= 0.9 * len(train)
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    by_id = {i["id"]: i for i in items}
    for row in rows:
        item = by_id[row["id"]]
        observations = [m["content"] for m in row["messages"] if m["role"] in ("tool", "observation")]
        # the searches that found the evidence (the last hops) show extracts; a vague first query's passages,
        # where the extractor found nothing, come unchanged
        assert len(observations) >= item["hops"]
        assert all("Execution logs:\n" + PREFIX in o for o in observations[-item["hops"]:])
        assert not any(PREFIX in o and not any(e in o for e in item["evidence"]) for o in observations)
        if not item.get("choices"):
            assert str(row["answer"]) == str(item["answer"])
    assert any(by_id[r["id"]]["hops"] == 2 for r in rows)


def test_teacher_stage_adds_runs_with_extracts(small, tmp_path):
    d, items, root = small
    train = [i for i in items if i["split"] == "train"]
    counts = make_trajectories(tmp_path, d, items, searcher(root / "index", 1), None, max_train=18,
                               extractor_every=3, log=lambda *a: None)
    # every third of the 18 sampled train questions is run again, with the extractor: 6 runs, all correct
    assert counts["extractor_runs_kept"] + counts["extractor_runs_rejected"] == 6
    assert counts["extractor_runs_kept"] >= 5
    assert counts["trajectories_with_extracts"] == counts["extractor_runs_kept"] - \
        sum(r["id"] + "/extractor" not in (tmp_path / "trajectories.jsonl").read_text()
            for r in map(json.loads, (tmp_path / "distilled_extractor.jsonl").read_text().splitlines()))
    rows = [json.loads(x) for x in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == counts["trajectories"] + counts["trajectories_with_extracts"]
    with_extracts = [r for r in rows if r["id"].endswith("/extractor")]
    assert with_extracts and {r["id"][:-len("/extractor")] for r in with_extracts} <= {i["id"] for i in train}
    assert all(any("Execution logs:\n" + PREFIX in m["content"] for m in r["messages"])
               for r in with_extracts)
    assert not any(PREFIX in m["content"] for r in rows if r not in with_extracts for m in r["messages"])
    text = (tmp_path / "sft_agent.jsonl").read_text()
    assert not [h for h in heldout_names(d, items) if h in text]  # the held-out filter covers them too
    # the training loader reads the file: agent runs of both kinds plus the extractor's examples
    trajectories = read_trajectories(tmp_path / "sft_agent.jsonl")
    assert len(trajectories) == len(rows) + counts["extractor_examples"] and counts["extractor_examples"] > 0


def test_no_extractor_runs_when_off(small, tmp_path):
    d, items, root = small
    counts = make_trajectories(tmp_path, d, items, searcher(root / "index", 1), None, max_train=4,
                               extractor_every=0, log=lambda *a: None)
    assert counts["trajectories_with_extracts"] == counts["extractor_examples"] == 0
    assert not (tmp_path / "distilled_extractor.jsonl").exists()
    assert PREFIX not in (tmp_path / "sft_agent.jsonl").read_text()
