"""BERT's WordPiece tokenizer (uncased), written from the algorithm, reading a plain vocab.txt.

Two stages, as in the original BERT code and HF `tokenizers`:
1. Basic tokenization (the BertNormalizer + BertPreTokenizer): drop NUL, U+FFFD and control characters, turn
   every whitespace character into a space, put spaces around CJK ideographs (each becomes its own word), strip
   accents (NFD, drop combining marks) and lowercase, then split on whitespace and on every punctuation char.
2. WordPiece: greedy longest-match-first over each word; pieces after the first carry the "##" prefix; a word
   with no full segmentation (or longer than 100 chars) becomes [UNK].
Before both, the special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) are cut out of the raw text and encoded as
themselves, as HF's added tokens are: "use [MASK] here" has id 103 in the middle, not "[", "mask", "]".
Results are cached per word: manuals repeat the same words endlessly.
Character classes (control, punctuation, non-spacing mark) follow HF tokenizers, whose Rust tables are Unicode
8.0's, not the newer ones in Python's unicodedata: the few hundred code points that moved since are listed
below, so ids are identical for every character assigned up to Unicode 14.0 (Python 3.11's tables). Characters
assigned later are classified by whatever unicodedata the running Python has.
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


def _code_points(*ranges):
    """frozenset of the code points in (first, last) / (single,) tuples."""
    return frozenset(c for r in ranges for c in range(r[0], r[-1] + 1))


# HF tokenizers classifies characters with Unicode 8.0's general categories (its `unicode_categories` crate).
# Characters assigned since then are ordinary letters to it (kept, never split off, never stripped), and three
# changed category. Found by running every assigned code point through tokenizers' BertNormalizer and
# BertPreTokenizer; Python 3.11's unicodedata (Unicode 14.0) disagrees exactly on these:
_NOT_PUNCTUATION_IN_HF = _code_points(   # P* now, unassigned in 8.0
    (0x61D,), (0x9FD,), (0xA76,), (0xC77,), (0xC84,), (0x1B7D, 0x1B7E), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D),
    (0x10EAD,), (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D,),
    (0x11660, 0x1166C), (0x116B9,), (0x1183B,), (0x11944, 0x11946), (0x119E2,), (0x11A3F, 0x11A46),
    (0x11A9A, 0x11A9C), (0x11A9E, 0x11AA2), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8),
    (0x11FFF,), (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A), (0x16FE2,), (0x1E95E, 0x1E95F))
_PUNCTUATION_IN_HF = _code_points((0x166D,), (0x111C9,))   # Po in 8.0, So / Mn now
_NOT_NONSPACING_MARK_IN_HF = _code_points(   # Mn now, unassigned in 8.0 (0x111C9: Po in 8.0)
    (0x7FD,), (0x898, 0x89F), (0x8CA, 0x8E1), (0x9FE,), (0xAFA, 0xAFF), (0xB55,), (0xC04,), (0xC3C,), (0xD00,),
    (0xD3B, 0xD3C), (0xD81,), (0xEBA,), (0x180F,), (0x1885, 0x1886), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFB),
    (0xA82C,), (0xA8C5,), (0xA8FF,), (0xA9BD,), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50),
    (0x10F82, 0x10F85), (0x11070,), (0x11073, 0x11074), (0x110C2,), (0x111C9,), (0x111CF,), (0x1123E,),
    (0x1133B,), (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446,), (0x1145E,), (0x1182F, 0x11837),
    (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E,), (0x11943,), (0x119D4, 0x119D7), (0x119DA, 0x119DB),
    (0x119E0,), (0x11A01, 0x11A0A), (0x11A33, 0x11A38), (0x11A3B, 0x11A3E), (0x11A47,), (0x11A51, 0x11A56),
    (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A99), (0x11C30, 0x11C36), (0x11C38, 0x11C3D),
    (0x11C3F,), (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6),
    (0x11D31, 0x11D36), (0x11D3A,), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47,), (0x11D90, 0x11D91),
    (0x11D95,), (0x11D97,), (0x11EF3, 0x11EF4), (0x16F4F,), (0x16FE4,), (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46),
    (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021), (0x1E023, 0x1E024), (0x1E026, 0x1E02A),
    (0x1E130, 0x1E136), (0x1E2AE,), (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A))
_NONSPACING_MARK_IN_HF = _code_points((0x1734,))                     # Mn in 8.0, Mc now
_NOT_CONTROL_IN_HF = _code_points((0x890, 0x891), (0x8E2,), (0x110CD,), (0x13430, 0x13438))  # Cf now, new


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True                       # all ASCII non-alphanumerics count, e.g. "$" and "^"
    if cp in _NOT_PUNCTUATION_IN_HF:
        return False
    return cp in _PUNCTUATION_IN_HF or unicodedata.category(ch).startswith("P")


def _is_nonspacing_mark(ch):
    """What strip_accents drops after NFD (HF's `is_mark_nonspacing`)."""
    if unicodedata.category(ch) == "Mn":
        return ord(ch) not in _NOT_NONSPACING_MARK_IN_HF
    return ord(ch) in _NONSPACING_MARK_IN_HF


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    """HF tokenizers' `is_control`: control, format, private-use and surrogate characters (not unassigned)."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") and ord(ch) not in _NOT_CONTROL_IN_HF


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
            text = "".join(c for c in unicodedata.normalize("NFD", text) if not _is_nonspacing_mark(c))
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
