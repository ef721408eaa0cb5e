"""Autoregressive generation over the KV cache: greedy or sampled, batched, with stop rules and streaming.

One prefill fills the cache with every prompt (padded left or right to a common length; the pad slots are
masked and each row keeps its own positions), then one token per row per step. Stop ids end a row at once;
stop strings need the text, so a row's text is decoded as it grows, cut at the first stop string, and streamed
with any tail that could still become a stop string held back — a streamed reply never shows a stop string.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from numbers import Integral
from typing import Callable, Sequence

import torch

from .inference import inference_forward
from .model import Transformer


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None
    stop_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()

    def __post_init__(self):
        """Out-of-range settings are an error naming the field, as transformers' warpers and GenerationConfig
        make them: otherwise a negative temperature silently decoded greedily, a negative top_k or a top_p above 1
        silently switched the filter off, and max_new_tokens=-1 failed as "KV cache full"."""
        checks = [("max_new_tokens", self.max_new_tokens, "an integer >= 0",
                   isinstance(self.max_new_tokens, Integral) and self.max_new_tokens >= 0),
                  ("temperature", self.temperature, "a number >= 0 (0 = greedy)", 0 <= self.temperature < float("inf")),
                  ("top_k", self.top_k, "an integer >= 0 (0 = off)", isinstance(self.top_k, Integral) and self.top_k >= 0),
                  ("top_p", self.top_p, "a number in [0, 1] (1 = off)", 0 <= self.top_p <= 1)]
        for name, value, expected, ok in checks:
            if not ok:
                raise ValueError(f"SamplingParams.{name} must be {expected}, got {value!r}")
        self.stop_strings = stop_string_list(self.stop_strings, "SamplingParams.stop_strings")
        self.stop_ids = _stop_id_list(self.stop_ids)


def stop_string_list(stop, where: str) -> tuple[str, ...]:
    """Stop strings as a tuple. One bare string is one stop string, as transformers' stop_strings and the OpenAI
    API's `stop` read it: iterated as a sequence it would have been a set of one-character stops ("Observation:"
    cut a reply at its first "o")."""
    if isinstance(stop, str):
        return (stop,)
    stop = tuple(stop or ())
    bad = [s for s in stop if not isinstance(s, str)]
    if bad:
        raise ValueError(f"{where} must be a string or a sequence of strings, got {bad[0]!r} in it")
    return stop


def _stop_id_list(ids) -> tuple[int, ...]:
    """Stop ids as a tuple; one bare id is accepted, as transformers' eos_token_id (an int or a list) is."""
    if hasattr(ids, "tolist"):  # a torch / numpy array: its elements as Python ints
        ids = ids.tolist()
    if isinstance(ids, Integral):
        return (int(ids),)
    ids = tuple(ids or ())
    bad = [i for i in ids if not isinstance(i, Integral)]
    if bad:
        raise ValueError(f"SamplingParams.stop_ids must be a token id or a sequence of token ids, got {bad[0]!r} "
                         "in it")
    return tuple(int(i) for i in ids)


@dataclass
class Completion:
    token_ids: list[int] = field(default_factory=list)  # generated ids, the stop id (if any) excluded
    text: str = ""  # decoded and cut before the first stop string (empty without a tokenizer)
    finish_reason: str = "length"  # "length" | "stop_id" | "stop_string"


def warp_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (HF's order); filtered-out tokens get -inf."""
    logits = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        logits = _top_p_filter(logits, params.top_p)
    return logits


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p; the rest get -inf.

    Walked from the least likely token up (an ascending sort): a token is dropped while the mass of it and every
    token below it is at most 1 - top_p, and the most likely one always stays (top_p=0 keeps one token). This is
    the order transformers' TopPLogitsWarper uses, and it matters where logits tie (common with bf16 logits):
    which of two equal tokens at the boundary survives is decided by the sort, and a descending walk kept the
    other one (the lower id instead of the higher), a different distribution."""
    ascending, order = logits.sort(dim=-1)
    mass_up_to = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = mass_up_to <= 1 - top_p
    drop[..., -1] = False
    return logits.scatter(-1, order, ascending.masked_fill(drop, float("-inf")))


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from logits [B, V]: argmax when greedy, else a draw from the warped distribution."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = warp_logits(logits, params).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _RowText:
    """Decodes one row's tokens as they come, finds stop strings, and yields the text that is safe to stream.

    The streamed pieces add up to the row's final text (tested against HF's decode and DecodeStream), with one
    exception no stream can avoid: SentencePiece byte fallback as HF decodes it (and so our tokenizers) turns a
    whole run of <0xNN> pieces into one U+FFFD per byte when any part of the run is invalid. A reply that ends
    inside a character of such a run (max_new_tokens, a stop id) thus loses the run's complete characters too,
    after they were streamed; HF's DecodeStream streams the same characters. Holding every open run back instead
    would delay a reply written in byte-fallback characters (emoji, rarer CJK) until a normal piece came."""

    def __init__(self, tokenizer, stop_strings: Sequence[str]):
        self.tokenizer, self.stops = tokenizer, [s for s in stop_strings if s]
        self.text, self.emitted, self.stopped = "", 0, False

    def update(self, ids: list[int]) -> str:
        self.text = self.tokenizer.decode(ids)
        hits = [self.text.find(s) for s in self.stops]
        hits = [h for h in hits if h >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
            safe = len(self.text)
        else:
            safe = len(self.text.rstrip("\ufffd"))  # an unfinished UTF-8 sequence decodes to U+FFFD: wait
            for s in self.stops:  # hold back a tail that could be the start of a stop string
                for n in range(min(len(s) - 1, safe), 0, -1):
                    if self.text[safe - n:safe] == s[:n]:
                        safe -= n
                        break
        delta = self.text[self.emitted:safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return delta

    def flush(self) -> str:
        delta, self.emitted = self.text[self.emitted:], len(self.text)
        return delta


@torch.inference_mode()
def generate(model: Transformer, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None,
             tokenizer=None, on_text: Callable[[int, str], None] | None = None,
             padding_side: str = "left") -> list[Completion]:
    """Generate a completion for each prompt (lists of token ids). Stop strings and streaming need `tokenizer`.

    Decoding stops only at params.stop_ids: none by default, even with a tokenizer given (transformers' generate
    stops at the EOS of its generation config). Pass stop_ids=tokenizer.stop_token_ids, as chat_reply does.

    on_text(row, text) is called with each new piece of a row's reply as soon as it is safe to show.
    """
    # a copy checks and normalises again fields set after construction (params.stop_strings = "Observation:")
    params = dataclasses.replace(params) if params is not None else SamplingParams()
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    vocab = model.model.embed_tokens.num_embeddings
    for row, p in enumerate(prompts):
        if min(p) < 0 or max(p) >= vocab:  # (the embedding lookup's own error says only "index out of range")
            raise ValueError(f"prompt {row} holds token id {min(p) if min(p) < 0 else max(p)}, outside the "
                             f"model's vocabulary of {vocab} ids")
    if (params.stop_strings or on_text) and tokenizer is None:
        raise ValueError("stop strings and streaming need a tokenizer to decode the text")
    device = model.lm_head.weight.device
    B, lengths = len(prompts), [len(p) for p in prompts]
    T = max(lengths)
    cache = model.new_cache(B, T + params.max_new_tokens)
    ids, key_valid = _pad(prompts, T, padding_side, device)
    positions = (key_valid.long().cumsum(dim=1) - 1).clamp(min=0)
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)

    ragged = min(lengths) != T
    forward = inference_forward(model)  # the model's own forward when no plan applies
    # Only each row's last prompt position needs logits (transformers' generate keeps 1 too): [B, T, vocab] for a
    # long prompt is gigabytes (8k tokens x a 152k vocabulary = 4.9 GB in fp32). Every row ends at column T - 1
    # unless right padding made them ragged; only then are all positions computed and each row's last one picked.
    every_row_ends_last = padding_side == "left" or not ragged
    logits = forward(ids, positions=positions, cache=cache, key_valid=key_valid if ragged else None,
                     last_only=every_row_ends_last)
    last = torch.tensor([T - 1 if padding_side == "left" else n - 1 for n in lengths], device=device)
    logits = logits[:, -1] if every_row_ends_last else logits[torch.arange(B, device=device), last]
    next_pos = torch.tensor(lengths, device=device)

    stop_ids = set(params.stop_ids)
    out = [Completion() for _ in range(B)]
    texts = [_RowText(tokenizer, params.stop_strings) for _ in range(B)] if tokenizer is not None else None
    done = [False] * B
    for step in range(params.max_new_tokens):
        tokens = sample_next(logits, params, generator)
        for b, tok in enumerate(tokens.tolist()):
            if done[b]:
                continue
            if tok in stop_ids:
                done[b], out[b].finish_reason = True, "stop_id"
                continue
            out[b].token_ids.append(tok)
            if texts is not None:
                delta = texts[b].update(out[b].token_ids)
                if delta and on_text:
                    on_text(b, delta)
                if texts[b].stopped:
                    done[b], out[b].finish_reason = True, "stop_string"
        if all(done) or step == params.max_new_tokens - 1:
            break
        logits = forward(tokens[:, None], positions=next_pos[:, None], cache=cache)[:, -1]
        next_pos = next_pos + 1

    for b in range(B):
        if texts is not None:
            if not texts[b].stopped:
                texts[b].update(out[b].token_ids)
            tail = texts[b].flush()
            if tail and on_text:
                on_text(b, tail)
            out[b].text = texts[b].text
    return out


def _pad(prompts, T, side, device):
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    ids = torch.zeros(len(prompts), T, dtype=torch.long, device=device)
    valid = torch.zeros(len(prompts), T, dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):
        cols = slice(T - len(p), T) if side == "left" else slice(0, len(p))
        ids[b, cols] = torch.as_tensor(list(p), device=device)
        valid[b, cols] = True
    return ids, valid
