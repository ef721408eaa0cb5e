"""Snapping the extractor's copy onto the passages. Oracle: hand-checked sentences of a manual passage."""
from minagent.agent.verbatim import sentences, snap_to_source

PASSAGES = """[1] Ledger parameters > ledger_flush_interval (parameters/ledger.html)
ledger_flush_interval sets how often the ledger writes pending data to disk. Default | 500 Range | 200 to 2000 \
Unit | milliseconds Set it in kis.conf.

[2] Errors > KIS7789-E (messages-errors.md)
Severity: error. Meaning: The ledger fell behind. Corrective action: increase ledger_flush_interval, then run \
kisctl reload ledger."""

TABLE = "Default | 500 Range | 200 to 2000 Unit | milliseconds Set it in kis.conf."
ACTION = "Corrective action: increase ledger_flush_interval, then run kisctl reload ledger."


def test_sentences_end_at_stops_followed_by_space_only():
    assert sentences("a b. c 2.5 d kis.conf e! f?\n\n g") == ["a b.", "c 2.5 d kis.conf e!", "f?", "g"]


def test_a_garbled_copy_comes_back_as_the_sentence_it_copied():
    """A dropped digit and a misspelt unit: the wrong value must not reach the agent's next step."""
    assert snap_to_source("Default | 50 Range | 200 to 200 Unit | milisecond Set it in kis.conf.", PASSAGES) == [TABLE]


def test_fragments_bring_back_their_sentence_once_in_the_order_written():
    copy = "Corrective action: increase ledger_flush, then run kisctl reload ledger.\nDefault | 500\n" + TABLE
    assert snap_to_source(copy, PASSAGES) == [ACTION, TABLE]


def test_text_of_the_models_own_maps_to_nothing():
    assert snap_to_source("No relevant text.", PASSAGES) == []
    assert snap_to_source("The answer is 500.", PASSAGES) == []  # one word in four is the passage's
    assert snap_to_source("", PASSAGES) == [] and snap_to_source(TABLE, "") == []


def test_the_extractor_hands_the_agent_only_the_passages_sentences():
    """Hand-checked: the extractor model slips a digit; the agent must read 500, the manual's value. When the
    model writes nothing from the passages, the agent gets the passages unchanged (an extract with no evidence
    would hide what was retrieved); snap=False keeps the model's own text."""
    from minagent.agent.extractor import ContextExtractor
    from minagent.agent.llm import ScriptedLLM
    slip = "Default | 50 Range | 200 to 2000 Unit | milliseconds"
    ex = ContextExtractor(ScriptedLLM([slip, "No relevant text."]), min_chars=0)
    assert ex.extract("default of ledger_flush_interval?", PASSAGES) == "Relevant text from the passages:\n" + TABLE
    assert ex.extract("what is KIS0000-E?", PASSAGES) == PASSAGES and (ex.calls, ex.unchanged) == (2, 1)
    plain = ContextExtractor(ScriptedLLM([slip]), min_chars=0, snap=False)
    assert plain.extract("default?", PASSAGES) == "Relevant text from the passages:\n" + slip
