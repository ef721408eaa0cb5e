"""HTML pages -> text, checked against Python's html.parser: which characters a page's text holds, and where.

html_text.py scans tags with a regex (5x faster than html.parser); these tests give both the same pages and
compare what html.parser reports as character data (outside <script>/<style>) with what our text holds.
"""

from html.parser import HTMLParser

import pytest

from minagent.retrieval.html_text import html_to_text


class _OracleText(HTMLParser):
    """html.parser's view of a page: its data outside script/style, each tag a break; CDATA sections' contents
    (reported by html.parser as unknown_decl("CDATA[...")) are kept as text; <br> inside <pre> is a newline."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.raw, self.pre = [], 0, []

    def handle_starttag(self, tag, attrs):
        self.raw += tag in ("script", "style")
        self.parts.append("\n")
        if tag == "pre":
            self.pre.append([])
        elif tag == "br" and self.pre:
            self.pre[-1].append("\n")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.raw -= tag in ("script", "style")

    def handle_endtag(self, tag):
        self.raw -= tag in ("script", "style")
        self.parts.append("\n")

    def handle_data(self, data):
        if not self.raw:
            self.parts.append(data)
            if self.pre:
                self.pre[-1].append(data)

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
