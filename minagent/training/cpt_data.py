"""Continual-pretraining data: a directory of manuals, one manual file or a JSONL of {"text": ...} -> one token
stream.

Each document is encoded with the tokenizer's own special tokens (BOS for Llama-family tokenizers, nothing for
Qwen/SmolLM2) and followed by one EOS (added unless the tokenizer's own template already ends with it), so the
model learns where a document ends. Manual files are read by the retrieval module's reader: .txt and .md as they
are, HTML turned into text whose headings, list items and table rows stay on their own lines (cells joined by
" | "); a page shipped as both .html and .txt is read once.

Tokenising a large manual set takes minutes in pure Python, so the stream is cached on disk under a key made from
the files' contents, the tokenizer files and the settings: a second run (or a resumed one) loads two .npy files.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..jsonl import read_jsonl
from .errors import TrainingDataError

CACHE_VERSION = 2  # 2: one EOS per document where the tokenizer appends EOS itself
# a --data file with one of these suffixes is one manual, not a JSONL corpus (retrieval.documents reads them)
MANUAL_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja")


@dataclass
class TextDocument:
    source: str   # "file" or "file:line" for JSONL
    text: str


def read_cpt_documents(data: str | Path, on_bad_line: str = "fail", log=print) -> list[TextDocument]:
    """Documents of a manual directory, a single .txt/.md/.html manual or a JSONL file, in a stable (sorted)
    order."""
    data = Path(data)
    if data.is_dir():
        from minagent.retrieval.documents import list_corpus_files, read_document
        from minagent.retrieval.errors import EmptyCorpusError

        try:
            files = list_corpus_files(str(data))
        except EmptyCorpusError as e:
            raise TrainingDataError(str(e)) from None
        docs = []
        for path, source in files:
            doc = read_document(path, source)
            if doc.text.strip():
                docs.append(TextDocument(source, doc.text))
        if not docs:
            raise TrainingDataError(f"{data}: every .txt/.md/.html file is empty; nothing to train on")
        return docs
    if not data.is_file():
        raise FileNotFoundError(f"{data}: no such file or directory (expected a directory of manuals or a "
                                f"JSONL file of {{\"text\": ...}} lines)")
    if data.suffix.lower() in MANUAL_EXTENSIONS:
        return [_single_manual(data)]
    def text_of(obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError('expected an object with a string field "text"')
        return obj["text"] if obj["text"].strip() else None
    rows, bad = read_jsonl(data, text_of, on_bad_line=on_bad_line, log=log, error=TrainingDataError,
                           hint=" (use --on-bad-line skip to skip such lines)")
    docs = [TextDocument(where, text) for where, text in rows]
    if not docs:
        raise TrainingDataError(f"{data}: no non-empty {{\"text\": ...}} lines; nothing to train on"
                                + (f" ({bad} malformed lines skipped)" if bad else ""))
    if bad:
        log(f"WARNING: {data}: {bad} malformed line{'s' if bad > 1 else ''} skipped (--on-bad-line skip), "
            f"{len(docs)} documents read")
    return docs


def _single_manual(path: Path) -> TextDocument:
    """One manual file given as the corpus: read as a directory's file would be (a .txt handed to the JSONL reader
    failed as "line 1: not valid JSON", which sent the user looking for a JSON problem)."""
    from minagent.retrieval.documents import read_document

    doc = read_document(str(path), path.name)
    if not doc.text.strip():
        raise TrainingDataError(f"{path}: the file is empty; nothing to train on")
    return TextDocument(path.name, doc.text)


def _cache_key(docs: list[TextDocument], tokenizer_dir: Path, settings: dict) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True).encode())
    for name in TOKENIZER_FILES:
        p = tokenizer_dir / name
        if p.is_file():
            h.update(name.encode() + hashlib.sha256(p.read_bytes()).digest())
    for d in docs:
        h.update(d.source.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MINAGENT_CACHE", Path.home() / ".cache" / "minagent")) / "cpt-tokens"


def tokenize_corpus(docs: list[TextDocument], tokenizer, tokenizer_dir: str | Path, cache_dir: str | Path | None,
                    log=print) -> tuple[np.ndarray, np.ndarray]:
    """(stream, doc_of_token): every document's ids followed by EOS, concatenated; cached under cache_dir."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TrainingDataError(f"{tokenizer_dir}: the tokenizer has no EOS token; CPT needs one between documents")
    key = _cache_key(docs, Path(tokenizer_dir), {"eos": eos, "add_special_tokens": True})
    cache = Path(cache_dir) / key if cache_dir is not None else None
    if cache is not None and (cache / "stream.npy").is_file() and (cache / "docs.npy").is_file():
        log(f"tokenised corpus loaded from cache {cache}")
        return np.load(cache / "stream.npy"), np.load(cache / "docs.npy")
    pieces, owners = [], []
    for i, d in enumerate(docs):
        # parse_special=False: a manual that mentions "<|im_end|>" gets it as text, not as the control token
        ids = tokenizer.encode(d.text, add_special_tokens=True, parse_special=False)
        if not ids or ids[-1] != eos:  # a tokenizer that appends EOS itself (add_eos_token, an EOS template)
            ids.append(eos)            # already ended the document: a second one would teach EOS -> EOS
        pieces.append(np.asarray(ids, dtype=np.int64))
        owners.append(np.full(len(ids), i, dtype=np.int64))
    stream, doc_of_token = np.concatenate(pieces), np.concatenate(owners)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tmp-"))
        np.save(tmp / "stream.npy", stream)
        np.save(tmp / "docs.npy", doc_of_token)
        (tmp / "sources.json").write_text(json.dumps([d.source for d in docs]), encoding="utf-8")
        try:
            os.replace(tmp, cache)  # atomic: another run never sees half a cache entry
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        log(f"tokenised corpus ({len(stream):,} tokens, {len(docs)} documents) cached in {cache}")
    return stream, doc_of_token
