"""BERT's WordPiece tokenizer (uncased), written from the algorithm, reading a plain vocab.txt.

Two stages, as in the original BERT code and HF `tokenizers`:
1. Basic tokenization (the BertNormalizer + BertPreTokenizer): drop NUL, U+FFFD and control characters, turn
   every whitespace character into a space, put spaces around CJK ideographs (each becomes its own word), strip
   accents (NFD, drop combining marks) and lowercase, then split on whitespace and on every punctuation char.
2. WordPiece: greedy longest-match-first over each word; pieces after the first carry the "##" prefix; a word
   with no full segmentation (or longer than 100 chars) becomes [UNK].
Before both, the special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) are cut out of the raw text and encoded as
themselves, as HF's added tokens are: "use [MASK] here" has id 103 in the middle, not "[", "mask", "]".
Results are cached per word: manuals repeat the same words endlessly. Characters added in very recent Unicode
versions can be classified differently by Python's unicodedata and HF's Rust tables; everything else matches.
"""

import os
import re
import unicodedata

import torch


def _is_cjk(cp):
    """CJK Unified Ideographs blocks as BERT defines them (not Hangul or Kana: those are words of letters).

    HF tokenizers (our oracle, and what sentence-transformers runs) starts the Extension E range at 0x2B920
    where Google's BERT has 0x2B820; we follow HF so ids are identical.
    """
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True                       # all ASCII non-alphanumerics count, e.g. "$" and "^"
    return unicodedata.category(ch).startswith("P")


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    """HF tokenizers' `is_control`: control, format, private-use and surrogate characters (not unassigned)."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


# ASCII fast path: controls vanish, \t \n \r become spaces; words are [a-z0-9]+ and every other printable
# ASCII character is punctuation (BERT counts all of them), so one regex splits the text.
_ASCII_CLEAN = {i: None for i in range(32)} | {127: None, 9: " ", 10: " ", 13: " "}
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class WordPieceTokenizer:
    def __init__(self, vocab, lowercase=True, strip_accents=None, max_chars_per_word=100,
                 unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]"):
        self.vocab = vocab                                    # piece -> id
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.max_chars_per_word = max_chars_per_word
        for name, tok in (("unk", unk_token), ("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            if tok not in vocab:
                raise ValueError(f"vocab has no {name} token {tok!r}")
        self.unk_id, self.cls_id = vocab[unk_token], vocab[cls_token]
        self.sep_id, self.pad_id = vocab[sep_token], vocab[pad_token]
        # matched in the raw text first (case-sensitive, anywhere, longest first): HF's special added tokens
        self.special_ids = {t: vocab[t] for t in (unk_token, cls_token, sep_token, pad_token, mask_token)
                            if t in vocab}
        self._special_re = re.compile("(" + "|".join(map(re.escape, sorted(self.special_ids, key=len,
                                                                            reverse=True))) + ")")
        self._cache = {}

    @classmethod
    def from_file(cls, path, **kwargs):
        """Load vocab.txt (one piece per line, id = line number)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"WordPiece vocabulary {path!r} not found")
        with open(path, encoding="utf-8") as f:
            pieces = f.read().split("\n")
        if pieces and pieces[-1] == "":
            pieces.pop()
        vocab = {}
        for i, p in enumerate(pieces):
            vocab.setdefault(p.rstrip("\r"), i)
        return cls(vocab, **kwargs)

    # -- stage 1 --------------------------------------------------------------------------------------------
    def normalize(self, text):
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = "".join(out)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            # per character like Rust's to_lowercase: str.lower() would turn a word-final Σ into ς
            text = "".join(c.lower() for c in text) if "\u03a3" in text else text.lower()
        return text

    def basic_tokenize(self, text):
        """Words and punctuation marks, before WordPiece."""
        if text.isascii() and self.lowercase:
            return _ASCII_WORDS.findall(text.translate(_ASCII_CLEAN).lower())
        words = []
        for chunk in self.normalize(text).split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if i > start:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    # -- stage 2 --------------------------------------------------------------------------------------------
    def word_ids(self, word):
        """WordPiece ids of one basic token (greedy longest match first)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_chars_per_word:
            ids = [self.unk_id]
        else:
            ids, start, vocab = [], 0, self.vocab
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in vocab:
                        ids.append(vocab[piece])
                        break
                    end -= 1
                else:
                    ids = [self.unk_id]
                    break
                start = end
        self._cache[word] = ids
        return ids

    def encode(self, text, max_length=None, add_special_tokens=True):
        """Token ids of one text; with special tokens: [CLS] ... [SEP], truncated to max_length in total."""
        ids = []
        # split() with a capturing group: odd pieces are special tokens, even pieces the text between them
        for i, piece in enumerate(self._special_re.split(text)):
            if i % 2:
                ids.append(self.special_ids[piece])
                continue
            for w in self.basic_tokenize(piece):
                ids.extend(self.word_ids(w))
        if add_special_tokens:
            if max_length is not None:
                ids = ids[: max(0, max_length - 2)]
            return [self.cls_id] + ids + [self.sep_id]
        return ids if max_length is None else ids[:max_length]

    def batch(self, texts, max_length=None):
        """(input_ids [B, T] int64, attention_mask [B, T] int64), right-padded to the longest text."""
        rows = [self.encode(t, max_length) for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask
