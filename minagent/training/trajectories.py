"""Agent trajectories (JSONL) -> token ids with a loss mask on what the agent itself writes.

One trajectory per line, either {"messages": [...], ...other fields ignored} or a bare list of messages. Each
message is {"role": ..., "content": str}; roles:
  system     the agent's instructions (optional, first)
  user       the task
  assistant  one agent step: "Thought: ...\\nCode:\\n```py\\n...\\n```<end_code>" (or the final answer step)
  tool / observation   what executing the step printed ("Observation:\\nExecution logs:\\n..."). Rendered with
             the role `observation_role` (default "user", as the agent-distillation reference does), so the
             agent at inference must present observations the same way.

Only assistant content and its end-of-turn token are trained: the system prompt, the task, the observations and
the template's own headers are context. The conversation is rendered by the model's chat template as segments
(text, trained?); adjacent segments with the same flag are joined and each run is encoded on its own, so the
boundaries fall where training starts or stops: right after "<|im_start|>assistant\\n" (where generation starts
anyway) and on the end-of-turn special token, so the trained ids are exactly what the model
would generate after the same prompt.

Too long (more than max_length tokens) is handled by the truncation policy:
  drop      skip the trajectory, report file:line (default: a cut-off step teaches an unfinished action)
  truncate  keep the first max_length tokens (dropped if no trained token is left)
  fail      stop with an error naming the line
A malformed line (not JSON, no messages, unknown role, missing or non-string content, no assistant turn, a
ShareGPT-style {"conversations": ...} line, OpenAI tool_calls) is reported as `file:line: what is wrong`;
on_bad_line="fail" stops there, "skip" reports it, goes on and ends with a warning counting the lines skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..jsonl import read_jsonl
from .errors import TrainingDataError

ROLES = {"system", "user", "assistant", "tool", "observation"}
TRUNCATION_POLICIES = ("drop", "truncate", "fail")


@dataclass
class Trajectory:
    where: str              # "file:line"
    messages: list[dict]


@dataclass
class EncodedExample:
    where: str
    ids: list[int]
    trainable: list[bool]


def _validate(obj, observation_role: str) -> list[dict]:
    messages = obj.get("messages") if isinstance(obj, dict) else obj
    if not isinstance(messages, list):
        if isinstance(obj, dict) and "conversations" in obj:  # the common other layout: say which one it is
            raise ValueError('ShareGPT-style {"conversations": [{"from": ..., "value": ...}]} is not read; expected '
                             '{"messages": [{"role": ..., "content": ...}]} (from -> role: human -> user, gpt -> '
                             'assistant; value -> content)')
        raise ValueError('expected {"messages": [...]} or a JSON list of messages')
    if not messages:
        raise ValueError("the messages list is empty")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] is {type(m).__name__}, expected an object with role and content")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise ValueError(f"messages[{i}].role is {role!r}; expected one of {', '.join(sorted(ROLES))}")
        # OpenAI-format calls: dropping them would train empty turns. Checked before the content, which such a
        # message usually has as null: "content must be a string" would hide what is actually wrong.
        for key in ("tool_calls", "function_call"):
            if m.get(key):
                raise ValueError(f"messages[{i}].{key}: tool calls are not supported (write the call into the "
                                 "assistant content, as CodeAct steps do, and return results as role 'tool')")
        if "content" not in m:
            raise ValueError(f"messages[{i}] has no \"content\" (expected a string)")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string, got {type(content).__name__}")
        if role in ("tool", "observation"):
            role = observation_role
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages if isinstance(m, dict)):
        raise ValueError("no assistant turn with content: nothing to train on")
    if any(m["role"] == "system" for m in out[1:]):
        raise ValueError("a system message may only come first")
    return out


def read_trajectories(path: str | Path, on_bad_line: str = "fail", observation_role: str = "user",
                      log=print) -> list[Trajectory]:
    path = Path(path)
    if path.is_dir():  # e.g. a manuals directory given to sft: "no such file" would send the user looking for it
        raise TrainingDataError(f"{path}: a directory; sft --data is a trajectory JSONL file (one trajectory per "
                                "line; a directory of manuals is cpt's --data)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such trajectory file (expected JSONL, one trajectory per line)")
    rows, bad = read_jsonl(path, lambda obj: _validate(obj, observation_role), on_bad_line=on_bad_line, log=log,
                           error=TrainingDataError, hint=" (use --on-bad-line skip to skip such lines)")
    if not rows:
        raise TrainingDataError(f"{path}: no usable trajectory" + (f" ({bad} malformed lines skipped)" if bad else ""))
    if bad:
        log(f"WARNING: {path}: {bad} malformed line{'s' if bad > 1 else ''} skipped (--on-bad-line skip), "
            f"{len(rows)} trajectories read")
    return [Trajectory(where, messages) for where, messages in rows]


def _joined(segments):
    """Adjacent segments with the same flag as one text: encoded apart, a boundary that is not a special token (two
    consecutive Qwen tool results: `</tool_response>` | `\\n<tool_response>`) would get other ids than the whole
    rendered text gets at inference."""
    out = []
    for text, flag in segments:
        if out and out[-1][1] == flag:
            out[-1] = (out[-1][0] + text, flag)
        else:
            out.append((text, flag))
    return out


def encode_trajectory(tokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of the chat-templated conversation and, per token, whether it is trained."""
    ids, trainable = [], []
    for text, is_assistant in _joined(tokenizer.chat_segments(messages, add_generation_prompt=False)):
        # Llama-3's template carries BOS as text; everything else is encoded without added specials, as
        # apply_chat_template output is at inference.
        piece = tokenizer.encode(text, add_special_tokens=False, parse_special=True)
        ids += piece
        trainable += [is_assistant] * len(piece)
    return ids, trainable


SHOW_DROPPED = 5  # the first few dropped trajectories are named; the rest only counted


def encode_trajectories(trajectories: list[Trajectory], tokenizer, max_length: int, truncation: str = "drop",
                        log=print) -> list[EncodedExample]:
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    out, dropped = [], 0
    for t in trajectories:
        ids, trainable = encode_trajectory(tokenizer, t.messages)
        if len(ids) > max_length:
            if truncation == "fail":
                raise TrainingDataError(f"{t.where}: {len(ids)} tokens, more than --max-length {max_length} "
                                        "(use --truncation drop or truncate)")
            if truncation == "drop":
                if dropped < SHOW_DROPPED:
                    log(f"dropped {t.where}: {len(ids)} tokens > max length {max_length}")
                dropped += 1
                continue
            ids, trainable = ids[:max_length], trainable[:max_length]
            if not any(trainable[1:]):
                log(f"dropped {t.where}: no assistant token within the first {max_length} tokens")
                dropped += 1
                continue
        out.append(EncodedExample(t.where, ids, trainable))
    if not out:
        raise TrainingDataError(f"every trajectory was longer than max length {max_length} ({dropped} dropped); "
                                "raise --max-length or use --truncation truncate")
    if dropped:
        share = dropped / len(trajectories)
        log(f"{dropped} of {len(trajectories)} trajectories ({share:.0%}) dropped for length (policy: {truncation})"
            + (f"; WARNING: the long ones are often one whole kind (multi-step answers): raise the max length "
               f"(now {max_length})" if share > 0.02 else ""))
    return out
