"""Reading manual files (.txt, .md, .html) into documents: text, title and heading positions.

A Document is the unit the chunker splits: its `text` is what passage offsets point into. For .txt and .md that
is the file itself (UTF-8 decoded, a leading byte order mark dropped, \\r\\n and \\r turned into \\n: the text
Python's open(path, encoding="utf-8-sig") reads); for HTML it is the extracted readable text.
Headings are found with the conventions manuals actually use: Markdown `#` and setext underlines, AsciiDoc
`== Title` and underlined titles (git-doc's .txt sources), and <h1>-<h6> in HTML.
"""

import os
import re
from dataclasses import dataclass, field

from .errors import CorpusDecodeError, EmptyCorpusError
from .html_text import html_to_text

TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm")
# When one page ships in several formats (git-doc has git-rebase.txt *and* git-rebase.html) we index it once.
# The rendered HTML wins: it has the includes expanded and no markup left in the text.
FORMAT_PREFERENCE = (".html", ".htm", ".md", ".markdown", ".txt")


@dataclass
class Document:
    source: str                      # path relative to the corpus root, with "/" separators
    title: str
    text: str
    headings: list = field(default_factory=list)  # (level, heading text, offset of the heading line in text)


def read_utf8(path):
    """Read a text file as UTF-8, failing with the file, line and byte of the first bad byte."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusDecodeError(
            f"{path}: not valid UTF-8 (line {line}, byte offset {e.start}: {data[e.start:e.start + 4]!r}); "
            f"convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or remove it from the corpus"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Markdown (CommonMark): up to 3 spaces before the #s; an optional closing run of # only after a space ("# C#" is
# the heading "C#"); the title may be empty ("##", "## ##": a heading, but no section of its own)
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:(?:^|[ \t]+)#+)?[ \t]*$")
_ASCIIDOC_ONE_LINE = re.compile(r"^(={1,6})[ \t]+(\S.*?)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_UNDERLINE_LEVEL = {"=": 1, "-": 2, "~": 3, "^": 4, "+": 5}
_CONTAINER = re.compile(r"^ {0,3}(?:(\d{1,9})[.)]|[-+*])(?:[ \t]|$)|^ {0,3}>")  # a list item or a block quote
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")


def _underline_level(title_line, line):
    """Level of an AsciiDoc title underline (`line` under `title_line`), or None: one of five characters, 3 or
    more of them, about the title's length (Markdown's setext underlines: _setext_underline)."""
    s = line.rstrip()
    if not s or s[0] not in _UNDERLINE_LEVEL or s.strip(s[0]):
        return None
    title = title_line.strip()
    if not title or title[0] in "=-~^+|`*" or title_line[:1].isspace():
        return None
    if len(s) < 3 or abs(len(s) - len(title_line.rstrip())) > 3:
        return None
    return _UNDERLINE_LEVEL[s[0]]


# CommonMark's white space for blank lines, underlines and list items: spaces and tabs only (a line holding a
# no-break space is not blank, as it would be for str.strip())
_SPACE = " \t"


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _setext_underline(line):
    """CommonMark: the level of a setext underline (= or - of any length, up to 3 spaces before it), or None."""
    s = line.strip(_SPACE)
    if not s or s[0] not in "=-" or s.strip(s[0]) or _indent(line) > 3 or line.lstrip(" ")[:1] == "\t":
        return None
    return _UNDERLINE_LEVEL[s[0]]


def find_text_headings(text, markdown):
    """Headings in plain text / Markdown / AsciiDoc: a list of (level, title, offset of the title line; for a
    Markdown setext heading whose paragraph spans lines, the first one, the title being its lines joined)."""
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    if markdown:
        skip = _front_matter_lines(lines)
        return _markdown_headings(lines[skip:], offsets[skip:])
    headings = []
    prev_blank = True
    for i, line in enumerate(lines):
        m = _ASCIIDOC_ONE_LINE.match(line)
        if m and prev_blank:
            headings.append((len(m.group(1)), m.group(2).strip(), offsets[i]))
        elif i + 1 < len(lines) and lines[i].strip():
            level = _underline_level(line, lines[i + 1])
            if level is not None and (prev_blank or i == 0):
                headings.append((level, line.strip(), offsets[i]))
        prev_blank = not line.strip()
    return headings


# CommonMark's HTML blocks: kinds 1-5 end at the line holding their end mark, 6 and 7 at a blank line; 7 (any
# other tag alone on its line) cannot interrupt a paragraph. A "# ..." line inside one is HTML, not a heading.
_HTML_BLOCK_MARKED = (
    (re.compile(r"^ {0,3}<(?:script|pre|style|textarea)(?:[ \t>]|$)", re.I),
     re.compile(r"</(?:script|pre|style|textarea)>", re.I)),
    (re.compile(r"^ {0,3}<!--"), re.compile(r"-->")),
    (re.compile(r"^ {0,3}<\?"), re.compile(r"\?>")),
    (re.compile(r"^ {0,3}<![a-zA-Z]"), re.compile(r">")),
    (re.compile(r"^ {0,3}<!\[CDATA\["), re.compile(r"\]\]>")),
)
_HTML_BLOCK_NAMES = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|details|dialog|dir|div|dl|"
    "dt|fieldset|figcaption|figure|footer|form|frame|frameset|h[1-6]|head|header|hr|html|iframe|legend|li|link|"
    "main|menu|menuitem|nav|noframes|ol|optgroup|option|p|param|search|section|summary|table|tbody|td|tfoot|th|"
    "thead|title|tr|track|ul")
_HTML_BLOCK_TAG = re.compile(rf"^ {{0,3}}</?(?:{_HTML_BLOCK_NAMES})(?:[ \t]|/?>|$)", re.I)
_HTML_TAG_ALONE = re.compile(
    r"^ {0,3}(?:<[a-zA-Z][a-zA-Z0-9-]*(?:[ \t]+[a-zA-Z_:][a-zA-Z0-9_.:-]*"
    r"(?:[ \t]*=[ \t]*(?:[^ \t\"'=<>`]+|'[^']*'|\"[^\"]*\"))?)*[ \t]*/?>|</[a-zA-Z][a-zA-Z0-9-]*[ \t]*>)[ \t]*$")


def _html_block_end(line, in_paragraph):
    """If `line` opens a CommonMark HTML block: the end mark (a regex) or "blank"; else None."""
    for opener, end in _HTML_BLOCK_MARKED:
        if opener.match(line):
            return end
    if _HTML_BLOCK_TAG.match(line) or (not in_paragraph and _HTML_TAG_ALONE.match(line)):
        return "blank"
    return None


def _container_start(line, paragraph):
    """For a list item or block quote line: (what follows it, the column its content starts at for a list item).
    What follows: "container" (its text, which an underline does not make a heading) or None (an empty list
    item: nothing open). (False, None) for any other line, and for the lines that continue a paragraph: inside
    one only a quote, a bullet or an item numbered 1 with text start a container (CommonMark)."""
    m = _CONTAINER.match(line)
    if m is None:
        return False, None
    if line.lstrip(" ").startswith(">"):
        return ("container" if _quote_opens_text(line.lstrip(" ")[1:]) else None), None
    rest = line[m.end():].rstrip(_SPACE)
    if isinstance(paragraph, int) and not (rest.strip(_SPACE) and (m.group(1) is None or int(m.group(1)) == 1)):
        return False, None
    inner = _CONTAINER.match(rest.strip(_SPACE))      # "- -", "+ 1.": an item holding an empty item holds no text
    has_text = bool(rest.strip(_SPACE)) and not (inner and not inner.group(0).startswith(">")
                                                 and not rest.strip(_SPACE)[inner.end():].strip(_SPACE))
    has_text = has_text and _inside_item(rest.strip(_SPACE), None) == "container"   # ("* ---", "- # x": no text)
    if rest.strip(_SPACE):
        content = m.end() + (_indent(rest) if _indent(rest) < 4 else 0)
    else:  # an item that opens with a blank line: its content column is one past the marker (CommonMark)
        content = len(m.group(0).rstrip(_SPACE)) + 1
    return ("container" if has_text else None), content


def _quote_opens_text(inner):
    """Whether a block quote line whose content (after ">") is `inner` leaves a paragraph open, which lazy lines
    without ">" continue. A heading, rule, code fence, indented code, HTML block or an empty list item in the
    quote leaves none: the next line without ">" starts afresh ("> +" then "text\n---" is a setext heading)."""
    inner = inner[1:] if inner[:1] in (" ", "\t") else inner
    if not inner.strip(_SPACE) or _indent(inner.expandtabs(4)) >= 4:
        return False
    if _ATX.match(inner) or _THEMATIC_BREAK.match(inner) or _html_block_end(inner, False) is not None:
        return False
    fence = _FENCE.match(inner)
    if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
        return False
    container, _ = _container_start(inner, None)   # a list item or a quote inside the quote: what it holds
    return container == "container" if container is not False else True


def _front_matter_lines(lines):
    """The number of lines of a YAML front matter block ("---" on the first line up to "---" or "..."), which
    static site generators (Jekyll, Hugo, MkDocs) strip; CommonMark alone would read "---\ntitle: x\n---" as a
    rule and a setext heading."""
    if not lines or lines[0].rstrip() != "---":
        return 0
    for i in range(1, len(lines)):
        if lines[i].rstrip() in ("---", "..."):
            return i + 1
    return 0


def _inside_item(content, paragraph):
    """What a line of a list item's content leaves open: its text ("container"), nothing (a heading or rule: no
    lazy line can follow), or a code fence (its character and length)."""
    m = _FENCE.match(content)
    if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
        return (m.group(1)[0], len(m.group(1)))
    if _ATX.match(content) or _THEMATIC_BREAK.match(content) or (paragraph and _setext_underline(content)):
        return None
    if paragraph != "container" and _indent(content) >= 4:
        return None                                   # indented code in the item: nothing a lazy line continues
    # a quote or a list item inside the item: whether it holds text ("- > ```" or "- -" leave no paragraph open)
    nested, _ = _container_start(content, 0 if paragraph == "container" else None)
    return "container" if nested is False else nested


def _markdown_headings(lines, offsets):
    """ATX and setext headings of a CommonMark document, outside code fences, indented code and HTML blocks
    (headings inside lists and block quotes are not sections of the page and are left out)."""
    headings = []
    fence = None       # the open code fence's character and length: only a run of the same, as long, closes it
    fence_indent = 0   # the column of the list item content the fence opened in (its closing line is as indented)
    html_end = None    # the open HTML block's end: a regex, or "blank"
    paragraph = None   # the line where the open paragraph started; "container" for a list item's or quote's text
    list_indent = None  # the content column of the open list item: lines indented as far belong to it
    empty_item = False  # the line before was an empty list item, which a blank line ends
    for i, line in enumerate(lines):
        blank = not line.strip(_SPACE)
        if fence is not None:
            if fence_indent and not blank and _indent(line.expandtabs(4)) < fence_indent:
                fence = list_indent = None  # left of the item's content: the item ends, and the fence open in it
            else:
                m = _FENCE.match(line[min(fence_indent, _indent(line)):])
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= fence[1] and not m.group(2).strip(_SPACE):
                    fence = None
                continue
        if html_end is not None:
            if (blank if html_end == "blank" else html_end.search(line)):
                html_end = None
            continue
        if blank:
            list_indent = None if empty_item else list_indent
            paragraph, empty_item = None, False
            continue
        empty_item = False
        if list_indent is not None and _indent(line.expandtabs(4)) >= list_indent:
            paragraph = _inside_item(line.expandtabs(4)[list_indent:], paragraph)   # (not a section's heading)
            if isinstance(paragraph, tuple):
                fence, paragraph, fence_indent = paragraph, None, list_indent
            continue
        lazy_indent = list_indent if paragraph == "container" else None   # kept if the line is a lazy one
        list_indent = None
        m = _FENCE.match(line)
        if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):   # (backticks in a ``` info string: inline
            fence, paragraph, fence_indent = (m.group(1)[0], len(m.group(1))), None, 0  #  code, not a fence)
            continue
        end = _html_block_end(line, paragraph is not None)
        if end is not None:
            paragraph = None
            if end == "blank" or not end.search(line):
                html_end = end
            continue
        m = _ATX.match(line)
        if m:
            if m.group(2):
                headings.append((len(m.group(1)), m.group(2).strip(), offsets[i]))
            paragraph = None
            continue
        if paragraph is None and _indent(line.expandtabs(4)) >= 4:
            continue                                             # indented code
        level = _setext_underline(line) if isinstance(paragraph, int) else None
        if level is not None:
            # lines trimmed of CommonMark's white space (spaces, tabs) only: a no-break-space line is text
            title = " ".join(t for t in (p.strip(" \t") for p in lines[paragraph:i]) if t).strip()
            if title:  # (a paragraph of no-break spaces: a heading with no text, no section of its own)
                headings.append((level, title, offsets[paragraph]))
            paragraph = None
            continue
        container, content = _container_start(line, paragraph)
        if _THEMATIC_BREAK.match(line):
            paragraph = None
        elif container is not False:
            paragraph, list_indent = container, content
            empty_item = content is not None and not line[content:].strip(_SPACE)
            if content is not None and isinstance(_inside_item(line[content:], None), tuple):
                fence = _inside_item(line[content:], None)       # "- ```": a code fence opens in the item
                fence_indent = content
        elif paragraph is None:
            paragraph = i
        elif lazy_indent is not None:                            # a lazy continuation of the list item's text
            list_indent = lazy_indent
    return headings


def read_document(path, source):
    """Parse one file into a Document (format chosen by extension)."""
    raw = read_utf8(path)
    ext = os.path.splitext(path)[1].lower()
    stem = os.path.splitext(os.path.basename(path))[0]
    if ext in (".html", ".htm"):
        title, text, headings = html_to_text(raw)
        if not title:
            title = headings[0][1] if headings else stem
        return Document(source, title, text, headings)
    headings = find_text_headings(raw, markdown=ext in (".md", ".markdown"))
    top = [h for h in headings if h[0] == 1]
    title = top[0][1] if top else stem
    return Document(source, title, raw, headings)


def page_of(source):
    """The page a file renders: its path less the extension (git-rebase.txt and git-rebase.html are one page)."""
    return os.path.splitext(source)[0]


def list_corpus_files(corpus_dir, extensions=TEXT_EXTENSIONS, dedupe_formats=True, prefer=()):
    """All supported files under corpus_dir (sorted, hidden files skipped) as (abs path, relative source).

    dedupe_formats: one file per page, the first format of FORMAT_PREFERENCE, unless `prefer` (sources, e.g. the
    ones an index already holds) names another of the page's files that is present: that one is kept instead."""
    if not os.path.isdir(corpus_dir):
        raise FileNotFoundError(f"corpus directory {corpus_dir!r} does not exist or is not a directory")
    exts = tuple(e.lower() for e in extensions)
    found = {}
    for root, dirs, files in os.walk(corpus_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            path = os.path.join(root, name)
            source = os.path.relpath(path, corpus_dir).replace(os.sep, "/")
            found[source] = path
    if dedupe_formats:
        best = {}
        prefer = set(prefer)
        for source in found:
            stem, ext = page_of(source), os.path.splitext(source)[1]
            rank = FORMAT_PREFERENCE.index(ext.lower()) if ext.lower() in FORMAT_PREFERENCE else 99
            rank = -1 if source in prefer else rank
            if stem not in best or rank < best[stem][0]:
                best[stem] = (rank, source)
        keep = {source for _, source in best.values()}
        found = {s: p for s, p in found.items() if s in keep}
    if not found:
        raise EmptyCorpusError(
            f"corpus directory {corpus_dir!r} has no files ending in {', '.join(exts)}: nothing to index"
        )
    return [(found[s], s) for s in sorted(found)]
