"""`load_tokenizer(path)` and the `Tokenizer` it returns: one object for encode/decode, the special ids and the
chat template, whatever the file format underneath.

Which file is used, for a checkpoint directory:
  1. tokenizer.json when it is byte-level BPE (Qwen, Llama-3, SmolLM2, GPT-2).
  2. tokenizer.model (SentencePiece) when present: for Llama-2/Mistral we prefer the original model file over
     transformers' converted tokenizer.json, which differs from SentencePiece on runs of spaces.
  3. any other BPE tokenizer.json (e.g. a converted SentencePiece model without its .model file).
A path to a file is used as that file. The rest (special tokens, template, eos ids) comes from the JSON files
next to it (see checkpoint_files.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .bpe_tokenizer import BPETokenizer, is_byte_level, read_tokenizer_json
from .chat_templates import detect_chat_template, render_chat
from .checkpoint_files import TokenizerSettings, read_settings
from .errors import TokenizerFileNotFoundError, TokenizerFormatError
from .sentencepiece_tokenizer import SentencePieceTokenizer

TOKENIZER_FILES = ["tokenizer.json", "tokenizer.model"]
# Tokens that end a turn or a document in the families we support; present ones are added to stop_token_ids.
END_TOKENS = ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end_of_text|>", "</s>"]


class Tokenizer:
    """What the rest of minagent uses. `backend` is a BPETokenizer or a SentencePieceTokenizer."""

    def __init__(self, backend, settings: TokenizerSettings | None = None):
        self.backend = backend
        s = settings or TokenizerSettings()
        self.settings = s
        if isinstance(backend, SentencePieceTokenizer):
            backend.add_bos = True if s.add_bos_token is None else s.add_bos_token
            backend.add_eos = bool(s.add_eos_token)
        self.bos_token_id = self._resolve("bos_token", s.config_bos_ids, getattr(backend, "bos_id", None))
        self.eos_token_id = self._resolve("eos_token", s.config_eos_ids, getattr(backend, "eos_id", None))
        self.pad_token_id = self._resolve("pad_token", s.config_pad_ids, None)
        self.bos_token = self.id_to_token(self.bos_token_id) if self.bos_token_id is not None else None
        self.eos_token = self.id_to_token(self.eos_token_id) if self.eos_token_id is not None else None
        self.pad_token = self.id_to_token(self.pad_token_id) if self.pad_token_id is not None else None
        self.chat_template = s.chat_template
        specials = {self.id_to_token(i) for i in backend.special_ids}
        self.chat_renderer = detect_chat_template(s.chat_template, specials, self.bos_token, self.eos_token)
        stops = [self.eos_token_id, *s.config_eos_ids,
                 *(backend.token_to_id(t) for t in END_TOKENS if t in specials)]
        self.stop_token_ids: list[int] = list(dict.fromkeys(i for i in stops if i is not None))

    def _resolve(self, key: str, config_ids: list[int], fallback: int | None) -> int | None:
        """Id of a special token named in tokenizer_config.json, else from generation_config/config.json."""
        token = getattr(self.settings, key)
        if token is not None:
            tid = self.backend.token_to_id(token)
            if tid is None:
                where = (self.settings.directory or Path(".")) / "tokenizer_config.json"
                raise TokenizerFormatError(where, key, f"{token!r} is not in the vocabulary of "
                                                       f"{self.backend.source}")
            return tid
        return config_ids[0] if config_ids else fallback

    # ---- the interface ------------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids. add_special_tokens adds what the tokenizer's post-processor adds (Llama-3, Llama-2 and
        Mistral: BOS; Qwen, SmolLM2: nothing). parse_special=False encodes special-token text in `text` as plain
        text: use it for untrusted text such as retrieved passages or tool output."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens, parse_special=parse_special)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True,
                            continue_final_message: bool = False, enable_thinking: bool | None = None) -> str:
        """The prompt string, identical to transformers' apply_chat_template(..., tokenize=False) for the
        supported templates. Encode it with add_special_tokens=False (Llama-3's and Mistral's templates already
        write BOS). enable_thinking is transformers' keyword for Qwen3's template (False: an empty think block
        after the generation prompt); None keeps the renderer's own setting; other templates ignore it, as their
        Jinja does."""
        return "".join(t for t, _ in self.chat_segments(messages, add_generation_prompt, continue_final_message,
                                                        enable_thinking))

    def chat_segments(self, messages, add_generation_prompt: bool = False, continue_final_message: bool = False,
                      enable_thinking: bool | None = None) -> list[tuple[str, bool]]:
        """The same text as (piece, is_assistant_output) pairs, for masking the loss to assistant turns."""
        renderer = self.chat_renderer
        if enable_thinking is not None and hasattr(renderer, "enable_thinking"):
            # a copy for this call: the setting must not stick to the tokenizer for the next caller
            renderer = dataclasses.replace(renderer, enable_thinking=enable_thinking)
        return render_chat(renderer, messages, add_generation_prompt, continue_final_message)

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    @property
    def special_token_ids(self) -> set[int]:
        return set(self.backend.special_ids)

    def __repr__(self) -> str:
        return (f"Tokenizer({type(self.backend).__name__}, vocab_size={self.vocab_size}, "
                f"template={self.chat_renderer.name}, eos={self.eos_token!r}, stop={self.stop_token_ids})")


def _backend_for(path: Path, settings: TokenizerSettings):
    if path.is_file():
        if path.suffix == ".json":
            return BPETokenizer(read_tokenizer_json(path), str(path))
        return SentencePieceTokenizer(path, settings.extra_tokens)
    json_path, model_path = path / "tokenizer.json", path / "tokenizer.model"
    spec = read_tokenizer_json(json_path) if json_path.is_file() else None
    if spec is not None and is_byte_level(spec):
        return BPETokenizer(spec, str(json_path))
    if model_path.is_file():
        return SentencePieceTokenizer(model_path, settings.extra_tokens)
    if spec is not None:
        return BPETokenizer(spec, str(json_path))
    raise TokenizerFileNotFoundError(path, TOKENIZER_FILES)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Tokenizer of a checkpoint directory (or of a tokenizer.json / tokenizer.model file)."""
    path = Path(path)
    if not path.exists():
        raise TokenizerFileNotFoundError(path, TOKENIZER_FILES) if path.suffix == "" else \
            FileNotFoundError(f"tokenizer file not found: {path}")
    settings = read_settings(path if path.is_dir() else path.parent)
    return Tokenizer(_backend_for(path, settings), settings)
