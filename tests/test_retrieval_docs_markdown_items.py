"""Which lines belong to a Markdown list item, so that a heading after the item is found (or a line inside it is
not taken for one). Oracle: markdown-it-py's CommonMark parser (oracle_headings of test_retrieval_docs_markdown);
the texts are minimal forms of random documents on which the scanner and markdown-it disagreed."""
import pytest

from test_retrieval_docs_markdown import oracle_headings, our_headings


@pytest.mark.parametrize("text", [
    # a closing fence typed at the margin is not in the item: it opens a new block of code, "## Next" is code
    "# Install\n\n1. Build it:\n   ```sh\n   make\n```\n\n## Next\n\ntext\n",
    # a line left of the item's content column ends the item and the fence open in it
    "Intro.\n\n- ```\n  code\nText\n===\n",
    # an item that opens with a blank line has its content one column past the marker: " C#" is not in it
    "Intro.\n\n-\n C#\n2) a # b\n  ===\n",
    # indented code inside an item is no paragraph: the next line at the margin is not its lazy continuation
    "Intro.\n\n- a\n\n      code\ntext\n---\n",
    "Intro.\n\n- a\n\n      code\n  text\n---\n",
])
def test_list_item_extent_matches_commonmark(text):
    assert our_headings(text) == oracle_headings(text)
