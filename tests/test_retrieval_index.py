"""The index the agent's tool calls: build/search/save/load, filtering, appending, fusion and every bad input."""

import json
import os
import zlib

import numpy as np
import pytest

from minagent.retrieval import (CorpusDecodeError, chunk_corpus, EmptyCorpusError, EmptyQueryError, IndexFormatError,
                                IndexVersionError, RetrievalError, build_index, reciprocal_rank_fusion,
                                search_index, weighted_fusion)
from minagent.retrieval.index import Retriever, load_index

DOCS = {
    "server/errors.md": "# Server errors\n\n## KAVS1234-E\n\nThe KAVS1234-E message means the max_connections limit "
                        "was reached. Raise max_connections in server.conf and restart the daemon.\n\n"
                        "## KAVS2001-W\n\nDisk usage is above 90 percent; delete old log files.\n",
    "server/install.txt": "Installing\n==========\n\nRun the installer as root. The default prefix is /opt/kavs.\n\n"
                          "Upgrading\n---------\n\nStop the daemon before you upgrade the package.\n",
    "client/usage.html": "<html><head><title>Client usage</title></head><body><h1>Client</h1><p>The client connects "
                         "to the server on port 7070.</p><h2>Backups</h2><p>Use the backup command to copy "
                         "the database to tape every night.</p></body></html>",
    "client/faq.md": "# FAQ\n\n## Why is the client slow?\n\nCheck the network latency and the cache size.\n",
}


def make_corpus(root, docs=DOCS):
    for rel, text in docs.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return str(root)


@pytest.fixture()
def corpus(tmp_path):
    return make_corpus(tmp_path / "corpus")


def test_build_and_search_bm25(corpus, tmp_path):
    out = str(tmp_path / "idx")
    summary = build_index(corpus, out, progress=False)
    assert summary["files"] == 4 and summary["passages"] == 7 and not summary["dense"]
    hits = search_index(out, "KAVS1234-E", k=3)
    assert hits[0]["source"] == "server/errors.md" and hits[0]["section"] == "Server errors > KAVS1234-E"
    assert set(hits[0]) >= {"text", "source", "title", "section", "score", "start", "end", "rank"}
    assert "max_connections limit" in hits[0]["text"]
    assert len(hits) == 1                       # only passages containing a query term come back
    # identifiers are found by their parts, and the stemmer matches plural/singular
    assert search_index(out, "connections", k=2)[0]["source"] == "server/errors.md"
    assert search_index(out, "backups tape", k=1)[0]["source"] == "client/usage.html"
    assert search_index(out, "zebra quokka xylophone", k=5) == []
    # offsets point into the document text (for .md/.txt: the file itself)
    h = search_index(out, "installer prefix", k=1)[0]
    with open(os.path.join(corpus, h["source"]), encoding="utf-8") as f:
        assert f.read()[h["start"]:h["end"]] == h["text"]


def test_filter_by_source_and_section(corpus, tmp_path):
    r = Retriever.from_passages(chunk_corpus(corpus, progress=False)[0], progress=False)
    everywhere = r.search("the server daemon", k=10)
    assert {h.source for h in everywhere} > {"server/errors.md"}
    only = r.search("the server daemon", k=10, source="client/*")
    assert only and all(h.source.startswith("client/") for h in only)
    assert all("kavs2001" in h.section.lower() for h in r.search("the", k=10, section="KAVS2001"))
    assert r.search("the", k=10, source="nothing/*") == []
    assert r.search("the", k=10, source=["client/faq.md", "server/install.txt"])[0].source in \
        ("client/faq.md", "server/install.txt")


def test_dense_and_hybrid_search(corpus, tmp_path):
    pytest.importorskip("safetensors")
    from minagent.retrieval.encoder import default_encoder_dir
    try:
        default_encoder_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = str(tmp_path / "idx")
    build_index(corpus, out, dense=True, progress=False)
    dense = search_index(out, "copy my data to tape each night", k=2, mode="dense")
    assert dense[0]["source"] == "client/usage.html" and -1 <= dense[0]["score"] <= 1
    hybrid = search_index(out, "message about too many connections", k=3, mode="hybrid")
    assert hybrid[0]["source"] == "server/errors.md"
    r = load_index(out)
    # hybrid = RRF of the two rankings (checked against the formula by hand)
    b = r.search("server daemon restart", k=50, mode="bm25")
    d = r.search("server daemon restart", k=50, mode="dense")
    fused = {}
    for hits in (b, d):
        for h in hits:
            fused[h.id] = fused.get(h.id, 0) + 1 / (60 + h.rank)
    h = r.search("server daemon restart", k=3, mode="hybrid")
    assert [x.id for x in h] == sorted(fused, key=lambda i: (-fused[i], i))[:3]
    assert h[0].score == pytest.approx(fused[h[0].id])
    # filters apply to both halves
    assert all(x.source.startswith("client/") for x in r.search("server", k=5, mode="hybrid", source="client/*"))
    # re-building reuses cached embeddings of unchanged passages (the encoder only sees the new passage)
    make_corpus(os.path.join(corpus), {"client/new.md": "# New\n\nA brand new page about printers.\n"})
    calls = []
    from minagent.retrieval import encoder as enc_mod
    original = enc_mod.SentenceEncoder.encode

    def spy(self, texts, **kw):
        calls.append(len(texts))
        return original(self, texts, **kw)

    enc_mod.SentenceEncoder.encode = spy
    try:
        build_index(corpus, out, dense=True, progress=False)
    finally:
        enc_mod.SentenceEncoder.encode = original
    assert calls == [1]
    assert search_index(out, "printers", k=1, mode="dense")[0]["source"] == "client/new.md"
    # fp16-rounded vectors are not reused for an fp32 index (reused the other way round, they are exact)
    build_index(corpus, out, dense=True, progress=False, dense_dtype="float16")
    calls.clear()
    enc_mod.SentenceEncoder.encode = spy
    try:
        build_index(corpus, out, dense=True, progress=False)
    finally:
        enc_mod.SentenceEncoder.encode = original
    assert calls and sum(calls) == len(load_index(out).passages)
    fresh = str(tmp_path / "fresh")
    build_index(corpus, fresh, dense=True, progress=False)
    assert np.array_equal(load_index(out).dense.vectors, load_index(fresh).dense.vectors)


def test_bm25_only_index_refuses_dense_mode(corpus, tmp_path):
    out = str(tmp_path / "idx")
    build_index(corpus, out, progress=False)
    with pytest.raises(RetrievalError, match="without --dense"):
        search_index(out, "server", mode="dense")
    with pytest.raises(ValueError, match="unknown search mode"):
        search_index(out, "server", mode="sparse")


def test_empty_queries(corpus, tmp_path):
    out = str(tmp_path / "idx")
    build_index(corpus, out, progress=False)
    for q in ("", "   \n"):
        with pytest.raises(EmptyQueryError, match="empty"):
            search_index(out, q)
    with pytest.raises(EmptyQueryError, match="no searchable words"):
        search_index(out, "?! ...")
    with pytest.raises(ValueError, match="k must be"):
        search_index(out, "server", k=0)


def test_bad_corpora_leave_nothing_behind(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "idx"
    with pytest.raises(EmptyCorpusError):
        build_index(str(empty), str(out), progress=False)
    bad = make_corpus(tmp_path / "bad", {"a.md": "# ok\n\ntext\n"})
    with open(os.path.join(bad, "latin1.txt"), "wb") as f:
        f.write("d\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(CorpusDecodeError, match="latin1.txt"):
        build_index(bad, str(out), progress=False)
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".idx")] == []      # no temp dirs left
    said = []  # --on-bad-file skip: reported by name, the rest indexed
    passages, files = chunk_corpus(bad, progress=False, on_bad_file="skip", log=said.append)
    assert files == 1 and {p.source for p in passages} == {"a.md"} and "latin1.txt" in said[0]
    summary = build_index(bad, str(out), progress=False, on_bad_file="skip")
    assert summary["files"] == 1 and search_index(str(out), "text")[0]["source"] == "a.md"


def test_failed_rebuild_keeps_the_old_index(corpus, tmp_path):
    out = str(tmp_path / "idx")
    build_index(corpus, out, progress=False)
    before = sorted(os.listdir(out))
    with open(os.path.join(corpus, "broken.txt"), "wb") as f:
        f.write(b"\xff\xfe broken")
    with pytest.raises(CorpusDecodeError):
        build_index(corpus, out, progress=False)
    assert sorted(os.listdir(out)) == before
    assert search_index(out, "KAVS1234-E")[0]["source"] == "server/errors.md"


_KILLED_REBUILD = r"""
import os, shutil, sys
from minagent.retrieval import build_index, store
corpus, out, exchange = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if not exchange:
    store._exchange = lambda a, b: False
real_rename, real_rmtree = os.rename, shutil.rmtree
def rename(a, b):  # the rebuild's second rename, the new index into place: the process is killed before it
    if os.path.basename(str(a)).startswith(".idx.tmp-"):
        os._exit(9)
    real_rename(a, b)
def rmtree(path, *args, **kwargs):  # the old index's removal after the exchange: killed before it
    if os.path.basename(str(path)).startswith(".idx.tmp-"):
        os._exit(9)
    real_rmtree(path, *args, **kwargs)
os.rename, shutil.rmtree = rename, rmtree
build_index(corpus, out, progress=False)
"""


@pytest.mark.parametrize("exchange", [True, False])
def test_a_rebuild_killed_while_swapping_leaves_an_index_or_says_where_it_is(corpus, tmp_path, exchange):
    """The process is killed at the worst moment of replacing an index (os._exit inside the swap). With the
    one-step exchange the path holds the new, complete index; with two renames, the path is empty for an
    instant, and opening it names the directory the old index was set aside in (it used to say only "does not
    exist, build one")."""
    import subprocess
    import sys
    from minagent.retrieval.store import _exchange
    out = str(tmp_path / "idx")
    build_index(corpus, out, progress=False)
    if exchange and not _exchange(out, out):  # (exchanging a path with itself is a no-op that tests support)
        pytest.skip("this system cannot exchange two paths in one step")
    with open(os.path.join(corpus, "server", "new.md"), "w") as f:
        f.write("# New\n\nThe frobnicator KAVS9999-W needs a restart.\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", _KILLED_REBUILD, corpus, out, "1" if exchange else "0"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 9, run.stderr[-2000:]
    if exchange:
        assert search_index(out, "frobnicator")[0]["source"] == "server/new.md"
    else:
        with pytest.raises(FileNotFoundError, match=r"\.idx\.old-.*rename it back"):
            search_index(out, "frobnicator")


def test_refuses_to_overwrite_a_directory_that_is_not_an_index(corpus, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(IndexFormatError, match="refusing to overwrite"):
        build_index(corpus, str(out), progress=False)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_corrupt_and_version_mismatched_index(corpus, tmp_path):
    out = tmp_path / "idx"
    build_index(corpus, str(out), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())

    # one flipped byte in an array -> checksum error naming the file
    data = bytearray((out / "bm25_tf.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "bm25_tf.npy").write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="bm25_tf.npy.*checksum"):
        Retriever.load(str(out))
    # a truncated file -> size error
    (out / "passages.jsonl").write_bytes((out / "passages.jsonl").read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match="passages.jsonl.*bytes"):
        Retriever.load(str(out))
    # another format version
    build_index(corpus, str(out), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(IndexVersionError, match="version 99.*rebuild"):
        Retriever.load(str(out))
    # a manifest entry that is not an object
    (out / "manifest.json").write_text(json.dumps({**manifest, "files": {**manifest["files"], "vocab.json": 5}}))
    with pytest.raises(IndexFormatError, match="manifest.json: entry for vocab.json is 5, expected an object"):
        Retriever.load(str(out))
    # arrays with valid checksums that do not fit together (written by hand: a negative passage id, posting
    # ranges that go backwards)
    for name, edit in (("bm25_doc_ids", lambda a: a.__setitem__(0, -1)),
                       ("bm25_indptr", lambda a: a.__setitem__(1, a[2] + 1))):
        build_index(corpus, str(out), progress=False)
        manifest = json.loads((out / "manifest.json").read_text())
        arr = np.load(out / f"{name}.npy")
        edit(arr)
        np.save(out / f"{name}.npy", arr)
        data = (out / f"{name}.npy").read_bytes()
        manifest["files"][f"{name}.npy"] = {"bytes": len(data), "crc32": zlib.crc32(data)}
        (out / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(IndexFormatError, match="do not fit together"):
            Retriever.load(str(out))
    # unreadable manifest, missing manifest, missing directory
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupt manifest"):
        Retriever.load(str(out))
    (out / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="not a minagent retrieval index"):
        Retriever.load(str(out))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Retriever.load(str(tmp_path / "nope"))


def test_append_adds_new_files_only(corpus, tmp_path):
    out = str(tmp_path / "idx")
    build_index(corpus, out, progress=False)
    more = make_corpus(tmp_path / "more", {**DOCS, "extra/tuning.md": "# Tuning\n\nIncrease shared_buffers.\n"})
    summary = build_index(more, out, append=True, progress=False)
    assert summary["added"] == 1 and summary["passages"] == 8
    assert search_index(out, "shared_buffers")[0]["source"] == "extra/tuning.md"
    # appended index ranks exactly like one built from scratch over the same passages
    fresh = str(tmp_path / "fresh")
    build_index(more, fresh, progress=False)
    for q in ("server daemon", "the", "client cache"):
        a = [(h["source"], h["start"], round(h["score"], 5)) for h in search_index(out, q, k=8)]
        b = [(h["source"], h["start"], round(h["score"], 5)) for h in search_index(fresh, q, k=8)]
        assert sorted(a) == sorted(b)
    with pytest.raises(IndexFormatError, match="not an existing index"):
        build_index(more, str(tmp_path / "none"), append=True, progress=False)
    assert "stale_files" not in summary  # nothing the index held had changed
    # an edited file keeps its old passages under --append: the summary names it
    edited = make_corpus(tmp_path / "edited", {**DOCS, "client/faq.md": "# FAQ\n\nNew text.\n"})
    summary = build_index(edited, out, append=True, progress=False)
    assert summary["added"] == 0 and summary["stale_files"] == ["client/faq.md", "extra/tuning.md"]  # + removed
    assert "rebuild without --append" in summary["note"]


def test_save_load_roundtrip_keeps_results(corpus, tmp_path):
    r = Retriever.from_passages(chunk_corpus(corpus, progress=False)[0], variant="bm25+", k1=1.2, b=0.7,
                                progress=False)
    r.save(str(tmp_path / "idx"))
    loaded = Retriever.load(str(tmp_path / "idx"))
    assert loaded.bm25.params() == r.bm25.params()
    for q in ("server", "backup tape", "KAVS2001-W disk"):
        assert [h.to_dict() for h in loaded.search(q, k=5)] == [h.to_dict() for h in r.search(q, k=5)]


def test_queries_read_the_surface_forms_seen_while_indexing(corpus, tmp_path, monkeypatch):
    # a built (and an appended-to) index answers queries of words its passages hold from the build's cache of
    # surface forms, without analysing them again; a loaded index analyses them (no cache): same results
    r = Retriever.from_passages(chunk_corpus(corpus, progress=False)[0], progress=False)
    r.save(str(tmp_path / "idx"))
    loaded = Retriever.load(str(tmp_path / "idx"))
    more = make_corpus(tmp_path / "more", {"extra/notes.md": "# Notes\n\nRotate the logs weekly.\n"})
    for index in (r, loaded):
        index.add_passages(chunk_corpus(more, progress=False)[0], progress=False)
    want = {q: [h.to_dict() for h in loaded.search(q, k=3)] for q in ("the daemon", "KAVS1234-E max_connections")}

    def no_analysis(token):
        raise AssertionError(f"analysed {token!r} again")

    monkeypatch.setattr(r.analyzer, "term", no_analysis)
    for q, hits in want.items():
        assert [h.to_dict() for h in r.search(q, k=3)] == hits
    assert r.search("weekly logs", k=1)[0].source.endswith("notes.md")


def test_fusion_functions_by_hand():
    ids, scores = reciprocal_rank_fusion([[3, 1, 2], [1, 4]])
    # 1: 1/62 + 1/61, 3: 1/61, 4: 1/62, 2: 1/63
    assert ids.tolist() == [1, 3, 4, 2]
    assert scores[0] == pytest.approx(1 / 62 + 1 / 61)
    ids, scores = weighted_fusion([([5, 6, 7], [10.0, 5.0, 0.0]), ([7, 8], [0.9, 0.1])], [0.5, 0.5])
    # min-max normalised: list 1 gives 5->1, 6->.5, 7->0; list 2 gives 7->1, 8->0; each weighted by .5
    assert ids.tolist() == [5, 7, 6, 8]                  # 5 and 7 tie at .5: lower id first
    assert scores.tolist() == pytest.approx([0.5, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], k=0)
    assert len(reciprocal_rank_fusion([])[0]) == 0
    assert np.isfinite(weighted_fusion([([1], [3.0])], [1.0])[1]).all()


class _HashEncoder:
    """A stand-in encoder (the unit under test is the index's bookkeeping, not the embeddings): a passage's vector
    is a fixed function of its text; `poison` makes the next encode return a NaN row, as a broken model would."""
    dim = 8
    poison = False

    def spec(self):
        return {"kind": "test-hash"}

    def encode(self, texts, progress=False):
        out = np.stack([np.random.default_rng(len(t)).standard_normal(self.dim) for t in texts]).astype(np.float32)
        if self.poison:
            out[-1, 0] = np.nan
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_refused_vectors_leave_the_index_as_it_was(corpus):
    passages, _ = chunk_corpus(corpus, progress=False)
    encoder = _HashEncoder()
    r = Retriever.from_passages(passages[:-1], dense=True, encoder=encoder, progress=False)
    before = [(h.id, h.score) for h in r.search("server daemon", k=10, mode="hybrid")]
    encoder.poison = True
    with pytest.raises(ValueError, match="NaN or inf"):
        r.add_passages(passages[-1:], progress=False)
    encoder.poison = False
    assert r.bm25.n_docs == len(r.dense) == len(r.passages) == len(passages) - 1
    assert [(h.id, h.score) for h in r.search("server daemon", k=10, mode="hybrid")] == before
    r.add_passages(passages[-1:], progress=False)  # and a good batch still goes in
    assert r.bm25.n_docs == len(r.dense) == len(r.passages) == len(passages)
