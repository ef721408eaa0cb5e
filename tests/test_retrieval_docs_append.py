"""index --append over a corpus whose pages change format: one page, one copy in the index (hand-checked)."""

from minagent.retrieval import Retriever, build_index, search_index

PAGE_MD = "# Alpha\n\nThe zebra option turns on striped logging.\n"
PAGE_HTML = "<h1>Alpha</h1><p>The zebra option turns on striped logging.</p>"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _sources(index_dir):
    return sorted({p.source for p in Retriever.load(index_dir).passages})


def test_append_never_indexes_a_page_twice_when_it_gains_another_format(tmp_path):
    corpus, out = tmp_path / "c", str(tmp_path / "idx")
    _write(corpus / "a.md", PAGE_MD)
    _write(corpus / "b.md", "# Beta\n\nThe yak command shears the log.\n")
    build_index(str(corpus), out, progress=False)

    _write(corpus / "a.html", PAGE_HTML)           # the same page, now also rendered
    _write(corpus / "c.md", "# Gamma\n\nThe xerus flag is new.\n")
    summary = build_index(str(corpus), out, append=True, progress=False)
    assert summary["added"] == 1 and _sources(out) == ["a.md", "b.md", "c.md"]
    assert len(search_index(out, "zebra", k=5)) == 1                          # the page's text is there once
    assert summary["same_page_files"] == ["a.html (the index holds this page as a.md)"]
    assert "rebuild without --append" in summary["same_page_note"]
    assert "stale_files" not in summary, summary   # a.md is unchanged: it is not "changed or removed"

    (corpus / "a.md").unlink()                     # converted: only the .html is left
    summary = build_index(str(corpus), out, append=True, progress=False)
    assert summary["added"] == 0 and _sources(out) == ["a.md", "b.md", "c.md"]
    assert summary["stale_files"] == ["a.md"]
    assert summary["same_page_files"] == ["a.html (the index holds this page as a.md)"]

    fresh = str(tmp_path / "fresh")                # a fresh build takes the preferred format, once
    build_index(str(corpus), fresh, progress=False)
    assert _sources(fresh) == ["a.html", "b.md", "c.md"] and len(search_index(fresh, "zebra", k=5)) == 1


def test_append_does_not_report_a_format_a_fresh_build_would_leave_out_too(tmp_path):
    corpus, out = tmp_path / "c", str(tmp_path / "idx")
    _write(corpus / "a.html", PAGE_HTML)
    build_index(str(corpus), out, progress=False)
    _write(corpus / "a.md", PAGE_MD)               # .html is preferred: a.md is left out by any build
    summary = build_index(str(corpus), out, append=True, progress=False)
    assert summary["added"] == 0 and _sources(out) == ["a.html"]
    assert "same_page_files" not in summary and "stale_files" not in summary
