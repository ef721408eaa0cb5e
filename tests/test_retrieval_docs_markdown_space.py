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


def test_a_no_break_space_line_inside_a_setext_title_is_text():
    """markdown-it's inline content of "Title / NBSP / more / ===" keeps the no-break-space line; the title was
    joined around an empty piece ("Title  more", two spaces). Oracle: markdown-it's content, each line trimmed of
    spaces and tabs, joined with spaces."""
    from markdown_it import MarkdownIt
    from minagent.retrieval.documents import find_text_headings
    src = "Title\n\u00a0\nmore\n===\n"
    content = next(t.content for t in MarkdownIt("commonmark").parse(src) if t.type == "inline")
    want = " ".join(p.strip(" \t") for p in content.split("\n"))
    assert find_text_headings(src, True) == [(1, want, 0)]
