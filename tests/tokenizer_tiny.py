"""Tiny byte-level BPE tokenizers trained by HF `tokenizers` (the oracle) with the real pre-tokenizer layouts:
Qwen2 (NFC + Split(\\p{N}) regex + ByteLevel), Llama-3 (\\p{N}{1,3}, ignore_merges, BOS post-processor).
Training on the mixed corpus takes well under a second, so every run checks a freshly built file."""
from __future__ import annotations

import json

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, \
    trainers

from tokenizer_corpus import mixed_text

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]


def _train(pattern: str, specials: list[str], nfc: bool, vocab_size: int = 2000) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([mixed_text(seed=s, min_chars=30_000) for s in range(1, 9)], trainer)
    return tok


def qwen_style() -> dict:
    """Qwen2-layout tokenizer.json (as tokenizers writes it: merges as ["a", "b"] pairs), plus added tokens that
    exercise every flag: a non-special one (Qwen's <tool_call>), lstrip/rstrip, single_word, normalized."""
    tok = _train(QWEN2_PATTERN, QWEN_SPECIALS, nfc=True)
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("café", special=False, normalized=True),
                    AddedToken("[WORD]", special=False, single_word=True, normalized=False)])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False)])
    return json.loads(tok.to_str())


QWEN_STYLE_ADDED = QWEN_SPECIALS + ["<tool_call>", "café", "[WORD]", "<mask>"]


def llama3_style() -> dict:
    """Llama-3-layout tokenizer.json: \\p{N}{1,3}, no normalizer, ignore_merges, BOS added by TemplateProcessing."""
    tok = _train(LLAMA3_PATTERN, LLAMA3_SPECIALS, nfc=False)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = True
    return spec


def with_string_merges(spec: dict) -> dict:
    """The same tokenizer with merges spelled "a b" (older tokenizers, e.g. Qwen2.5's published file)."""
    out = json.loads(json.dumps(spec))
    out["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in out["model"]["merges"]]
    return out


def with_pair_merges(spec: dict) -> dict:
    out = json.loads(json.dumps(spec))
    out["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in out["model"]["merges"]]
    return out
