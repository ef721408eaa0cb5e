"""Chat with a checkpoint: render messages with the model's chat template, generate, stop at end of turn.

This is the smallest useful loop over model + tokenizer + generation, and what `infer.py chat` calls. It also
holds the one chat setting training and the agent must agree on: the role observations are rendered with.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from .generation import SamplingParams, generate


def chat_reply(model, tokenizer, messages: list[dict], params: SamplingParams | None = None,
               on_text: Callable[[str], None] | None = None) -> str:
    """The assistant's reply to `messages` ([{"role": ..., "content": ...}, ...]), streamed to on_text."""
    params = params or SamplingParams()
    if not params.stop_ids:  # a copy: the caller's settings may serve another tokenizer next
        params = dataclasses.replace(params, stop_ids=tuple(tokenizer.stop_token_ids))
    prompt = tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    stream = (lambda _row, text: on_text(text)) if on_text else None
    return generate(model, [prompt], params, tokenizer=tokenizer, on_text=stream)[0].text


# How an agent model sees observations (tool results): as "user" turns (the default, as the agent-distillation
# reference trains) or as "tool" turns its chat template renders its own way. Training decides it
# (--observation-role); an SFT export records it next to the weights so inference renders the same way.
OBSERVATION_ROLES = ("user", "tool")
AGENT_SETTINGS_FILE = "minagent_agent.json"  # written next to an SFT export's weights


def checked_observation_role(role, where: str = "observation_role") -> str:
    if role not in OBSERVATION_ROLES:
        raise ValueError(f"{where} must be one of {OBSERVATION_ROLES}, got {role!r}")
    return role


def write_agent_settings(model_dir, observation_role: str) -> None:
    """Record, atomically, how the agent must render observations for the model in model_dir."""
    checked_observation_role(observation_role)
    path = Path(model_dir) / AGENT_SETTINGS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"observation_role": observation_role}) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def agent_settings(model_dir) -> dict:
    """What an exported agent model needs at inference to see conversations as it was trained on them
    ({"observation_role": ...}); {} for a checkpoint without the file (any HF model: observations as user turns)."""
    path = Path(model_dir) / AGENT_SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); expected {{\"observation_role\": \"user\" or \"tool\"}}") from e
    role = settings.get("observation_role", "user") if isinstance(settings, dict) else None
    return {"observation_role": checked_observation_role(role, f"{path}: observation_role")}
