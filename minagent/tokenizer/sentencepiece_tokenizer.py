"""SentencePiece `tokenizer.model` files (Llama-2, Mistral): BPE with byte fallback, run by the `sentencepiece`
package itself, which is the implementation these models were trained with.

Special pieces (<s>, </s>, <unk>, Mistral's [INST] control tokens, extra tokens a tokenizer_config.json adds) are
cut out of the text first, and every text segment between them goes through `sp.encode` on its own, with
SentencePiece's dummy "▁" prefix. That is what Meta's and Mistral's reference code does (each turn is a separate
`encode` call) and what transformers calls legacy=True: "[INST]" after <s> becomes "▁[", "INST", "]". One
exception: a segment that follows a special token and starts with a space takes that space as its "▁", with
no dummy prefix on top. Chat templates write such spaces (Mistral's " [INST]" after </s>, " reply" after
[/INST]) where the reference code encodes the turn without one; transformers' legacy=False and fast tokenizers
agree (tested on Mistral's v1 template with its real tokenizer.model).

Known, documented differences from transformers' converted fast tokenizer (tokenizer.json): SentencePiece
splits runs of spaces before the last one ("▁▁▁" + "▁def") while the converted BPE merges across them
("▁▁▁▁" + "def"), and a text that starts with a space gets SentencePiece's extra "▁" there. Elsewhere the ids
are identical (tested). Decoding follows HF's decoder chain for these models: '▁' -> ' ', <0xNN> byte pieces
-> UTF-8 (one U+FFFD per byte of an invalid run), concatenate, drop one leading space.
"""
from __future__ import annotations

from pathlib import Path

from .added_tokens import AddedToken, AddedTokenMatcher
from .decoders import build_decoder, run_decoder
from .errors import TokenizerFormatError

_HF_LLAMA_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


class SentencePieceTokenizer:
    """encode/decode over a tokenizer.model; `extra_tokens` are added tokens declared outside the model file."""

    def __init__(self, model_file: str | Path, extra_tokens: list[AddedToken] = ()):
        import sentencepiece as spm  # runtime dependency, only needed for SentencePiece checkpoints

        self.source = str(model_file)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=self.source)
        except (RuntimeError, OSError) as e:
            raise TokenizerFormatError(model_file, "(document)", f"not a SentencePiece model: {e}") from None
        n = self.sp.get_piece_size()
        specials = [AddedToken(i, self.sp.id_to_piece(i), special=True)
                    for i in range(n) if self.sp.is_control(i) or self.sp.is_unknown(i)]
        known = {t.content for t in specials}
        specials += [t for t in extra_tokens if t.content not in known]
        self.added_tokens = {t.content: t for t in specials}
        self.added_by_id = {t.id: t for t in specials}
        self._matcher = AddedTokenMatcher(specials)
        self._decoder = build_decoder(_HF_LLAMA_DECODER)
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.add_bos, self.add_eos = True, False  # LlamaTokenizer defaults; tokenizer_config.json may override

    @property
    def vocab_size(self) -> int:
        return max([self.sp.get_piece_size() - 1, *self.added_by_id]) + 1

    def token_to_id(self, token: str) -> int | None:
        if token in self.added_tokens:
            return self.added_tokens[token].id
        i = self.sp.piece_to_id(token)
        return i if self.sp.id_to_piece(i) == token else None

    def id_to_token(self, token_id: int) -> str | None:
        if token_id in self.added_by_id:
            return self.added_by_id[token_id].content
        return self.sp.id_to_piece(token_id) if 0 <= token_id < self.sp.get_piece_size() else None

    @property
    def special_ids(self) -> set[int]:
        return set(self.added_by_id)

    def encode(self, text: str, add_special_tokens: bool = False, parse_special: bool = True) -> list[int]:
        ids: list[int] = []
        after_special = False
        for part in self._matcher.split(text, parse_special):
            if isinstance(part, AddedToken):
                ids.append(part.id)
            elif after_special and part.startswith(" "):
                # transformers (Metaspace, prepend "first"; LlamaTokenizer legacy=False) reads the space after a
                # special token as the word's "▁": SentencePiece's own dummy prefix on top of it gave one "▁" too
                # many (Mistral's " [INST]" after </s>, " reply" after [/INST])
                ids.extend(self.sp.encode(part[1:]) if len(part) > 1 else [self.sp.piece_to_id("\u2581")])
            else:
                ids.extend(self.sp.encode(part))
            after_special = isinstance(part, AddedToken)
        if add_special_tokens:
            if self.add_bos and self.bos_id is not None:
                ids.insert(0, self.bos_id)
            if self.add_eos and self.eos_id is not None:
                ids.append(self.eos_id)
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        tokens = []
        for i in ids:
            i = int(i)
            added = self.added_by_id.get(i)
            if added is not None:
                if not (skip_special_tokens and added.special):
                    tokens.append(added.content)
            elif 0 <= i < self.sp.get_piece_size():
                tokens.append(self.sp.id_to_piece(i))
        return run_decoder(self._decoder, tokens)
