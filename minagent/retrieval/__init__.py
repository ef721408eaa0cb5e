"""Retrieval for the agent's search tool: manual chunking, numpy BM25, a dense index with a from-scratch BERT
encoder, and hybrid (RRF / weighted) search. Standalone: numpy, plus torch for the encoder.

Entry points: build_index / search_index / load_index (what `python infer.py index|search` calls) and
Retriever (in-memory index with .search()). The torch-based parts (DenseIndex, SentenceEncoder,
HiddenStateEncoder) are imported on first use so BM25-only callers never pay for importing torch.
"""

from .analyzer import Analyzer
from .bm25 import BM25Index
from .chunker import Passage, chunk_corpus, chunk_document
from .errors import (CorpusDecodeError, EmptyCorpusError, EmptyQueryError, IndexFormatError, IndexVersionError,
                     RetrievalError)
from .fusion import reciprocal_rank_fusion, weighted_fusion
from .index import Hit, Retriever, build_index, format_hits, load_index, search_index

__all__ = [
    "Analyzer", "BM25Index", "Passage", "chunk_corpus", "chunk_document", "DenseIndex", "HiddenStateEncoder",
    "SentenceEncoder", "CorpusDecodeError", "EmptyCorpusError", "EmptyQueryError", "IndexFormatError",
    "IndexVersionError", "RetrievalError", "reciprocal_rank_fusion", "weighted_fusion", "Hit", "Retriever",
    "build_index", "format_hits", "load_index", "search_index",
]


_LAZY = {"DenseIndex": ".dense", "SentenceEncoder": ".encoder", "HiddenStateEncoder": ".encoder"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
