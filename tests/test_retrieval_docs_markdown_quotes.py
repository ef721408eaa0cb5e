"""A block quote (or a list item inside an item) that holds no text leaves no paragraph open, so the next line
without ">" starts afresh and an underline under it makes a heading. Oracle: markdown-it-py's CommonMark parser
(oracle_headings of test_retrieval_docs_markdown); minimal forms of random documents that disagreed."""
import pytest

from test_retrieval_docs_markdown import oracle_headings, our_headings


@pytest.mark.parametrize("text", [
    "Intro.\n\n> ```\ntext\n---\n",           # a code fence in the quote
    "Intro.\n\n> +\ntext\n---\n",             # an empty list item in the quote
    "Intro.\n\n>     code\ntext\n---\n",       # indented code in the quote
    "Intro.\n\n> <div>\ntext\n---\n",          # an HTML block in the quote
    "Intro.\n\n- > ```\ntext\n---\n",          # a quote holding a fence, in a list item
    "Intro.\n\n> quoted text\nlazy\n---\n",    # (text: the lazy line continues it, no heading)
])
def test_a_quote_without_text_leaves_nothing_to_continue(text):
    assert our_headings(text) == oracle_headings(text)
