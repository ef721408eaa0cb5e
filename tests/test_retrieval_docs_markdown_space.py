"""CommonMark's white space is spaces and tabs: a line holding a no-break space (U+00A0) or an em space is not
blank, and such a space before "---" makes it no underline. Python's str.strip() removes both, which made the
block scanner see blank lines, headings and underlines CommonMark does not. Oracle: markdown-it-py's CommonMark
parser (oracle_headings of test_retrieval_docs_markdown); the first case is a pattern of gsutil's CHANGES.md."""
import pytest

from test_retrieval_docs_markdown import oracle_headings, our_headings


@pytest.mark.parametrize("text", [
    # a list item, then a "blank" line that holds a no-break space: the title below is the item's lazy text
    "# Release\n\n- Shim lifecycle command.\n\u00a0\nBug Fixes\n------------------\n- Fixed rsync\n",
    "Intro.\n\ntitle line\n\u00a0---\n\nbody\n",             # "\u00a0---" continues the paragraph
    "Intro.\n\u2003\n    code\nmore\n---\n",                 # no blank line: "    code" is paragraph text
    "Intro.\n\nfirst\n\u00a0\n===\n",                        # the no-break space line is part of the title
    "\u00a0\n===\n\n# Next\n",                               # a heading with no text: no section
])
def test_unicode_spaces_are_not_commonmark_white_space(text):
    assert our_headings(text) == oracle_headings(text)
