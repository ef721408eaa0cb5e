"""Reading manual files (.txt, .md, .html) into documents: text, title and heading positions.

A Document is the unit the chunker splits: its `text` is what passage offsets point into. For .txt and .md that
is the file itself (UTF-8 decoded, newlines normalised to \\n); for HTML it is the extracted readable text.
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


# Markdown (CommonMark): an optional closing run of # only after a space ("# C#" is the heading "C#")
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_ASCIIDOC_ONE_LINE = re.compile(r"^(={1,6})[ \t]+(\S.*?)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_UNDERLINE_LEVEL = {"=": 1, "-": 2, "~": 3, "^": 4, "+": 5}
_OTHER_BLOCK = re.compile(r"^ {0,3}(\d{1,9}[.)](\s|$)|[-+*](\s|$)|>|<|#)")  # Markdown blocks a setext title is not


def _underline_level(title_line, line, markdown=False):
    """Level of a setext/AsciiDoc title underline (`line` under `title_line`), or None. Markdown's setext
    underlines are = or - of any length; AsciiDoc's five characters need 3 or more and about the title's length."""
    s = line.rstrip()
    if not s or s[0] not in ("=-" if markdown else _UNDERLINE_LEVEL) or s.strip(s[0]):
        return None
    title = title_line.strip()
    if not title or title[0] in "=-~^+|`*" or title_line[:1].isspace():
        return None
    if markdown and _OTHER_BLOCK.match(title_line):  # a list item, quote, HTML or ATX line is not a setext title
        return None
    if not markdown and (len(s) < 3 or abs(len(s) - len(title_line.rstrip())) > 3):
        return None
    return _UNDERLINE_LEVEL[s[0]]


def find_text_headings(text, markdown):
    """Headings in plain text / Markdown / AsciiDoc: a list of (level, title, offset of the title line)."""
    headings = []
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    fence = None  # the open code fence's character and length: only a run of the same, as long, closes it
    prev_blank = True
    for i, line in enumerate(lines):
        m = _FENCE.match(line) if markdown else None
        if m:
            run = m.group(1)
            if fence is None and not (run[0] == "`" and "`" in m.group(2)):  # (backticks in a ``` info string:
                fence = (run[0], len(run))                                   #  inline code, not a fence)
                prev_blank = False
                continue
            if fence is not None and run[0] == fence[0] and len(run) >= fence[1] and not m.group(2).strip():
                fence = None
                prev_blank = False
                continue
        if fence is not None:
            prev_blank = False
            continue
        m = _ATX.match(line) if markdown else _ASCIIDOC_ONE_LINE.match(line)
        if m and (markdown or prev_blank):
            headings.append((len(m.group(1)), m.group(2).strip(), offsets[i]))
        elif i + 1 < len(lines) and lines[i].strip():
            level = _underline_level(line, lines[i + 1], markdown)
            if level is not None and (prev_blank or i == 0):
                headings.append((level, line.strip(), offsets[i]))
        prev_blank = not line.strip()
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
