"""A resumed exam with other settings is refused naming the one setting that differs, also inside the agent's
configuration (hand-checked message)."""
import pytest

from minagent.microdomain.partial_results import PartialResults

SETTINGS = {"model": "/models/m", "mode": "agent", "k": 1,
            "agent": {"max_steps": 4, "max_tokens": 160, "temperature": 0.0, "sag": 0}}


def _interrupted(tmp_path):
    first = PartialResults(tmp_path / "r.jsonl", SETTINGS)
    first.load()
    first.open()
    first.add({"id": "q0", "question": "?", "answer": "1"}, {"id": "q0", "correct": True})
    first.close()


def test_a_different_agent_setting_is_named_alone(tmp_path):
    _interrupted(tmp_path)
    other = {**SETTINGS, "agent": {**SETTINGS["agent"], "max_steps": 6}}
    with pytest.raises(ValueError) as e:
        PartialResults(tmp_path / "r.jsonl", other).load()
    message = str(e.value)
    assert "(agent.max_steps: 4 there, 6 now)" in message
    assert "max_tokens" not in message  # the settings that agree are not listed


def test_a_setting_that_went_away_is_named_and_the_same_settings_resume(tmp_path):
    _interrupted(tmp_path)
    other = {k: v for k, v in SETTINGS.items() if k != "k"}
    with pytest.raises(ValueError, match=r"\(k: 1 there, None now\)"):
        PartialResults(tmp_path / "r.jsonl", other).load()
    assert PartialResults(tmp_path / "r.jsonl", SETTINGS).load() == 1  # the same settings still resume
