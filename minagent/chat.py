"""Chat with a checkpoint: render messages with the model's chat template, generate, stop at end of turn.

This is the smallest useful loop over model + tokenizer + generation, and what `infer.py chat` calls.
"""
from __future__ import annotations

from typing import Callable

from .generation import SamplingParams, generate


def chat_reply(model, tokenizer, messages: list[dict], params: SamplingParams | None = None,
               on_text: Callable[[str], None] | None = None) -> str:
    """The assistant's reply to `messages` ([{"role": ..., "content": ...}, ...]), streamed to on_text."""
    params = params or SamplingParams()
    if not params.stop_ids:
        params.stop_ids = tuple(tokenizer.stop_token_ids)
    prompt = tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    stream = (lambda _row, text: on_text(text)) if on_text else None
    return generate(model, [prompt], params, tokenizer=tokenizer, on_text=stream)[0].text
