"""Markdown headings (the sections passages are cut by), checked against markdown-it-py's CommonMark parser:
the top-level heading tokens' level, line and text."""

import random

import markdown_it
import pytest

from minagent.retrieval.chunker import chunk_document
from minagent.retrieval.documents import Document, find_text_headings

_MD = markdown_it.MarkdownIt("commonmark")


def oracle_headings(text):
    """(level, line, title) of each non-empty top-level heading; a setext title's lines, trimmed of spaces and
    tabs (CommonMark's white space), joined by a space."""
    tokens = _MD.parse(text)
    out = []
    for tok, inline in zip(tokens, tokens[1:]):
        if tok.type == "heading_open" and tok.level == 0 and inline.content.strip():
            lines = (s.strip(" \t") for s in inline.content.split("\n"))
            out.append((int(tok.tag[1]), tok.map[0], " ".join(s for s in lines if s).strip()))
    return out


def our_headings(text):
    return [(level, text.count("\n", 0, offset), title) for level, title, offset in find_text_headings(text, True)]


@pytest.mark.parametrize("text", [
    "   ## Indented by three\n\ntext\n",                             # up to 3 spaces before the #s
    "Intro.\n\n  Setext, indented\n  ---\n\nbody\n",
    "<pre>\n# a shell comment\nmake install\n</pre>\n\n# Real\n\ntext\n",   # HTML blocks: not headings inside
    "<!--\n# a commented-out section\n-->\n\n# Real\n\ntext\n",
    "<div class=note>\n# not a heading\n</div>\n\n# Real\n\ntext\n",
    "A title that\nwraps onto two lines\n---\n\nbody\n",                # a setext heading's paragraph
    "# ATX\nA paragraph right after it\n---\n\nbody\n",               # no blank line needed before it
    "###\nTitle after an empty heading\n===\n\nbody\n",
    "1. Step one\n   ## Inside the list item\n\n# Real\n\ntext\n",    # a list item's heading is not a section
    "- item\n\n  ## still the item's\n\n## Real\n",
    "> quoted\nlazy line\n---\n\n# Real\n",                             # a quote's text, then a thematic break
    "Para\n2. not a list: continues\n---\n",                           # only "1." interrupts a paragraph
    "- ```\n  # a comment in the item's code\n  ```\n\n# Real\n",
    "* item\n  * nested\n    ```sh\n    # a comment\n    ```\n  * more\n\n## Real\n\ntext\n",   # (node's API docs)
])
def test_markdown_headings_match_commonmark(text):
    assert our_headings(text) == oracle_headings(text)


_WORDS = ["alpha", "C#", "max_connections", "a &amp; b", "x # y", "`code #`", "*em*", "KAVS1234-E", "日本語", "#tag",
          "a\\#b", "<b>x</b>", "---", "==="]


def _random_markdown(r):
    def words():
        return " ".join(r.choice(_WORDS) for _ in range(r.randint(1, 4)))
    blocks = [
        lambda: [r.choice(["", " ", "   "]) + "#" * r.randint(1, 7) + r.choice([" ", "\t", ""]) + words()
                 + r.choice(["", " #", " ##", "#"])],
        lambda: [words(), r.choice(["=", "===", "-", "---", "- -", " ---", "    ---"])],
        lambda: [words(), words(), r.choice(["===", "---"])],
        lambda: [words() for _ in range(r.randint(1, 3))],
        lambda: [r.choice(["```", "~~~", "````"])] + [r.choice(["# inside", "code", "==="])
                                                     for _ in range(r.randint(0, 2))] + [r.choice(["```", "~~~", ""])],
        lambda: [r.choice(["- ", "* ", "1. ", "2. "]) + words()] + r.choice([[], ["   ## in item"], [words()]]),
        lambda: [r.choice(["> ", ">"]) + r.choice(["# quoted", words()])],
        lambda: ["    " + r.choice(["# indented code", "code"])],
        lambda: ["| a | b |", "|---|---|", "| # x | y |"],
        lambda: [r.choice(["<div>", "<!-- c", "<pre>", "</div>", "-->"]), r.choice(["# in html", "text"])],
        lambda: [r.choice(["---", "***", "___", "#", "##"])],
    ]
    lines = []
    for _ in range(r.randint(1, 10)):
        lines += r.choice(blocks)()
        if r.random() < 0.6:
            lines.append("")
    return "Intro.\n\n" + "\n".join(lines) + "\n"   # (a first line "---" would open YAML front matter)


def test_random_markdown_headings_match_commonmark_and_passages_point_into_the_file():
    for seed in range(300):
        text = _random_markdown(random.Random(seed))
        assert our_headings(text) == oracle_headings(text), (seed, text)
        doc = Document("a.md", "A", text, find_text_headings(text, True))
        for p in chunk_document(doc, max_chars=80, overlap=10):
            assert text[p.start:p.end] == p.text and len(p.text) <= 80, (seed, p)


def test_a_setext_heading_over_two_lines_with_nothing_under_it_gives_no_passage(tmp_path):
    text = "A title that\nwraps\n---\n\n# Next\n\nBody text here.\n"
    heads = oracle_headings(text)
    assert heads == [(2, 0, "A title that wraps"), (1, 4, "Next")]       # lines 0-2 are one heading
    doc = Document("a.md", "A", text, find_text_headings(text, True))
    assert [(p.section, p.text) for p in chunk_document(doc)] == [("Next", "# Next\n\nBody text here.")]


def test_yaml_front_matter_is_not_a_heading():
    text = "---\ntitle: Notes for Translators\nlayout: default\n---\n\n# Translators\n\nBody.\n"
    assert [h[:2] for h in find_text_headings(text, True)] == [(1, "Translators")]   # (hand-checked: the
    body = text[text.index("# Translators"):]                                      #  page after front matter)
    assert [(lvl, title) for lvl, _, title in oracle_headings(body)] == [(1, "Translators")]
