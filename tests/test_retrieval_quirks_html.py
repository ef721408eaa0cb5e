"""html_to_text on HTML5 quirks: the newline after <pre> (only when it is the very next token), <title> as
escapable raw text, and self-closing non-void tags (<p/>, <div/>), whose "/" HTML5 ignores."""

import html
import re
import time
from html.parser import HTMLParser

from minagent.retrieval.html_text import html_to_text


class _PreData(HTMLParser):
    """Text html.parser reports inside <pre> (it keeps the leading newline HTML5 drops right after <pre>)."""

    def __init__(self):
        super().__init__()
        self.inside, self.data = False, ""

    def handle_starttag(self, tag, attrs):
        self.inside |= tag == "pre"

    def handle_endtag(self, tag):
        self.inside &= tag != "pre"

    def handle_data(self, data):
        if self.inside:
            self.data += data


def test_newline_after_a_comment_in_pre_is_kept():
    # HTML5 drops a newline only when it is the token right after <pre>; here the comment comes first
    source = "<p>a</p><pre><!-- c -->\nx</pre>"
    oracle = _PreData()
    oracle.feed(source)
    assert oracle.data == "\nx"
    assert html_to_text(source)[1] == "a\n\n" + oracle.data + "\n\n"


def test_newline_right_after_pre_is_still_dropped():
    assert html_to_text("<p>a</p><pre>\nx</pre>")[1] == "a\n\nx\n\n"    # hand-checked, HTML5 "in body" <pre>


class _TitleAsRcdata(HTMLParser):
    """html.parser told to read <title> as raw text up to </title> (HTML5's RCDATA); entities decoded here."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.inside, self.raw = False, ""

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.inside = True
            self.set_cdata_mode(tag)

    def handle_endtag(self, tag):
        self.inside &= tag != "title"

    def handle_data(self, data):
        if self.inside:
            self.raw += data

    def title(self):
        return " ".join(html.unescape(self.raw).split())


def _oracle_title(source):
    oracle = _TitleAsRcdata()
    oracle.feed(source)
    oracle.close()
    return oracle.title()


def test_title_keeps_what_looks_like_a_tag():
    source = "<html><head><title>Vector<T> &amp; <b>Co</b></title></head><body><p>text</p></body></html>"
    assert _oracle_title(source) == "Vector<T> & <b>Co</b>"
    title, text, _ = html_to_text(source)
    assert title == _oracle_title(source)
    assert text.strip() == "text"


def test_bogus_comment_in_title_does_not_swallow_the_body():
    for opener in ("<!--", "<!x", "<?x"):
        source = f"<head><title>a {opener} b</title></head><body><h1>Head</h1><p>text</p></body>"
        title, text, headings = html_to_text(source)
        assert title == _oracle_title(source) == f"a {opener} b"
        assert text.strip() == "Head\n\ntext"
        assert [h[1] for h in headings] == ["Head"]


def test_title_end_tag_with_attributes_or_slash():
    # HTML5: "</title" followed by white space, "/" or ">" ends the raw text (hand-checked, "RCDATA end tag")
    for end in ("</title >", "</TITLE x=1>", "</title/>"):
        title, text, _ = html_to_text(f"<title>T</titles> x{end}<p>body</p>")
        assert (title, text.strip()) == ("T</titles> x", "body")


def test_title_scan_is_linear():
    source = "<title>" + "a<b " * 20000 + "</title><p>x</p>"
    start = time.perf_counter()
    title, text, _ = html_to_text(source)
    assert time.perf_counter() - start < 1.0
    assert text.strip() == "x" and title.startswith("a<b a<b")


def test_self_closing_block_tags_open_their_element():
    # HTML5 ignores the "/" of a non-void start tag: <div/> and <p/> are <div> and <p> (hand-checked); in XHTML
    # they are empty elements, which break the line all the same
    assert html_to_text("a<div/>b")[1] == "a\nb"
    assert html_to_text("a<p/>b")[1] == "a\n\nb"
    assert html_to_text("<ul><li/>one<li/>two</ul>")[1].strip() == "one\ntwo"
    assert html_to_text("<table><tr><td/>a<td/>b</table>")[1].strip() == "a | b"
    assert re.fullmatch(r"a\nb\s*", html_to_text("a<br/>b")[1])    # void tags unchanged: one break


def test_only_the_first_title_element_names_the_page():
    """HTML5 §3.1.3 (document.title): "the title element is the first title element in the document (in tree
    order)"; browsers show that one. Ours joined every <title>'s text ("OneTwo"). Hand-checked per the spec: an
    empty first title still wins, and an <svg>'s <title> is an image's tooltip, not the page's."""
    title, text, _ = html_to_text("<head><title>One</title><title>Two</title></head><body><p>x</p></body>")
    assert (title, text.strip()) == ("One", "x")
    assert html_to_text("<title></title><title>Two</title><p>x")[0] == ""
    assert html_to_text("<body><svg><title>icon</title></svg><title>Late</title><p>x")[0] == "Late"
