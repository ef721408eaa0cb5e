"""The retrieval index the agent's search tool calls: passages + BM25 (+ optional dense vectors), one search API.

    r = Retriever.from_passages(passages, dense=True)      # or Retriever.load(index_dir)
    r.search("how do I undo a commit", k=5, mode="hybrid", source="git-*")  -> [Hit, ...]

`build_index` / `search_index` are the functions behind `python infer.py index|search`.
torch (for the encoder and dense index) is imported only when dense vectors are used, so BM25-only search
starts fast.
"""

import hashlib
import os
import time
import warnings
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase

import numpy as np
from tqdm import tqdm

from .analyzer import Analyzer, TermIds
from .bm25 import BM25Index
from .chunker import Passage, chunk_corpus
from .documents import list_corpus_files, page_of
from .errors import EmptyCorpusError, EmptyQueryError, IndexFormatError, RetrievalError
from .fusion import reciprocal_rank_fusion, weighted_fusion
from .store import is_index_dir, load_array, load_json, read_manifest, write_index

MODES = ("bm25", "dense", "hybrid")


@dataclass
class Hit:
    rank: int
    score: float
    id: int          # passage index in the index
    text: str
    source: str
    title: str
    section: str
    start: int
    end: int

    def to_dict(self):
        return asdict(self)


class Retriever:
    def __init__(self, passages, analyzer, vocab, bm25, dense=None, encoder_spec=None, encoder=None, meta=None):
        self.passages = list(passages)
        self.analyzer = analyzer
        self.terms = TermIds(analyzer, vocab)
        self.bm25 = bm25
        self.dense = dense
        self.encoder_spec = encoder_spec
        self._encoder = encoder
        self.meta = dict(meta or {})
        self._mask_cache = {}

    # -- building -------------------------------------------------------------------------------------------
    @classmethod
    def from_passages(cls, passages, dense=False, encoder=None, analyzer=None, variant="lucene", k1=0.9, b=0.4,
                      delta=0.5, dense_dtype="float32", embed_cache=None, progress=True, meta=None):
        """Index passages. dense=True embeds them with `encoder` (default: all-MiniLM-L6-v2).

        embed_cache: optional {sha1 of passage index text: vector} reused instead of re-embedding.
        """
        passages = list(passages)
        if not passages:
            raise EmptyCorpusError("no passages to index")
        analyzer = analyzer or Analyzer()
        r = cls([], analyzer, {}, BM25Index(variant, k1, b, delta), meta=meta)
        if dense:
            from .dense import DenseIndex
            from .encoder import SentenceEncoder
            r._encoder = encoder or SentenceEncoder()
            r.encoder_spec = r._encoder.spec()
            r.dense = DenseIndex(r._encoder.dim, dense_dtype)
        r.add_passages(passages, progress=progress, embed_cache=embed_cache)
        return r

    def add_passages(self, passages, progress=True, embed_cache=None):
        """Add passages to the index (BM25 scores are recomputed; only the new passages are embedded)."""
        passages = list(passages)
        if not passages:
            return self
        texts = [p.index_text() for p in passages]
        builder = self.terms.builder()
        with tqdm(total=len(texts), desc="analyzing", unit="passage", disable=not progress) as bar:
            builder.add_texts(texts, progress=bar)
        flat, lengths = builder.arrays()
        if self.dense is not None:  # checked before the BM25 side changes: a refusal leaves the index as it was
            vectors = self.dense.check(self._embed(texts, embed_cache, progress))
        self.bm25.add(flat, lengths, len(builder.vocab))
        del flat, lengths                   # views of the builder's buffers, which for_queries drops
        self.terms = builder.for_queries()
        if self.dense is not None:
            self.dense.add(vectors)
        self.passages.extend(passages)
        self._mask_cache.clear()
        return self

    def _embed(self, texts, cache, progress):
        keys = [_text_key(t) for t in texts]
        cache = cache or {}
        todo = [i for i, key in enumerate(keys) if key not in cache]
        out = np.zeros((len(texts), self.dense.dim), np.float32)
        if todo:
            fresh = self.encoder.encode([texts[i] for i in todo], progress=progress)
            out[todo] = fresh
        for i, key in enumerate(keys):
            if key in cache:
                out[i] = cache[key]
        return out

    @property
    def encoder(self):
        if self._encoder is None:
            if self.encoder_spec is None:
                raise RetrievalError("this index has no dense vectors (built without --dense); "
                                     "rebuild with --dense or search with mode='bm25' (--mode bm25)")
            from .encoder import encoder_from_spec
            self._encoder = encoder_from_spec(self.encoder_spec)
        return self._encoder

    def embedding_cache(self):
        """{sha1 of passage index text: vector} for reuse when the corpus is re-indexed."""
        if self.dense is None:
            return {}
        return {_text_key(p.index_text()): self.dense.vectors[i] for i, p in enumerate(self.passages)}

    # -- searching ------------------------------------------------------------------------------------------
    def filter_mask(self, source=None, section=None):
        """Boolean mask of passages whose source matches the glob(s) `source` and whose section path contains
        `section` (case-insensitive, any run of white space, no-break spaces included, matching one space: HTML
        headings often hold &nbsp;). None when there is no filter."""
        if source is None and section is None:
            return None
        key = (tuple(source) if isinstance(source, (list, tuple)) else source, section)
        mask = self._mask_cache.get(key)
        if mask is None:
            globs = [source] if isinstance(source, str) else list(source or [])
            needle = _loose(section) if section else None
            mask = np.fromiter(
                ((not globs or any(fnmatchcase(p.source, g) for g in globs))
                 and (needle is None or needle in _loose(p.section)) for p in self.passages),
                dtype=bool, count=len(self.passages))
            self._mask_cache[key] = mask
        return mask

    def search(self, query, k=5, mode="bm25", source=None, section=None, fusion="rrf", weight=0.5):
        """Top-k passages for one query as Hits (best first).

        mode: "bm25", "dense" or "hybrid". source: glob(s) over source paths ("git-*.html"); section:
        substring of the section path. Filtered-out passages are never returned. fusion ("rrf" or "weighted")
        and weight (BM25's share in weighted fusion) apply to hybrid mode.
        """
        return self.search_batch([query], k, mode, source, section, fusion, weight)[0]

    def search_batch(self, queries, k=5, mode="bm25", source=None, section=None, fusion="rrf", weight=0.5):
        """search() for a list of queries (BM25 runs as one vectorised batch, queries are embedded together)."""
        if isinstance(queries, str):
            raise TypeError("search_batch() takes a list of queries; use search() for one")
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; expected one of {MODES}")
        if fusion not in ("rrf", "weighted"):
            raise ValueError(f"unknown fusion {fusion!r}; expected 'rrf' or 'weighted'")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise EmptyQueryError(f"query {q!r} is empty: give the words to search for")
        mask = self.filter_mask(source, section)
        depth = k if mode != "hybrid" else max(4 * k, 50)
        sparse = dense = None
        if mode in ("bm25", "hybrid"):
            ids = [self.terms.query_ids(q) for q in queries]
            if mode == "bm25":
                for q, i in zip(queries, ids):
                    if not i and not self.analyzer.tokenize(q):
                        raise EmptyQueryError(f"query {q!r} has no searchable words after analysis")
            sparse = self.bm25.topk_batch(ids, depth, mask)
        if mode in ("dense", "hybrid"):
            if self.dense is None:
                self.encoder    # raises the "built without --dense" error
            vecs = self.encoder.encode(queries)
            di, ds = self.dense.search(vecs, depth, mask)
            dense = list(zip(di, ds))
        out = []
        for j in range(len(queries)):
            if mode == "bm25":
                ids_j, scores_j = sparse[j]
            elif mode == "dense":
                ids_j, scores_j = dense[j]
            elif fusion == "rrf":
                ids_j, scores_j = reciprocal_rank_fusion([sparse[j][0], dense[j][0]])
            else:
                ids_j, scores_j = weighted_fusion([sparse[j], dense[j]], [weight, 1 - weight])
            out.append([self._hit(r, int(i), float(s)) for r, (i, s) in enumerate(zip(ids_j[:k], scores_j[:k]), 1)])
        return out

    def _hit(self, rank, i, score):
        p = self.passages[i]
        return Hit(rank, score, i, p.text, p.source, p.title, p.section, p.start, p.end)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, out_dir):
        """Write the index atomically (see store.py)."""
        vocab = [None] * len(self.terms.vocab)
        for term, i in self.terms.vocab.items():
            vocab[i] = term
        arrays = {"bm25_indptr": self.bm25.indptr, "bm25_doc_ids": self.bm25.doc_ids, "bm25_tf": self.bm25.tf,
                  "bm25_doc_len": self.bm25.doc_len}
        meta = {**self.meta, "n_passages": len(self.passages), "analyzer": self.analyzer.config(),
                "bm25": self.bm25.params(), "dense": None}
        if self.dense is not None:
            arrays["dense_vectors"] = self.dense.vectors
            meta["dense"] = {"encoder": self.encoder_spec, "dim": self.dense.dim, "dtype": self.dense.dtype}
        files = {"passages.jsonl": [p.to_dict() for p in self.passages], "vocab.json": vocab}
        return write_index(out_dir, meta, arrays, files)

    @classmethod
    def load(cls, index_dir):
        """Load an index directory, checking format, version, checksums and array shapes."""
        m = read_manifest(index_dir)
        where = os.path.join(index_dir, "manifest.json")
        try:
            analyzer = Analyzer.from_config(m["analyzer"])
            p = m["bm25"]
            bm25 = BM25Index(p["variant"], p["k1"], p["b"], p["delta"], p["idf"], p["dtype"])
            n = int(m["n_passages"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{where}: bad or missing field ({e})") from None
        rows = load_json(index_dir, m, "passages.jsonl")
        vocab_list = load_json(index_dir, m, "vocab.json")
        try:
            passages = [Passage(**row) for row in rows]
        except TypeError as e:
            raise IndexFormatError(f"{index_dir}/passages.jsonl: bad passage record ({e})") from None
        arr = {name: load_array(index_dir, m, name)
               for name in ("bm25_indptr", "bm25_doc_ids", "bm25_tf", "bm25_doc_len")}
        v = len(vocab_list)
        ok = (len(passages) == n and arr["bm25_doc_len"].shape == (n,) and arr["bm25_indptr"].shape == (v + 1,)
              and arr["bm25_indptr"][-1] == len(arr["bm25_doc_ids"]) == len(arr["bm25_tf"])
              and arr["bm25_indptr"][0] == 0 and bool((np.diff(arr["bm25_indptr"]) >= 0).all())
              and (len(arr["bm25_doc_ids"]) == 0 or 0 <= int(arr["bm25_doc_ids"].min()) <= int(arr["bm25_doc_ids"].max()) < n))
        if not ok:
            raise IndexFormatError(f"{index_dir}: BM25 arrays, passages and vocabulary do not fit together "
                                   f"({len(passages)} passages, manifest says {n}); rebuild the index")
        bm25.indptr, bm25.doc_ids = arr["bm25_indptr"].astype(np.int64), arr["bm25_doc_ids"].astype(np.int32)
        bm25.tf, bm25.doc_len = arr["bm25_tf"].astype(np.int32), arr["bm25_doc_len"].astype(np.int64)
        bm25.n_docs, bm25.n_terms = n, v
        bm25._score()
        dense, spec = None, None
        if m.get("dense"):
            d = m["dense"]
            vectors = load_array(index_dir, m, "dense_vectors")
            if vectors.shape != (n, d.get("dim")):
                raise IndexFormatError(f"{index_dir}/dense_vectors.npy: shape {vectors.shape}, "
                                       f"expected ({n}, {d.get('dim')})")
            from .dense import DenseIndex
            dense = DenseIndex(d["dim"], d["dtype"]).add(vectors)
            spec = d["encoder"]
        meta = {k: m[k] for k in ("chunking", "corpus") if k in m}
        return cls(passages, analyzer, {t: i for i, t in enumerate(vocab_list)}, bm25, dense, spec, meta=meta)


def _loose(text):
    """Lowercase, every run of white space (\\s: no-break spaces too) as one space: how section filters compare."""
    return " ".join(text.lower().split())


def _text_key(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# -- the functions behind `python infer.py index|search` ------------------------------------------------------

CHUNKING_DEFAULTS = {"max_chars": 1200, "overlap": 200}


def build_index(corpus_dir, out_dir, dense=False, append=False, encoder_dir=None, lm_dir=None, max_chars=None,
                overlap=None, variant=None, k1=None, b=None, stopwords=False, stem=True, dense_dtype="float32",
                progress=True, on_bad_file="fail"):
    """Chunk every .txt/.md/.html file under corpus_dir and write a search index to out_dir (atomically).

    dense: also embed passages — with all-MiniLM-L6-v2, or the BERT sentence encoder in encoder_dir, or (lm_dir)
    the mean-pooled hidden states of a causal LM checkpoint.
    max_chars / overlap: passage length and overlap in characters (None: 1200 / 200).
    variant / k1 / b: the BM25 variant and parameters (None: "lucene", 0.9, 0.4).
    on_bad_file: "fail" (a non-UTF-8 file stops the build, named) or "skip" (it is reported and left out).
    append: add the files of corpus_dir that out_dir does not hold yet to the existing index. Its own settings
    win: new files are chunked as its files were (a max_chars or overlap given that differs is an error), and
    its BM25 variant, parameters and encoder are kept. Appended passages come after the old ones, so among
    passages of equal score the order can differ from a fresh build's (ties go to the lower passage number).
    A page is indexed once, as in a fresh build (documents.FORMAT_PREFERENCE): a file of a page the index holds
    in another format (a.html when it holds a.md) is not appended; the summary's "same_page_files" names those
    a fresh build would index instead, and the index's own file (a.md) is compared with its current text.
    Re-running on an existing dense index reuses the stored embeddings of unchanged passages.
    Returns a summary dict (passages, files, terms, dense, seconds).
    """
    t0 = time.perf_counter()
    if (encoder_dir or lm_dir) and not dense:
        raise RetrievalError("--encoder and --lm choose the dense encoder: they need --dense")
    chunking = dict(CHUNKING_DEFAULTS)
    old = None
    if append:
        if not is_index_dir(out_dir):
            raise IndexFormatError(f"--append: {out_dir!r} is not an existing index")
        old = Retriever.load(out_dir)
        recorded = old.meta.get("chunking")
        if recorded is None:  # (saved through the API without it: take what is given, else the defaults)
            chunking.update({k: v for k, v in (("max_chars", max_chars), ("overlap", overlap)) if v is not None})
            if max_chars is None or overlap is None:
                warnings.warn(f"--append: {out_dir!r} does not record how it was chunked; new files are chunked "
                              f"with max-chars {chunking['max_chars']}, overlap {chunking['overlap']}")
        chunking.update(recorded or {})
        for name, given in (("max_chars", max_chars), ("overlap", overlap)):
            if given is not None and given != chunking[name]:
                raise RetrievalError(f"--append: the index was chunked with {name.replace('_', '-')} "
                                     f"{chunking[name]}; new files must be chunked the same way (got {given})")
        for name, given, held in (("variant", variant, old.bm25.variant), ("k1", k1, old.bm25.k1),
                                  ("b", b, old.bm25.b)):
            if given is not None and given != held:
                raise RetrievalError(f"--append: the index scores with {name} {held!r}; appending keeps it "
                                     f"(got {given!r}; rebuild without --append to change it)")
    else:
        chunking.update({k: v for k, v in (("max_chars", max_chars), ("overlap", overlap)) if v is not None})
    known = {p.source for p in old.passages} if append else set()
    passages, n_files = chunk_corpus(corpus_dir, chunking["max_chars"], chunking["overlap"], progress=progress,
                                     on_bad_file=on_bad_file, prefer=known)
    if append:
        held_as = {page_of(src): src for src in known}     # page -> the file the index holds it as
        new = [p for p in passages if page_of(p.source) not in held_as]
        same_page = sorted(f"{src} (the index holds this page as {held_as[page_of(src)]})"
                           for _, src in list_corpus_files(corpus_dir)
                           if src not in known and page_of(src) in held_as)
        # files the index holds whose text changed (or that are gone): append keeps their old passages, so say so
        texts_then, texts_now = {}, {}
        for group, ps in ((texts_then, old.passages), (texts_now, passages)):
            for p in ps:
                group.setdefault(p.source, []).append(p.text)
        stale = sorted(src for src in known if texts_now.get(src) != texts_then[src])
        if dense and old.dense is None:
            raise RetrievalError(f"--append --dense: {out_dir!r} was built without dense vectors; rebuild it")
        old.add_passages(new, progress=progress)
        old.save(out_dir)
        r, added = old, len(new)
        extra = {"stale_files": stale[:20] + ([f"... {len(stale) - 20} more"] if len(stale) > 20 else []),
                 "note": "files changed or removed since indexing keep their old passages; rebuild without "
                         "--append to refresh them"} if stale else {}
        if same_page:
            extra.update(same_page_files=same_page[:20] + ([f"... {len(same_page) - 20} more"]
                                                           if len(same_page) > 20 else []),
                         same_page_note="a page is indexed once: these files were not appended; rebuild without "
                                        "--append to index each page in its preferred format")
    else:
        encoder = None
        if dense:
            from .encoder import SentenceEncoder, lm_encoder
            encoder = lm_encoder(lm_dir) if lm_dir else SentenceEncoder(encoder_dir)
        cache = None
        if dense and is_index_dir(out_dir):
            try:                                  # reuse embeddings of unchanged passages
                old = Retriever.load(out_dir)
                # same encoder, and no fp16-rounded vectors where fp32 ones are asked for
                if old.encoder_spec == encoder.spec() and (old.dense is None or dense_dtype == "float16"
                                                           or old.dense.vectors.dtype == np.float32):
                    cache = old.embedding_cache()
            except IndexFormatError:
                pass                              # a corrupt old index is simply rebuilt
        meta = {"chunking": chunking, "corpus": os.path.abspath(corpus_dir)}
        r = Retriever.from_passages(passages, dense=dense, encoder=encoder,
                                    analyzer=Analyzer(stopwords=stopwords, stem=stem),
                                    variant="lucene" if variant is None else variant, k1=0.9 if k1 is None else k1,
                                    b=0.4 if b is None else b, dense_dtype=dense_dtype, embed_cache=cache,
                                    progress=progress, meta=meta)
        r.save(out_dir)
        added, extra = len(passages), {}
    return {"passages": len(r.passages), "added": added, "files": n_files, "terms": len(r.terms.vocab),
            "dense": r.dense is not None, "seconds": round(time.perf_counter() - t0, 2), "index": out_dir, **extra}


_LOADED = {}


def load_index(index_dir):
    """A Retriever for index_dir, cached per process (reloaded when the index is rebuilt)."""
    path = os.path.abspath(index_dir)
    manifest = os.path.join(path, "manifest.json")
    stamp = os.stat(manifest).st_mtime_ns if os.path.isfile(manifest) else None
    hit = _LOADED.get(path)
    if hit is None or hit[0] != stamp or stamp is None:
        hit = (stamp, Retriever.load(path))
        _LOADED[path] = hit
    return hit[1]


def search_index(index_dir, query, k=5, mode="bm25", source=None, section=None):
    """Search an index directory: a list of dicts with rank, score, id, text, source, title, section, start,
    end (best first)."""
    return [h.to_dict() for h in load_index(index_dir).search(query, k, mode, source, section)]


def format_hits(hits):
    """Human-readable rendering of search_index() results for the CLI."""
    lines = []
    for h in hits:
        lines.append(f"[{h['rank']}] {h['score']:.4f}  {h['source']}  ({h['section'] or h['title']})")
        lines.append("    " + h["text"].replace("\n", "\n    "))
    return "\n".join(lines)
