"""Invariants a user of the chunker relies on, each against an independent oracle: offsets against the file as
Python's universal-newline reader returns it, character clusters against the `regex` module's \\X (Unicode
grapheme clusters), Markdown sections against markdown-it's token stream, HTML sections against html.parser, and
hand-counted offsets for the overlap."""

import os
import random
import time
from html.parser import HTMLParser

import markdown_it
import pytest
import regex

from minagent.retrieval.chunker import chunk_document
from minagent.retrieval.documents import Document, find_text_headings, list_corpus_files, read_document
from minagent.retrieval.html_text import html_to_text

GIT_DOC = "/usr/share/doc/git-doc"


def _doc(text, source="a.txt", markdown=None):
    markdown = source.endswith(".md") if markdown is None else markdown
    return Document(source, "T", text, find_text_headings(text, markdown))


def _check_passages(text, passages, max_chars, overlap):
    """The invariants that hold for every passage: its offsets slice it out of the text, it is at most max_chars
    long, has no white space at either end, and shares at most `overlap` characters with the one before it in the
    same section, never lying inside it (no passage repeats a tail of the previous one)."""
    for p in passages:
        assert text[p.start:p.end] == p.text
        assert 0 < len(p.text) <= max_chars
        assert p.text == p.text.strip()
    for a, b in zip(passages, passages[1:]):
        if a.section == b.section and a.source == b.source:
            assert b.start > a.start and b.end > a.end, (a, b)
            assert a.end - b.start <= overlap, (a, b)


def _uncovered(text, passages, start=0, end=None):
    """Offsets in [start, end) of the non-white-space characters no passage holds."""
    covered = bytearray(len(text))
    for p in passages:
        covered[p.start:p.end] = b"\x01" * (p.end - p.start)
    end = len(text) if end is None else end
    lost, i = [], covered.find(0, start, end)
    while i >= 0:
        if not text[i].isspace():
            lost.append(i)
        i = covered.find(0, i + 1, end)
    return lost


# -- (c) no passage repeats the previous one's tail -----------------------------------------------------------

def test_a_section_ending_in_blank_lines_is_one_passage_not_a_passage_and_its_tail(tmp_path):
    # git-doc's git-fsck-objects.txt: the DESCRIPTION section is 119 characters of text and 2 line ends, 121 in
    # all; with max_chars=120 it fits in one passage, yet its last sentence came back as a second passage
    text = ("git-fsck-objects(1)\n===================\n\nDESCRIPTION\n-----------\n\n"
            "This is a synonym for linkgit:git-fsck[1].  Please refer to the\ndocumentation of that command.\n\n"
            "GIT\n---\nPart of the linkgit:git[1] suite\n")
    section = text[text.index("DESCRIPTION"):text.index("GIT\n")]
    assert len(section.rstrip()) == 119 and len(section) == 121
    passages = [p for p in chunk_document(_doc(text), max_chars=120, overlap=59) if "DESCRIPTION" in p.section]
    assert [p.text for p in passages] == [section.rstrip()]


def test_a_blank_run_longer_than_half_a_passage_does_not_repeat_the_text_before_it():
    before = " ".join(f"word{i:02d}" for i in range(40))            # 279 characters
    text = before + "\n" * 420 + "After the gap. " * 10
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=300, overlap=60)
    _check_passages(text, passages, 300, 60)
    assert _uncovered(text, passages) == []


def test_a_long_blank_tail_is_read_once_not_once_per_passage():
    """A section ending in a long run of blanks: each passage re-trimmed the whole run (quadratic: 2 s for 200 KB
    of text and 200 KB of blanks). Chunking must stay about linear: 300 KB here in well under a second."""
    text = "Some words of text here. " * 2000 + " " * 250_000
    t0 = time.perf_counter()
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=300, overlap=60)
    elapsed = time.perf_counter() - t0
    _check_passages(text, passages, 300, 60)
    assert elapsed < 0.5, f"{elapsed:.2f}s"


# -- (c) overlap, in characters, from a word start --------------------------------------------------------------

def test_overlap_starts_at_the_first_word_start_within_overlap_characters_of_the_cut():
    # words "w000 " .. "w039 " (5 characters each, word i at offset 5*i); max_chars=100 cuts after "w019 " (offset
    # 100, the last space before the limit); 20 characters before the cut is offset 80, the start of "w016": the
    # next passage starts there, sharing exactly "w016 w017 w018 w019" with the first (it started at "w017")
    text = " ".join(f"w{i:03d}" for i in range(40))
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=100, overlap=20)
    assert [(p.start, p.end) for p in passages[:2]] == [(0, 99), (80, 179)]


def test_tabs_and_other_white_space_are_word_boundaries_too():
    # tab-separated words "w0000\t" (6 characters, word i at 6*i): the last white space before the 100-character
    # limit ends at 96 ("w0016" starts there); 20 before that is 76, inside "w0012" (72-77): the overlap starts at
    # the next word, "w0013" at 78. Before, the cut fell at 100, inside "w0016", and there was no overlap at all.
    text = "\t".join(f"w{i:04d}" for i in range(40))
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=100, overlap=20)
    assert [(p.start, p.end) for p in passages[:2]] == [(0, 95), (78, 173)]


def test_no_break_space_is_not_a_place_to_cut():
    # "10\u00a0MB" must stay on one line: the only white space in the second half of the first 100 characters is
    # a no-break space (offset 71), so the cut falls at the limit, 100, as for any run without a break
    text = "A" * 40 + " " + "B" * 30 + "\u00a0" + "C" * 60
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=100, overlap=20)
    assert passages[0].end == 100


# -- (d) never inside a character cluster ---------------------------------------------------------------------

_CLUSTERS = [
    "e\u0301",                                # e + combining acute
    "\U0001F468\u200d\U0001F469\u200d\U0001F467",   # a ZWJ family emoji
    "\U0001F1EB\U0001F1F7",                   # a flag: two regional indicators
    "\U0001F44D\U0001F3FD",                   # thumbs up + skin tone modifier
    "\u1100\u1161\u11a8",                     # Hangul jamo L V T
    "\u0915\u094d\u0937",                     # Devanagari conjunct ka + virama + ssa
    "\r\n",                                   # CRLF (read_utf8 folds it; a Document built by hand may hold it)
    " \u0301",                                # a space carrying a combining mark
]


@pytest.mark.parametrize("cluster", _CLUSTERS)
@pytest.mark.parametrize("max_chars,overlap", [(50, 0), (51, 10), (53, 24), (77, 30)])
def test_cuts_never_split_a_grapheme_cluster(cluster, max_chars, overlap):
    r = random.Random(f"{cluster}{max_chars}")
    texts = [cluster * 120, "a" + cluster * 80 + " word", " ".join(cluster * r.randint(1, 30) for _ in range(20))]
    for text in texts:
        boundaries = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
        passages = chunk_document(Document("a.txt", "T", text, []), max_chars=max_chars, overlap=overlap)
        for p in passages:
            assert p.start in boundaries and p.end in boundaries, (text, p)
            assert text[p.start:p.end] == p.text and len(p.text) <= max_chars
        assert _uncovered(text, passages) == []


def test_a_cluster_longer_than_a_passage_is_cut_at_max_chars():
    """The documented exception: a run that no cut may divide (one base letter and 200 combining marks) longer
    than max_chars is cut at max_chars anyway, so no passage exceeds it and no text is lost."""
    text = "Zalgo: a" + "\u0301" * 200 + " end."
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=60, overlap=10)
    _check_passages(text, passages, 60, 10)
    assert _uncovered(text, passages) == []


# -- (a) offsets against the file as Python's universal-newline reader returns it -------------------------------

@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbfTitle\r\n=====\r\n\r\nBody line one.\r\nBody line two.\r\n",
    b"# Title\r\rOld Mac line ends.\r## Two\r\rMore text here.\r",
    ("# Caf\u00e9 \U0001F600\n\nna\u00efve e\u0301 text \u2028 same line\n\n"
     "## \u65e5\u672c\n\n\u672c\u6587\u3002\n").encode(),
])
@pytest.mark.parametrize("ext", [".txt", ".md"])
def test_offsets_slice_the_file_as_read_with_universal_newlines(tmp_path, raw, ext):
    path = tmp_path / f"page{ext}"
    path.write_bytes(raw)
    with open(path, encoding="utf-8-sig", newline=None) as f:   # the oracle: BOM dropped, \r\n and \r -> \n
        oracle = f.read()
    doc = read_document(str(path), path.name)
    passages = chunk_document(doc, max_chars=50, overlap=10)
    assert passages
    for p in passages:
        assert oracle[p.start:p.end] == p.text


# -- (e) section paths ----------------------------------------------------------------------------------------

_MD = markdown_it.MarkdownIt("commonmark")


def _markdown_sections(text):
    """markdown-it's top-level, non-empty headings as sections: (first line, first body line, path)."""
    tokens = _MD.parse(text)
    sections, stack = [(0, 0, "")], []
    for tok, inline in zip(tokens, tokens[1:]):
        if tok.type == "heading_open" and tok.level == 0 and inline.content.strip(" \t\n"):
            level = int(tok.tag[1])
            title = " ".join(s.strip(" \t") for s in inline.content.split("\n") if s.strip(" \t")).strip()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            sections.append((tok.map[0], tok.map[1], " > ".join(t for _, t in stack)))
    return sections


_ADVERSARIAL_MD = [
    "# A\n\ntext a\n\n### C under A, level 2 skipped\n\ntext c\n\n## B\n\ntext b\n",
    "# A\n\n```\n# not a heading\n## nor this\n```\n\n## B\n\nb\n",
    "~~~~\n# fenced\n~~~\n## still fenced\n~~~~\n\n# Real\n\ntext\n",
    "Setext one\n==========\n\nbody\n\nSetext two\n---\n\n### ATX three\n\nbody 3\n",
    "# A\n\n##\n\nunder an empty heading\n\n## ##\n\nmore\n",
    "# Dup\n\nfirst\n\n# Dup\n\nsecond\n\n## Dup\n\nthird\n",
    "# Only\n## Headings\n### Here\n",
    "    # indented code, not a heading\n\n# Real\n\ntext\n",
    "> # quoted heading\n\n- ## listed heading\n\n# Real\n\ntext\n",
]


@pytest.mark.parametrize("text", _ADVERSARIAL_MD)
def test_markdown_sections_paths_and_coverage_follow_markdown_it(text):
    doc = Document("a.md", "T", text, find_text_headings(text, True))
    passages = chunk_document(doc, max_chars=50, overlap=10)
    _check_passages(text, passages, 50, 10)
    sections = _markdown_sections(text)
    lines = text.split("\n")
    line_start = [0]
    for line in lines:
        line_start.append(line_start[-1] + len(line) + 1)
    for p in passages:              # a passage's path: the oracle's section holding its first line
        first_line = text.count("\n", 0, p.start)
        assert p.section == [path for begin, _, path in sections if begin <= first_line][-1], p
    for k, (begin, body, path) in enumerate(sections):
        stop = sections[k + 1][0] if k + 1 < len(sections) else len(lines)
        start, end = line_start[begin], min(line_start[stop], len(text))
        has_body = "\n".join(lines[body:stop]).strip()
        if has_body:      # every character of a section with a body is in a passage, its heading line included
            assert _uncovered(text, passages, start, end) == [], path
        else:             # a heading with nothing under it gives no passage
            assert not [p for p in passages if start <= p.start < end], path


class _HtmlSections(HTMLParser):
    """The oracle for HTML: <h1>-<h6> (their text, white space collapsed, the empty ones left out) and whether
    any text follows each before the next heading."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections, self._heading, self._skip = [(0, "", [])], None, 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style", "title")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._heading is None:
            self._heading = (int(tag[1]), [])
        elif self._heading and tag in ("br", "div", "p"):     # a line break inside the heading: a word break
            self._heading[1].append(" ")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style", "title")
        if self._heading and tag == f"h{self._heading[0]}":
            title = " ".join("".join(self._heading[1]).split())
            if title:
                self.sections.append((self._heading[0], title, []))
            self._heading = None

    def handle_data(self, data):
        if not self._skip:
            (self._heading[1] if self._heading else self.sections[-1][2]).append(data)

    def paths(self):
        stack, out = [], []
        for level, title, body in self.sections:
            if level:
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, title))
            out.append((" > ".join(t for _, t in stack), "".join(body).strip()))
        return out


@pytest.mark.parametrize("page", [
    "<h1>Top</h1><p>intro</p><h3>Skipped to three</h3><p>c</p><h2>Two</h2><p>b</p>",
    "<h1>Top</h1><p>intro</p><h2>Line one<br>line two</h2><h2>Next</h2><p>body</p>",     # a heading of 2 lines
    "<h1>Top</h1><p>intro</p><h2>A<div>B</div></h2><h3>C</h3><p>body</p>",
    "<h1>Dup</h1><p>one</p><h1>Dup</h1><p>two</p><h2></h2><p>under an empty heading</p>",
    "<h1>Only</h1><h2>headings</h2><h3>here</h3>",
    "<h1>Top</h1><pre>\n# not a heading\n</pre><h2>&nbsp;Spaced&nbsp;&nbsp;out&nbsp;</h2><p>x</p>",
])
def test_html_sections_follow_html_parser(page):
    html = f"<html><head><title>Page</title></head><body>{page}</body></html>"
    oracle = _HtmlSections()
    oracle.feed(html)
    oracle.close()
    title, text, headings = html_to_text(html)
    passages = chunk_document(Document("a.html", title, text, headings), max_chars=50, overlap=10)
    _check_passages(text, passages, 50, 10)
    def collapsed(paths):                  # (a section of several passages, or two sections of one name)
        return [path for k, path in enumerate(paths) if k == 0 or paths[k - 1] != path]

    # the sections holding text, in order; a heading with nothing under it has no passage
    assert collapsed([p.section for p in passages]) == collapsed([path for path, body in oracle.paths() if body])


# -- (f) edge files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["", "   \n\t\n  ", "\n\n\n", "# A\n## B\n### C\n", "A\n===\n\nB\n---\n"])
def test_files_without_body_text_give_no_passages(tmp_path, raw):
    path = tmp_path / "empty.md"
    path.write_text(raw, encoding="utf-8")
    assert chunk_document(read_document(str(path), "empty.md")) == []


def test_a_long_line_without_spaces_is_cut_at_max_chars_and_nothing_is_lost():
    text = "Intro line.\n" + "x" * 5000 + "\nEnd."
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=300, overlap=60)
    _check_passages(text, passages, 300, 60)
    assert _uncovered(text, passages) == []
    assert max(len(p.text) for p in passages) == 300


def _prose(size, seed=0):
    r = random.Random(seed)
    words = ["option", "--verbose", "caf\u00e9", "na\u00efve", "the", "index", "e\u0301t\u00e9", "\U0001F600"]
    out, n, i = [], 0, 0
    while n < size:
        piece = f"\n\n## Section {i}\n\n" if i % 300 == 0 else " ".join(r.choices(words, k=12)) + ". "
        piece += "\n" if i % 7 == 0 else ""
        out.append(piece)
        n, i = n + len(piece), i + 1
    return "".join(out)


def test_chunking_stays_about_linear_from_1_to_5_megabytes():
    timings = {}
    for mb in (1, 5):
        text = _prose(mb * 1_000_000)
        t0 = time.perf_counter()
        passages = chunk_document(Document("big.md", "Big", text, find_text_headings(text, True)))
        timings[mb] = time.perf_counter() - t0
        assert _uncovered(text, passages) == []
    assert timings[5] < 10 * timings[1] + 0.5, timings     # linear is 5x; quadratic would be 25x


# -- every passage of every git-doc page --------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(GIT_DOC), reason="git-doc is not installed (apt-get install git-doc)")
@pytest.mark.parametrize("max_chars,overlap", [(1200, 200), (120, 59)])
def test_every_git_doc_page_keeps_the_invariants(max_chars, overlap):
    for path, source in list_corpus_files(GIT_DOC, dedupe_formats=False):
        doc = read_document(path, source)
        passages = chunk_document(doc, max_chars=max_chars, overlap=overlap)
        _check_passages(doc.text, passages, max_chars, overlap)
        lost_lines = {doc.text.count("\n", 0, i) for i in _uncovered(doc.text, passages)}
        heading_lines = {doc.text.count("\n", 0, offset) + k for _, _, offset in doc.headings for k in (0, 1)}
        assert lost_lines <= heading_lines, (source, sorted(lost_lines - heading_lines)[:5])  # only bare headings
        if source.endswith(".txt"):
            with open(path, encoding="utf-8-sig", newline=None) as f:
                oracle = f.read()
            assert all(oracle[p.start:p.end] == p.text for p in passages), source


def test_a_page_of_flags_is_paired_right_and_chunked_in_linear_time():
    text = "Flags: " + "\U0001F1EB\U0001F1F7" * 100_000       # 200,000 regional indicators, no space
    t0 = time.perf_counter()
    passages = chunk_document(Document("a.txt", "T", text, []), max_chars=1200, overlap=200)
    elapsed = time.perf_counter() - t0
    # flags pair indicators from the run's start (offset 7): a cut between flags is at an odd offset (hand-checked;
    # regex's \X is itself quadratic on so long a run)
    assert all(p.start % 2 == 1 and p.end % 2 == 1 for p in passages if p.start >= 7)
    assert _uncovered(text, passages) == []
    assert elapsed < 1.0, f"{elapsed:.2f}s"
