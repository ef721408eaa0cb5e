"""Chunking manuals into passages: headings, length limits, offsets, formats, bad files (hand-checked examples)."""

import os

import pytest

from minagent.retrieval.chunker import Passage, chunk_corpus, chunk_document
from minagent.retrieval.documents import Document, find_text_headings, list_corpus_files, read_document
from minagent.retrieval.errors import CorpusDecodeError, EmptyCorpusError
from minagent.retrieval.html_text import html_to_text


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)


def test_markdown_headings_give_section_paths_and_offsets(tmp_path):
    md = ("# Server Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### Options\n\n"
          "Use --prefix.\n\n```\n# not a heading inside code\n```\n\n## Errors\n\nKAVS1234-E means disk full.\n")
    write(tmp_path / "guide.md", md)
    doc = read_document(str(tmp_path / "guide.md"), "guide.md")
    assert doc.title == "Server Guide"
    assert [h[:2] for h in doc.headings] == [(1, "Server Guide"), (2, "Install"), (3, "Options"), (2, "Errors")]
    ps = chunk_document(doc, max_chars=500, overlap=50)
    assert [p.section for p in ps] == ["Server Guide", "Server Guide > Install", "Server Guide > Install > Options",
                                       "Server Guide > Errors"]
    for p in ps:                              # offsets point at the passage inside the file text
        assert md[p.start:p.end] == p.text
    assert "# not a heading inside code" in ps[2].text
    assert ps[3].text == "## Errors\n\nKAVS1234-E means disk full."


def test_asciidoc_underlined_titles_as_in_git_doc_sources(tmp_path):
    txt = "git-frob(1)\n===========\n\nNAME\n----\ngit-frob - Frob the tree\n\nOPTIONS\n-------\n--all::\n\tFrob all.\n"
    heads = find_text_headings(txt, markdown=False)
    assert [(lvl, t) for lvl, t, _ in heads] == [(1, "git-frob(1)"), (2, "NAME"), (2, "OPTIONS")]
    write(tmp_path / "git-frob.txt", txt)
    doc = read_document(str(tmp_path / "git-frob.txt"), "git-frob.txt")
    ps = chunk_document(doc)
    assert doc.title == "git-frob(1)"
    assert [p.section for p in ps] == ["git-frob(1) > NAME", "git-frob(1) > OPTIONS"]


def test_html_text_headings_tables_pre_and_entities():
    html = ("<html><head><title>Guide &amp; Ref</title><style>p{color:red}</style>"
            "<script>var x = '<h1>no</h1>';</script></head><body><h1>Top</h1><p>Hello&nbsp;<b>bold</b>\n  world."
            "</p><h2 id=a>Table</h2><table><tr><th>key</th><th>value</th></tr><tr><td>a</td><td>1</td></tr></table>"
            "<pre>line1\n  indented</pre><!-- <h2>hidden</h2> --><p>caf&eacute; &#x263A;</p></body></html>")
    title, text, heads = html_to_text(html)
    assert title == "Guide & Ref"
    assert [(lvl, t) for lvl, t, _ in heads] == [(1, "Top"), (2, "Table")]
    for _, t, off in heads:
        assert text[off:off + len(t)] == t
    assert "Hello\xa0bold world." in text
    assert "key | value\na | 1" in text
    assert "line1\n  indented" in text
    assert "café ☺" in text
    assert "var x" not in text and "hidden" not in text and "color" not in text



def _stdlib_html_words(source):
    """The oracle: python's html.parser, text outside script/style, whitespace collapsed (every tag a break:
    the pages given to it hold block tags only)."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts, self.raw = [], 0

        def handle_starttag(self, tag, attrs):
            self.raw += tag in ("script", "style")
            self.parts.append("\n")

        def handle_endtag(self, tag):
            self.raw -= tag in ("script", "style")
            self.parts.append("\n")

        def handle_data(self, data):
            if not self.raw:
                self.parts.append(data)

    parser = Text()
    parser.feed(source)
    parser.close()
    return " ".join("".join(parser.parts).split())


@pytest.mark.parametrize("script", [
    "for (var i = 0; i<n; i++) {}",                  # "<n; ...>" looks like a tag that runs past </script>
    "var s = '</p>'; if (a<b) { x = 1 }",
    "<!-- hide from old browsers",                     # an unclosed comment inside the script
    "document.write('<div class=\"x\">')",
])
def test_html_script_text_never_swallows_the_page_after_it(script):
    html = f"<body><p>Before.</p><script>{script}</script><h2>After</h2><p>The rest.</p></body>"
    title, text, heads = html_to_text(html)
    assert " ".join(text.split()) == _stdlib_html_words(html) == "Before. After The rest."
    assert [(lvl, t) for lvl, t, _ in heads] == [(2, "After")]


@pytest.mark.parametrize("head_end", ["</head><body>", "<body>", ""])  # HTML5 lets both tags be left out
def test_html_head_ends_where_the_body_starts(head_end):
    html = ("<html><head><title>Manual</title><meta charset=utf-8><link rel=stylesheet href=a.css>"
            f"{head_end}<h1>Install <svg><title>link-icon</title></svg></h1><p>Run make install.</p></html>")
    title, text, heads = html_to_text(html)
    assert title == "Manual"  # an <svg>'s <title> is not the page's
    assert text == "Install\n\nRun make install.\n\n"
    assert [(lvl, t) for lvl, t, _ in heads] == [(1, "Install")]
    assert html_to_text("<head><title>T</title>Hello <b>world</b>")[1] == "Hello world"  # text starts the body

def test_long_sections_split_with_overlap_at_boundaries():
    sentences = [f"Sentence number {i} explains option --opt{i} in detail." for i in range(60)]
    text = "Options\n\n" + " ".join(sentences)
    doc = Document("a.txt", "A", text, [(1, "Options", 0)])
    ps = chunk_document(doc, max_chars=300, overlap=60)
    assert len(ps) > 5
    for a, b in zip(ps, ps[1:]):
        assert len(a.text) <= 300
        assert b.start < a.end                    # consecutive pieces overlap...
        assert b.start > a.start
        assert text[b.start - 1].isspace()        # ...and start on a word boundary
        assert a.text.endswith(".")               # cut after a sentence, not mid-word
    covered = set()
    for p in ps:
        assert text[p.start:p.end] == p.text
        covered.update(range(p.start, p.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())   # nothing lost


def test_heading_only_sections_are_skipped_and_index_text_has_context():
    doc = Document("x.md", "Manual", "# Manual\n\n## Empty\n\n## Real\n\nBody.\n", [(1, "Manual", 0), (2, "Empty", 10),
                                                                               (2, "Real", 20)])
    ps = chunk_document(doc)
    assert [p.section for p in ps] == ["Manual > Real"]
    assert ps[0].index_text() == "Manual > Real\n## Real\n\nBody."
    p = Passage("t", "s", "Title", "Other > Sec", 0, 1)
    assert p.index_text() == "Title > Other > Sec\nt"


@pytest.mark.parametrize("underline", ["=", "--", "==="])
def test_markdown_setext_heading_with_a_short_underline_and_no_body_gives_no_passage(tmp_path, underline):
    text = f"Intro\n{underline}\n\n# Next\n\nBody text here.\n"
    import markdown_it  # the CommonMark oracle: lines 0-1 are one heading, nothing is under it

    heads = [t.map for t in markdown_it.MarkdownIt("commonmark").parse(text) if t.type == "heading_open"]
    assert heads == [[0, 2], [3, 4]]
    write(tmp_path / "a.md", text)
    ps = chunk_document(read_document(str(tmp_path / "a.md"), "a.md"))
    assert [(p.section, p.text) for p in ps] == [("Next", "# Next\n\nBody text here.")]


def test_bad_arguments():
    doc = Document("x", "x", "text", [])
    with pytest.raises(ValueError, match="max_chars"):
        chunk_document(doc, max_chars=10)
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(doc, max_chars=100, overlap=80)


def test_non_utf8_file_names_file_and_line(tmp_path):
    write(tmp_path / "good.md", "# ok\n\nfine\n")
    write(tmp_path / "bad.txt", "line one\nline two caf\xe9\n".encode("latin-1"), "wb")
    with pytest.raises(CorpusDecodeError, match=r"bad\.txt.*line 2.*UTF-8"):
        chunk_corpus(str(tmp_path), progress=False)


def test_empty_corpus_errors(tmp_path):
    with pytest.raises(EmptyCorpusError, match="no files ending in"):
        chunk_corpus(str(tmp_path), progress=False)
    write(tmp_path / "notes.pdf", "binary")
    write(tmp_path / "empty.md", "   \n\n")
    with pytest.raises(EmptyCorpusError, match="no text"):
        chunk_corpus(str(tmp_path), progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        chunk_corpus(str(tmp_path / "missing"), progress=False)


def test_same_page_in_two_formats_is_indexed_once_and_hidden_files_skipped(tmp_path):
    write(tmp_path / "git-x.txt", "source\n")
    write(tmp_path / "git-x.html", "<p>rendered</p>")
    write(tmp_path / "sub" / "guide.md", "# g\n\ntext\n")
    write(tmp_path / ".hidden" / "secret.md", "# s\n\nno\n")
    write(tmp_path / "only.txt", "plain\n")
    files = [src for _, src in list_corpus_files(str(tmp_path))]
    assert files == ["git-x.html", "only.txt", "sub/guide.md"]
    both = [src for _, src in list_corpus_files(str(tmp_path), dedupe_formats=False)]
    assert both == ["git-x.html", "git-x.txt", "only.txt", "sub/guide.md"]


def test_crlf_and_bom_are_normalised(tmp_path):
    write(tmp_path / "w.txt", "\ufeffTitle\r\n=====\r\n\r\nBody line\r\n".encode("utf-8"), "wb")
    doc = read_document(str(tmp_path / "w.txt"), "w.txt")
    assert doc.text == "Title\n=====\n\nBody line\n" and doc.title == "Title"
