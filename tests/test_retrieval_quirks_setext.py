"""The chunker's end of a Markdown heading (where its section's body starts) agrees with markdown-it-py.

CommonMark's white space is spaces and tabs only: a line holding a no-break space is not blank, "===\\u00a0" is
not an underline, and a tab before "===" indents it as code, not as an underline."""

import pytest
from markdown_it import MarkdownIt

from minagent.retrieval.chunker import _after_heading

SAMPLES = [
    "Title\n\u00a0\nmore\n===\n\nbody\n",           # a no-break-space line continues the paragraph
    "Title\n===\u00a0\nmore\n---\n\nbody\n",         # "===\u00a0" is paragraph text, "---" the underline
    "Title\n\t===\n---\n\nbody\n",                   # a tab-indented "===" is paragraph text
    "#tag\n===\n\nbody\n",                           # "#tag" is no ATX heading: a setext one
    "# Title\n===\n\nbody\n",                        # an ATX heading has no underline: "===" is body text
]


def _line_offsets(text):
    offsets, pos = [], 0
    for line in text.split("\n"):
        offsets.append(pos)
        pos += len(line) + 1
    return offsets


@pytest.mark.parametrize("text", SAMPLES)
def test_heading_ends_where_markdown_it_ends_it(text):
    offsets = _line_offsets(text)
    headings = [t for t in MarkdownIt("commonmark").parse(text) if t.type == "heading_open"]
    assert headings
    for token in headings:
        first, past = token.map
        assert _after_heading(text, offsets[first], markdown=True) == offsets[past]
