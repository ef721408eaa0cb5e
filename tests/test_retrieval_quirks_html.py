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
