"""HTML pages -> text, checked against Python's html.parser: which characters a page's text holds, and where.

html_text.py scans tags with a regex (5x faster than html.parser); these tests give both the same pages and
compare what html.parser reports as character data (outside <script>/<style>) with what our text holds.
"""

import random
from html.parser import HTMLParser

import pytest

from minagent.retrieval.html_text import html_to_text


class _OracleText(HTMLParser):
    """html.parser's view of a page: its data outside script/style, each tag a break; CDATA sections' contents
    (reported by html.parser as unknown_decl("CDATA[...")) are kept as text; <br> inside <pre> is a newline;
    headings are (level, text with white space collapsed)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.raw, self.pre, self.in_pre = [], 0, [], 0   # pre: the text of each <pre>
        self.headings, self._heading = [], None

    def handle_starttag(self, tag, attrs):
        self.raw += tag in ("script", "style")
        self.parts.append("\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = (int(tag[1]), [])
        if tag == "pre":
            self.pre.append([])
            self.in_pre += 1
        elif tag == "br" and self.in_pre:
            self.pre[-1].append("\n")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.raw -= tag in ("script", "style")

    def handle_endtag(self, tag):
        self.raw -= tag in ("script", "style")
        self.in_pre -= tag == "pre"
        self.parts.append("\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._heading:
            self.headings.append((self._heading[0], " ".join("".join(self._heading[1]).split())))
            self._heading = None

    def handle_data(self, data):
        if not self.raw:
            self.parts.append(data)
            if self.in_pre:
                self.pre[-1].append(data)
            if self._heading:
                self._heading[1].append(data)

    def unknown_decl(self, data):
        if data.startswith("CDATA[") and not self.raw:
            self.handle_data(data[len("CDATA["):])


def oracle(source):
    parser = _OracleText()
    parser.feed(source)
    parser.close()
    return parser


def oracle_words(source):
    return " ".join("".join(oracle(source).parts).split())


def our_words(source):
    return " ".join(html_to_text(source)[1].split())


@pytest.mark.parametrize("tag", [
    "<a title=don't href=x>",                 # an apostrophe inside an unquoted value
    "<a href=x title=it's>",
    "<img alt=rock'n'roll src=a.png>",
    '<a title="a>b" data-x=it\'s>',           # a quoted ">" and then an unquoted apostrophe
    "<a title=say\"hi\" href=y>",             # a double quote inside an unquoted value
    "<a title = 'q>r' href=z>",               # spaces around "=": the quote still opens a value
])
def test_unquoted_attribute_values_with_quotes_end_the_tag_where_html_parser_ends_it(tag):
    page = f"<p>Before {tag}the link</a> after.</p><h2>Next</h2><p>More text.</p>"
    title, text, heads = html_to_text(page)
    assert our_words(page) == oracle_words(page) == "Before the link after. Next More text."
    assert [(lvl, t) for lvl, t, _ in heads] == [(2, "Next")]


def _oracle_pre_text(source):
    """The text of the page's one <pre> as html.parser reports it, <br> as a newline, less the one newline that
    HTML5 ignores right after the <pre> start tag."""
    text = "".join(oracle(source).pre[0])
    return text[1:] if text.startswith("\n") else text


@pytest.mark.parametrize("body", [
    "a\n<br>b",                              # a <br> after the text's own newline: an empty line between
    "a<br>\n<br>b",
    "line 1\n<br/>\n  indented <b>bold</b>\n<br>end",
    "\nfirst\n<br>second",                   # the newline right after <pre> is not part of the text
    "x<br><br>y",
])
def test_br_inside_pre_is_a_newline_of_its_own(body):
    page = f"<p>Intro.</p><pre>{body}</pre><p>After.</p>"
    pre = _oracle_pre_text(page)
    assert pre[0] != "\n" and pre[-1] != "\n"      # (so the blank lines around it are exactly two newlines)
    assert html_to_text(page)[1] == f"Intro.\n\n{pre}\n\nAfter.\n\n"


@pytest.mark.parametrize("section", [
    "<![CDATA[ hidden <b> text ]]>",         # a ">" inside: the section ends at "]]>", not there
    "<![CDATA[a &amp; b <h2>not a heading</h2>]]>",   # literal: no entities, no tags
    "<![CDATA[]]>",
    "<![CDATA[x > y ]] z]]>",
])
def test_cdata_section_is_literal_text(section):
    page = f"<p>Start {section} end.</p><h2>Next</h2><p>Done.</p>"
    title, text, heads = html_to_text(page)
    assert our_words(page) == oracle_words(page)
    assert "]]>" not in text and "CDATA" not in text
    assert [(lvl, t) for lvl, t, _ in heads] == [(2, "Next")]


def test_unclosed_cdata_section_runs_to_the_end_of_the_page():
    assert our_words("<p>a <![CDATA[b <i>c</i>\n") == "a b <i>c</i>"   # (hand-checked)


@pytest.mark.parametrize("page", [
    "<h2 id=intro/>Intro</h2><p>Body.</p>",                      # an unquoted "intro/": not <h2/>
    "<p>See <a href=/docs/>the docs</a> here.</p><h3 class=x/>Next</h3><p>More.</p>",
    "<script src=/js/>var hidden = 1;</script><p>Shown.</p>",   # still a script: its text is not the page's
    "<pre class=code/>a  b\n  c</pre>",
])
def test_an_unquoted_value_ending_in_a_slash_does_not_make_the_tag_self_closing(page):
    title, text, heads = html_to_text(page)
    parsed = oracle(page)
    assert our_words(page) == oracle_words(page)
    assert [(lvl, t) for lvl, t, _ in heads] == parsed.headings
    if parsed.pre:
        assert "".join(parsed.pre[0]) in text


@pytest.mark.parametrize("page", ["<p>Keep </ p> this.</p>", "<p>Keep </>this.</p>", "<p>Keep </ 3 x> this.</p>"])
def test_end_tag_open_without_a_letter_is_a_bogus_comment(page):
    assert our_words(page) == oracle_words(page) == "Keep this."


_WORDS = ["alpha", "KAVS1234-E", "max_connections", "caf&eacute;", "a&amp;b", "x&nbsp;y", "it&#x27;s", "&#39;q",
          "&foo;", "&#xZZ;", "&", "AT&T", "1 < 2", "3 > 2", "don't", "&#0;", "&#x110000;", "&lt;b&gt;", "tab\there",
          "line\nbreak", "  spaced  ", "日本語", "&nbsp", "&NBSP;", "</ p>", "a]]>b", "x <3 y"]


def _random_page(r):
    def words():
        return " ".join(r.choice(_WORDS) for _ in range(r.randint(1, 5)))

    def attrs():
        values = ["x", "don't", "it's", "/p/", "a>b", "a b"]
        return "".join(r.choice([f" title={v}" for v in values if " " not in v and ">" not in v]
                                + [f' title="{v}"' for v in values] + [" href", " alt=''"])
                       for _ in range(r.randint(0, 2)))

    def inline(depth=0):
        k = r.randint(0, 7)
        if k < 3 or depth > 2:
            return words()
        if k == 3:
            tag = r.choice(["b", "I", "a", "code", "span"])
            return f"<{tag}{attrs()}>{inline(depth + 1)}" + (f"</{tag}>" if r.random() < 0.9 else "")
        return r.choice(["<!-- <p>hidden</p> -->", "<![CDATA[ raw <b> & ]]>", "<br>", "<br/>",
                         "<script>if (a<b) { x = '</p>' }</script>", "<style>p > b { }</style>", "<img alt=x>"])

    def block(depth=0):
        k = r.randint(0, 6)
        if k == 0:
            level = r.randint(1, 6)
            return f"<h{level}{attrs()}>{inline()}{r.choice(['', '<br>'])}{inline()}</h{level}>"
        if k == 1:
            return "<ul>" + "".join(f"<li>{inline()}" for _ in range(r.randint(1, 3))) + "</ul>"
        if k == 2:
            return "<table>" + "".join("<tr>" + "".join(f"<td>{words()}</td>" for _ in range(2)) + "</tr>"
                                       for _ in range(r.randint(1, 2))) + "</table>"
        if k == 3:
            return "<pre>" + "".join(r.choice(["\n", "<br>", "code  x", "# y", "&lt;t&gt;", "<b>b</b>"])
                                     for _ in range(r.randint(1, 5))) + "</pre>"
        if k == 4 and depth < 2:
            return "<div>" + block(depth + 1) + block(depth + 1) + "</div>"
        return f"<p{attrs()}>{inline()}" + ("</p>" if r.random() < 0.8 else "")

    return "<html><body>" + "".join(block() for _ in range(r.randint(1, 8))) + "</body></html>"


def test_random_pages_keep_html_parsers_text_and_headings_and_passages_point_into_the_text():
    from minagent.retrieval.chunker import chunk_document
    from minagent.retrieval.documents import Document

    def squeeze(s):  # every character but white space (and the " | " our tables add between cells)
        return "".join(s.replace("|", "").split())

    for seed in range(200):
        page = _random_page(random.Random(seed))
        title, text, heads = html_to_text(page)
        parsed = oracle(page)
        assert squeeze(text) == squeeze("".join(parsed.parts)), (seed, page)
        assert [(lvl, squeeze(t)) for lvl, t, _ in heads] == [(lvl, squeeze(t)) for lvl, t in parsed.headings
                                                                 if t]   # (an empty heading is no section)
        for _, t, offset in heads:
            assert " ".join(text[offset:offset + 2 * len(t) + 5].split()).startswith(t), (seed, t)
        for p in chunk_document(Document("x.html", title, text, heads), max_chars=80, overlap=10):
            assert text[p.start:p.end] == p.text and len(p.text) <= 80, (seed, p)
