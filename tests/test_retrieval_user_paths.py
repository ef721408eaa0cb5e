"""Retrieval as a user drives it: index --append, search --json, dense ties and empty batches, Markdown headings
(CommonMark as the oracle), section filters over HTML headings with no-break spaces."""
import json

import numpy as np
import pytest

import infer
from minagent.retrieval import Retriever, build_index
from minagent.retrieval.dense import DenseIndex
from minagent.retrieval.documents import find_text_headings


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


LONG = "\n\n".join(f"Paragraph {i} talks about stash number {i} and what it keeps for later use." for i in range(40))


def test_append_uses_the_index_chunking_settings(tmp_path):
    """index --append: 'its settings win' -- new files must be chunked as the index was, not with the CLI
    defaults, and unchanged files must not be reported stale."""
    corpus = tmp_path / "c"
    _write(corpus / "a.md", "# A\n\n" + LONG)
    build_index(str(corpus), str(tmp_path / "idx"), max_chars=300, overlap=50, progress=False)
    _write(corpus / "b.md", "# B\n\n" + LONG.replace("stash", "branch"))
    summary = build_index(str(corpus), str(tmp_path / "idx"), append=True, progress=False)  # defaults 1200/200
    build_index(str(corpus), str(tmp_path / "fresh"), max_chars=300, overlap=50, progress=False)
    assert "stale_files" not in summary, summary            # a.md did not change
    appended = Retriever.load(str(tmp_path / "idx")).passages
    fresh = Retriever.load(str(tmp_path / "fresh")).passages
    assert sorted((p.source, p.start, p.end) for p in appended) == sorted((p.source, p.start, p.end) for p in fresh)


def test_search_json_with_no_hits_writes_no_blank_line(tmp_path, capsys):
    """`search --json` output must be JSON Lines: with no hits, stdout is empty (not a blank line)."""
    corpus = tmp_path / "c"
    _write(corpus / "a.md", "# A\n\nalpha text about merge\n")
    build_index(str(corpus), str(tmp_path / "idx"), progress=False)
    infer.main(["search", "--index", str(tmp_path / "idx"), "--query", "xyzzy", "--json"])
    out = capsys.readouterr().out
    for line in out.splitlines():
        json.loads(line)           # a blank line is not a JSON value


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_dense_search_with_empty_batch(dtype):
    """search_batch([]) works in bm25 mode; the dense side divides by the batch size."""
    d = DenseIndex(8, dtype).add(np.eye(8, dtype=np.float32))
    idx, scores = d.search(np.zeros((0, 8), np.float32), 3)
    assert idx.shape[0] == 0 and scores.shape[0] == 0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_dense_ties_resolved_by_lower_index_single_and_batch(dtype):
    """Equal scores: the lower passage index must win, the same way for one query and for a batch
    (BM25 and fusion break ties by lower id; fp16 single does, fp32 and fp16 batched do not)."""
    v = np.zeros((2000, 8), np.float32)
    v[:, 0] = 1
    d = DenseIndex(8, dtype).add(v)
    q = np.eye(8, dtype=np.float32)[0]
    assert list(d.search(q, 3)[0]) == [0, 1, 2]
    assert list(d.search(np.stack([q, q]), 3)[0][0]) == [0, 1, 2]


def test_markdown_setext_heading_any_underline_length():
    """CommonMark: a setext underline may have any length."""
    assert find_text_headings("A fairly long heading title\n===\n\nbody\n", markdown=True) == [
        (1, "A fairly long heading title", 0)]


def test_markdown_atx_closing_hash_needs_a_space():
    """CommonMark: '# C#' is the heading 'C#' (a closing sequence must follow a space)."""
    assert find_text_headings("# C#\n\ntext\n", markdown=True) == [(1, "C#", 0)]


def test_markdown_longer_fence_is_not_closed_by_shorter_one():
    """A ```` fence is only closed by ```` (or longer); '# inner' is code, not a heading."""
    text = "# Top\n\n````md\n```\n# inner\n```\n````\n\nafter\n"
    assert find_text_headings(text, markdown=True) == [(1, "Top", 0)]


def test_section_filter_matches_nbsp_headings_typed_with_spaces(tmp_path):
    """DocBook HTML (git's user-manual.html) writes 'Chapter&nbsp;1.': the section path prints as
    'Chapter 1. ...' but --section 'Chapter 1.' matched nothing."""
    corpus = tmp_path / "c"
    _write(corpus / "m.html", "<html><head><title>M</title></head><body><h2>Chapter&nbsp;1.&nbsp;Branches</h2>"
                              "<p>how to create a branch</p></body></html>")
    build_index(str(corpus), str(tmp_path / "idx"), progress=False)
    r = Retriever.load(str(tmp_path / "idx"))
    assert r.search("branch", 3, section="Chapter 1. Branches")


def test_append_refuses_other_chunking_and_encoder_flags_need_dense(tmp_path):
    corpus = tmp_path / "c"
    _write(corpus / "a.md", "# A\n\n" + LONG)
    build_index(str(corpus), str(tmp_path / "idx"), max_chars=300, overlap=50, progress=False)
    with pytest.raises(Exception, match="chunked with max-chars 300"):
        build_index(str(corpus), str(tmp_path / "idx"), append=True, max_chars=500, progress=False)
    build_index(str(corpus), str(tmp_path / "idx"), append=True, max_chars=300, progress=False)  # the same: fine
    with pytest.raises(Exception, match="scores with variant 'lucene'"):
        build_index(str(corpus), str(tmp_path / "idx"), append=True, variant="robertson", progress=False)
    with pytest.raises(Exception, match="scores with k1 0.9"):
        build_index(str(corpus), str(tmp_path / "idx"), append=True, k1=2.0, progress=False)
    with pytest.raises(Exception, match="need --dense"):
        build_index(str(corpus), str(tmp_path / "other"), encoder_dir="somewhere", progress=False)


@pytest.mark.parametrize("text", ["Steps\n\n1. Install the package first\n---\n\nMore text\n",
                                  "Intro\n\n> A quoted remark from the docs\n---\n\nNext\n",
                                  "Intro\n\n<!-- a comment that is long -->\n---\n"])
def test_thematic_break_after_a_list_item_or_quote_is_not_a_setext_heading(text):
    """CommonMark (markdown-it-py): no heading in any of these ('---' is a thematic break after a list item, a
    block quote or an HTML block), though setext underlines may have any length."""
    assert find_text_headings(text, markdown=True) == []


def test_append_to_an_index_without_chunking_meta_accepts_the_settings_it_was_built_with(tmp_path):
    """An index saved by the library API (Retriever.from_passages(...).save) records no "chunking": append takes
    the settings given (and warns when there are none) instead of assuming 1200/200."""
    import shutil
    from pathlib import Path
    from minagent.retrieval.chunker import chunk_corpus
    from minagent.retrieval.index import Retriever, build_index
    corpus = tmp_path / "c"
    shutil.copytree(Path(__file__).parent / "data" / "manuals", corpus)
    ps, _ = chunk_corpus(str(corpus), 500, 50, progress=False)
    Retriever.from_passages(ps, progress=False).save(str(tmp_path / "ix"))
    (corpus / "extra.txt").write_text("A new file about git reflog.\n" * 40)
    build_index(str(corpus), str(tmp_path / "ix"), append=True, max_chars=500, overlap=50, progress=False)
