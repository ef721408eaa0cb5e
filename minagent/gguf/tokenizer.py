"""Rebuilding HF tokenizer files (tokenizer.json, tokenizer_config.json) from a GGUF's tokenizer metadata.

A GGUF carries the vocabulary (`tokenizer.ggml.tokens`, by id), the BPE merges, a type per token
(1 normal, 3 control, 4 user-defined, ...), the special token ids, the chat template and a *name* for the
pre-tokenizer (`tokenizer.ggml.pre`), not the pre-tokenizer itself. That name is llama.cpp's label for the
split rules of the HF tokenizer the file was converted from, so each supported name maps back to the
pre-tokenizer (and normalizer) of that HF tokenizer here:

  smollm, starcoder, refact   digits split one by one, then GPT-2's byte-level regex (llama.cpp: `\\p{N}`
                              then the GPT-2 pattern; HF: Sequence[Digits(individual_digits), ByteLevel])
  gpt-2                       GPT-2's byte-level regex
  llama-bpe, llama3, ...      Llama-3 split regex (digits in runs of up to 3), then byte-level
  qwen2, deepseek-r1-qwen     NFC, then Qwen2's split regex (single digits), then byte-level

The Llama-3 names also switch on `ignore_merges` (llama.cpp sets it for them in llama-vocab.cpp, and HF's
Llama-3 tokenizer.json has it): a pre-token that is itself in the vocabulary is one token even where no chain
of merges builds it, as tiktoken (Llama-3's own tokenizer) encodes it.

An unknown name is an error rather than a guess: a wrong split silently changes token ids.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CONTROL, USER_DEFINED = 3, 4

_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_BYTE_LEVEL_NO_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_then_bytes(pattern: str) -> dict:
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, _BYTE_LEVEL_NO_REGEX]}


_DIGITS_THEN_GPT2 = {"type": "Sequence",
                     "pretokenizers": [{"type": "Digits", "individual_digits": True}, _GPT2_BYTE_LEVEL]}
_NFC = {"type": "NFC"}

# tokenizer.ggml.pre -> (normalizer, pre_tokenizer) of the HF tokenizer.json
PRE_TOKENIZERS = {
    "smollm": (None, _DIGITS_THEN_GPT2),
    "starcoder": (None, _DIGITS_THEN_GPT2),
    "refact": (None, _DIGITS_THEN_GPT2),
    "gpt-2": (None, _GPT2_BYTE_LEVEL),
    "llama-bpe": (None, _split_then_bytes(LLAMA3_SPLIT)),
    "llama3": (None, _split_then_bytes(LLAMA3_SPLIT)),
    "llama-v3": (None, _split_then_bytes(LLAMA3_SPLIT)),
    "qwen2": (_NFC, _split_then_bytes(QWEN2_SPLIT)),
    "deepseek-r1-qwen": (_NFC, _split_then_bytes(QWEN2_SPLIT)),
}
# tokenizer.ggml.pre names for which llama.cpp takes a pre-token found in the vocabulary whole (ignore_merges)
# and adds BOS when the file has no tokenizer.ggml.add_bos_token (Llama-3 GGUFs written before the converter
# recorded it)
IGNORE_MERGES = ADD_BOS_BY_DEFAULT = {"llama-bpe", "llama3", "llama-v3"}


def _meta(g, key, default=None):
    return g.metadata.get(key, default)


def special_token_id(g, name: str) -> int | None:
    """tokenizer.ggml.{name}_token_id, None where absent. An id that is not a token of tokenizer.ggml.tokens is
    an error naming the key (it would otherwise surface as a bare IndexError, or as -1 picking the last token)."""
    key = f"tokenizer.ggml.{name}_token_id"
    token_id, tokens = _meta(g, key), _meta(g, "tokenizer.ggml.tokens")
    if token_id is None:
        return None
    n = len(tokens) if isinstance(tokens, list) else None
    if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0 or (n is not None and token_id >= n):
        raise _error(g, f"{key} is {token_id!r}, not a token id" + (f" (the vocabulary has {n} tokens)" if n else ""))
    return token_id


def special_token_ids(g) -> tuple[int | None, int | None, int | None]:
    """(bos, eos, pad) token ids from the metadata, None where absent."""
    return tuple(special_token_id(g, k) for k in ("bos", "eos", "padding"))


def add_bos_token(g) -> bool:
    """Whether llama.cpp adds BOS: tokenizer.ggml.add_bos_token, else its default for the pre-tokenizer name."""
    return bool(_meta(g, "tokenizer.ggml.add_bos_token", _meta(g, "tokenizer.ggml.pre") in ADD_BOS_BY_DEFAULT))


def _error(g, message):
    from .reader import GGUFError

    return GGUFError(f"{g.path}: {message}")


def tokenizer_json(g) -> dict:
    """The HF `tokenizer.json` (byte-level BPE) the GGUF's `tokenizer.*` metadata describes."""
    model = _meta(g, "tokenizer.ggml.model")
    if model != "gpt2":
        raise _error(g, f"tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) can be converted "
                          f"(convert without the tokenizer: tokenizer=False / --no-tokenizer)")
    pre = _meta(g, "tokenizer.ggml.pre")
    if pre is None:  # llama.cpp then runs its own "default" splitting, which no tokenizer.json here reproduces
        raise _error(g, "tokenizer.ggml.pre is missing (an older GGUF): which pre-tokenizer the model needs is "
                        "unknown; convert without the tokenizer (--no-tokenizer) and copy the model's "
                        "tokenizer.json from its original repository")
    if pre not in PRE_TOKENIZERS:
        raise _error(g, f"tokenizer.ggml.pre is {pre!r}; supported: {', '.join(PRE_TOKENIZERS)}")
    normalizer, pre_tokenizer = PRE_TOKENIZERS[pre]
    tokens = _meta(g, "tokenizer.ggml.tokens")
    merges = _meta(g, "tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise _error(g, "tokenizer metadata lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
    if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        raise _error(g, "tokenizer.ggml.tokens must be an array of strings")
    if not (isinstance(merges, list) and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)):
        raise _error(g, 'tokenizer.ggml.merges must be an array of strings "left right" (one space each)')
    types = _meta(g, "tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise _error(g, f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    vocab = {}
    for i, tok in enumerate(tokens):
        if tok in vocab:
            raise _error(g, f"token {tok!r} appears twice in tokenizer.ggml.tokens (ids {vocab[tok]} and {i})")
        vocab[tok] = i
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t == CONTROL}
             for i, (tok, t) in enumerate(zip(tokens, types)) if t in (CONTROL, USER_DEFINED)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": _post_processor(g, tokens),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": pre in IGNORE_MERGES,
                  "vocab": vocab, "merges": list(merges)},
    }


def _post_processor(g, tokens) -> dict:
    """Adds BOS/EOS around every encoded text when the GGUF says llama.cpp would; otherwise adds nothing."""
    bos, eos, _ = special_token_ids(g)
    front = [tokens[bos]] if add_bos_token(g) and bos is not None else []
    back = [tokens[eos]] if _meta(g, "tokenizer.ggml.add_eos_token", False) and eos is not None else []
    if not front and not back:
        return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}

    def seq(letter, type_id):
        return ([{"SpecialToken": {"id": t, "type_id": type_id}} for t in front]
                + [{"Sequence": {"id": letter, "type_id": type_id}}]
                + [{"SpecialToken": {"id": t, "type_id": type_id}} for t in back])

    specials = {t: {"id": t, "ids": [tokens.index(t)], "tokens": [t]} for t in front + back}
    return {"type": "TemplateProcessing", "single": seq("A", 0), "pair": seq("A", 0) + seq("B", 1),
            "special_tokens": specials}


def tokenizer_config(g, tok_json: dict) -> dict:
    """HF `tokenizer_config.json`: special tokens by content, chat template, added tokens."""
    tokens = _meta(g, "tokenizer.ggml.tokens")
    names = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "add_bos_token": add_bos_token(g),
              "add_eos_token": bool(_meta(g, "tokenizer.ggml.add_eos_token", False)),
              "clean_up_tokenization_spaces": False}
    for field, key in names.items():
        token_id = special_token_id(g, key)
        if token_id is not None:
            config[field] = tokens[token_id]
    arch = _meta(g, "general.architecture")
    if f"{arch}.context_length" in g.metadata:
        config["model_max_length"] = int(g.metadata[f"{arch}.context_length"])
    if "tokenizer.chat_template" in g.metadata:
        config["chat_template"] = g.metadata["tokenizer.chat_template"]
    config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                      for t in tok_json["added_tokens"]}
    return config


def write_json(path: Path, obj):
    """JSON to a temporary name, then renamed into place: readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_tokenizer_files(g, out_dir: str | Path):
    """Write tokenizer.json and tokenizer_config.json for the GGUF `g` into `out_dir`."""
    out_dir = Path(out_dir)
    tok = tokenizer_json(g)
    write_json(out_dir / "tokenizer.json", tok)
    write_json(out_dir / "tokenizer_config.json", tokenizer_config(g, tok))
