"""A tokenizer.json with a BPE model (Qwen2/2.5, Llama-3, SmolLM2, GPT-2 style), run the way HF tokenizers does:

    raw text -> cut out added tokens (normalized: false) -> normalize each piece (NFC)
             -> cut out added tokens (normalized: true, spelled as the normalizer writes them)
             -> pre-tokenize -> BPE each piece -> ids
             [-> post-processor adds BOS etc. when add_special_tokens=True]
    ids -> token strings (added tokens by their content) -> decoder (ByteLevel: bytes -> UTF-8)

Every section is built by its own module; this one only wires them and turns a spec problem into an error
that names the file and the JSON field.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .added_tokens import AddedToken, AddedTokenMatcher
from .bpe import BPE
from .byte_level import to_byte_chars, token_bytes
from .decoders import build_decoder, run_decoder
from .errors import SpecError, TokenizerFormatError
from .normalizers import build_normalizer
from .postprocessors import build_postprocessor
from .pretokenizers import build_pretokenizer, run_pretokenizer


def read_tokenizer_json(path: str | Path) -> dict:
    """Parse tokenizer.json; a syntax error names the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except json.JSONDecodeError as e:
        raise TokenizerFormatError(path, "(document)", f"invalid JSON at line {e.lineno} column {e.colno}: "
                                                       f"{e.msg}") from None
    except UnicodeDecodeError as e:
        raise TokenizerFormatError(path, "(document)", f"not UTF-8 text: {e}") from None
    if not isinstance(spec, dict):
        raise TokenizerFormatError(path, "(document)", f"expected a JSON object, got {type(spec).__name__}")
    return spec


def is_byte_level(spec: dict) -> bool:
    """Whether a tokenizer.json spells tokens with GPT-2 byte characters (ByteLevel decoder or pre-tokenizer)."""
    def has(node) -> bool:
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(has(v) for v in node.values())
        if isinstance(node, list):
            return any(has(v) for v in node)
        return False
    return has(spec.get("decoder")) or has(spec.get("pre_tokenizer"))


def _build_model(spec: dict) -> BPE:
    """The `model` section; a merges list that is missing, mistyped or empty-but-needed is an error."""
    model = spec.get("model")
    if not isinstance(model, dict):
        raise SpecError("model", f"expected an object, got {type(model).__name__}")
    if model.get("type", "BPE") != "BPE":
        raise SpecError("model.type", f"only BPE models are supported, got {model.get('type')!r}")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise SpecError(f"model.{key}", f"{model[key]!r} is not supported (byte-level BPE has none)")
    if model.get("dropout"):
        raise SpecError("model.dropout", "BPE dropout is random at encode time; expected null")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise SpecError("model.vocab", "expected an object mapping token strings to integer ids")
    merges = model.get("merges")
    if not isinstance(merges, list):
        raise SpecError("model.merges", f"expected a list, got {type(merges).__name__}")
    added = {t.get("content") for t in spec.get("added_tokens") or [] if isinstance(t, dict)}
    if not merges and any(len(t) > 1 and t not in added for t in vocab):
        # multi-character tokens without merges can never be produced: the file lost its merges
        raise SpecError("model.merges", "empty, yet model.vocab has multi-character tokens")
    return BPE(vocab, merges, unk_token=model.get("unk_token"), byte_fallback=bool(model.get("byte_fallback")),
               fuse_unk=bool(model.get("fuse_unk")), ignore_merges=bool(model.get("ignore_merges")))


class BPETokenizer:
    """encode/decode for one tokenizer.json. `source` names the file in error messages."""

    def __init__(self, spec: dict, source: str = "tokenizer.json"):
        self.source = source
        section = "model"
        try:
            self.model = _build_model(spec)
            section = "added_tokens"
            added = [AddedToken.from_json(item, f"added_tokens[{i}]")
                     for i, item in enumerate(spec.get("added_tokens") or [])]
            section = "normalizer"
            self.normalizer = build_normalizer(spec.get("normalizer"))
            section = "pre_tokenizer"
            self.pre_steps = build_pretokenizer(spec.get("pre_tokenizer"))
            # ByteLevel last (all byte-level tokenizers): split without mapping, map bytes only on a cache miss
            self._spell = None
            if self.pre_steps and hasattr(self.pre_steps[-1], "split_only"):
                self.pre_steps = self.pre_steps[:-1] + [self.pre_steps[-1].split_only]
                self._spell = to_byte_chars
            section = "post_processor"
            self.post_process = build_postprocessor(spec.get("post_processor"))
            section = "decoder"
            self.decoder = build_decoder(spec.get("decoder"))
        except SpecError as e:
            raise TokenizerFormatError(source, e.field, e.problem) from None
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise TokenizerFormatError(source, section, f"malformed ({type(e).__name__}: {e})") from None

        # plain ByteLevel decoding is just bytes per id, joined: cache each id's bytes (generation decodes often)
        self._byte_level_decoder = (spec.get("decoder") or {}).get("type") == "ByteLevel"
        self._id_bytes: dict[int, bytes] = {}
        self.added_tokens: dict[str, AddedToken] = {t.content: t for t in added}  # token_to_id: as written
        # A normalized token is looked for in normalized text, so HF normalizes its content too (Llama-2's
        # Prepend("▁") + Replace normalizer makes "<x>" "▁<x>", Lowercase makes "<B>" "<b>"), and id_to_token /
        # decode then give that spelling. Unnormalized, such a token could never match.
        if self.normalizer is not None:
            added = [dataclasses.replace(t, content=self.normalizer(t.content)) if t.normalized else t
                     for t in added]
        self.added_by_id: dict[int, AddedToken] = {t.id: t for t in added}
        self._special_ids = frozenset(t.id for t in added if t.special)
        self._vocab_size = max([*self.model.id_to_token, *self.added_by_id], default=-1) + 1
        self._raw_matcher = AddedTokenMatcher([t for t in added if not t.normalized])
        self._normalized_matcher = AddedTokenMatcher([t for t in added if t.normalized])

    @classmethod
    def from_file(cls, path: str | Path) -> "BPETokenizer":
        return cls(read_tokenizer_json(path), str(path))

    # ---- vocabulary --------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids in use: model vocabulary plus added tokens (HF: len(tokenizer))."""
        return self._vocab_size

    def token_to_id(self, token: str) -> int | None:
        tok = self.added_tokens.get(token)
        return tok.id if tok is not None else self.model.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        tok = self.added_by_id.get(token_id)
        return tok.content if tok is not None else self.model.id_to_token.get(token_id)

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special_ids

    # ---- encode / decode ---------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False, parse_special: bool = True) -> list[int]:
        ids: list[int] = []
        encode_word, steps, spell = self.model.encode_word, self.pre_steps, self._spell
        for i, part in enumerate(self._raw_matcher.split(text, parse_special)):
            if isinstance(part, AddedToken):
                ids.append(part.id)
                continue
            if self.normalizer is not None:
                part = self.normalizer(part)
            for j, sub in enumerate(self._normalized_matcher.split(part, parse_special)):
                if isinstance(sub, AddedToken):
                    ids.append(sub.id)
                    continue
                for piece in run_pretokenizer(steps, sub, at_start=(i == 0 and j == 0)):
                    ids.extend(encode_word(piece, spell))
        return self.post_process(ids) if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        if hasattr(ids, "tolist"):  # torch / numpy
            ids = ids.tolist()
        skip = self.special_ids if skip_special_tokens else ()
        if self._byte_level_decoder:
            cache, parts = self._id_bytes, []
            for i in ids:
                if i in skip:
                    continue
                b = cache.get(i)
                if b is None:
                    token = self.id_to_token(i)  # HF silently drops ids it does not know
                    b = cache[int(i)] = token_bytes(token) if token is not None else b""
                parts.append(b)
            return b"".join(parts).decode("utf-8", errors="replace")
        tokens = []
        for i in ids:
            if i not in skip:
                token = self.id_to_token(int(i))
                if token is not None:
                    tokens.append(token)
        return run_decoder(self.decoder, tokens)
