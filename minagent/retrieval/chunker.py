"""Split documents into passages: first by heading, then by length with overlap.

A passage is what the agent's search tool returns, so it must be small enough to read in a prompt (and to fit
the encoder's 256-token window: ~1200 characters of English) yet keep where it came from: the source file,
the document title, the section path ("git-rebase(1) > OPTIONS > --onto") and the character offsets of the
passage inside the document text. Long sections are cut at the best boundary before the length limit
(blank line, then line end, then sentence end, then any white space but a no-break space) and consecutive pieces
overlap so that a fact straddling a cut is whole in at least one passage. A cut never falls inside a
user-perceived character (a letter and its combining accents, an emoji sequence, a flag, CR LF).
"""

import re
import unicodedata
from dataclasses import asdict, dataclass

from tqdm import tqdm

from .documents import list_corpus_files, read_document
# CommonMark's ATX heading line, setext underline and white space, read as documents.find_text_headings reads
# them, so that a heading's section body starts where the heading found there ends
from .documents import _ATX, _SPACE as _MARKDOWN_SPACE, _setext_underline
from .errors import CorpusDecodeError, EmptyCorpusError


@dataclass
class Passage:
    text: str
    source: str     # file path relative to the corpus root
    title: str      # document title
    section: str    # heading path inside the document, " > "-separated ("" before the first heading)
    start: int      # character offsets of `text` in the document text (see documents.Document)
    end: int

    def to_dict(self):
        return asdict(self)

    def index_text(self):
        """Text given to BM25 and the encoder: title and section path help a passage match its topic."""
        head = self.section if self.section.startswith(self.title) else f"{self.title} > {self.section}"
        return f"{head.strip(' >')}\n{self.text}"


def _section_spans(doc):
    """Yield (start, end, section path, body start) for each heading-delimited span of the document."""
    bounds = sorted(doc.headings, key=lambda h: h[2])
    source = doc.source.lower()
    stack = []  # (level, title)
    prev_start, prev_path, prev_body = 0, "", 0
    for level, title, offset in bounds:
        if offset > prev_start:
            yield prev_start, offset, prev_path, prev_body
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        prev_start = offset
        prev_path = " > ".join(t for _, t in stack)
        if source.endswith((".html", ".htm")):
            prev_body = _after_html_heading(doc.text, offset, title)
        else:
            prev_body = _after_heading(doc.text, offset, source.endswith((".md", ".markdown")))
    yield prev_start, len(doc.text), prev_path, prev_body


def _after_html_heading(text, offset, title):
    """Offset just past an HTML heading's text. html_text writes a heading's words from `offset` on and titles it
    with them joined by single spaces; a <br> or a block tag inside the heading (<h2>Install<br>on Linux</h2>)
    puts a line break between two of them, so the heading's end is found by its words, not its first line."""
    words = title.split()
    heading = re.compile(r"\s*" + r"\s+".join(re.escape(w) for w in words)) if words else None
    found = heading.match(text, offset) if heading else None
    return found.end() if found else _after_heading(text, offset)


def _after_heading(text, offset, markdown=False):
    """Offset just past the heading line at `offset` (and its underline, if it has one), where the section's body
    starts. Markdown follows CommonMark (_after_markdown_heading); plain text and AsciiDoc take a next line of
    = - ~ ^ + (3 or more long) as an underline, as documents.find_text_headings does."""
    end = text.find("\n", offset)
    if end < 0:
        return len(text)
    if markdown:
        return _after_markdown_heading(text, offset, end)
    nxt = text.find("\n", end + 1)
    under = text[end + 1: len(text) if nxt < 0 else nxt].rstrip()
    if len(under) >= 3 and under[0] in "=-~^+" and not under.strip(under[0]):
        return len(text) if nxt < 0 else nxt + 1
    return end + 1


def _after_markdown_heading(text, offset, end):
    """An ATX heading is its one line (a "===" after it is body text); a setext heading's title may span lines
    (find_text_headings joins them) and ends at its underline, the first = or - line before a blank line.
    Blank and underline are CommonMark's, as documents reads them: white space is spaces and tabs only, so a
    line of no-break spaces is paragraph text, not a blank line, and "===\u00a0" is no underline."""
    if _ATX.match(text[offset:end]):
        return end + 1
    pos = end + 1
    while pos < len(text):
        nxt = text.find("\n", pos)
        line = text[pos:len(text) if nxt < 0 else nxt]
        if not line.strip(_MARKDOWN_SPACE):
            break
        if _setext_underline(line) is not None:
            return len(text) if nxt < 0 else nxt + 1
        if nxt < 0:
            break
        pos = nxt + 1
    return end + 1


# White space a passage may be cut at (and a next passage start after): any but the no-break spaces, which bind
# what they separate ("10\u00a0MB")
_BREAK_SPACE = re.compile(r"[^\S\u00a0\u2007\u202f]")
_UP_TO_LAST_BREAK = re.compile(rf"(?s:.*){_BREAK_SPACE.pattern}")
_WORD_START = re.compile(rf"(?<={_BREAK_SPACE.pattern})\S")
_SEPARATORS = ("\n\n", "\n", ". ", "; ", ", ")   # the best cuts first; then any break space; then none


def _is_regional_indicator(ch):
    return "\U0001F1E6" <= ch <= "\U0001F1FF"


def _hangul_jamo(ch):
    """"L", "V" or "T" for a conjoining Hangul jamo, "LV" for a precomposed syllable, else None."""
    if "\u1100" <= ch <= "\u115f" or "\ua960" <= ch <= "\ua97f":
        return "L"
    if "\u1160" <= ch <= "\u11a7" or "\ud7b0" <= ch <= "\ud7c6":
        return "V"
    if "\u11a8" <= ch <= "\u11ff" or "\ud7cb" <= ch <= "\ud7fb":
        return "T"
    return "LV" if "\uac00" <= ch <= "\ud7a3" else None


def _extends(ch):
    """Whether `ch` belongs to the character before it whatever that is: a combining mark, a joiner, an emoji
    skin-tone modifier, a tag character (subdivision flags), a halfwidth kana voicing mark (UAX #29's Extend)."""
    return (unicodedata.category(ch) in ("Mn", "Mc", "Me") or ch in "\u200c\u200d\uff9e\uff9f"
            or "\U0001F3FB" <= ch <= "\U0001F3FF" or "\U000E0020" <= ch <= "\U000E007F")


def _is_control(ch):
    """UAX #29's Control (and CR, LF) among the characters of categories Cc, Zl and Zp, all of which are: nothing
    joins on after them ("\n" + a combining accent is two clusters). (Its Cf members are left out: erring toward
    joining after them only ever moves a cut back.)"""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _joins(text, i, boundary=0):
    """Whether text[i - 1] and text[i] are parts of one user-perceived character (a grapheme cluster, Unicode
    UAX #29), so that no passage may start or end between them: a piece cut there would begin with a lone accent
    or half a flag. It errs toward joining (a letter after any ZWJ, any Hangul vowel jamo, any letter after a
    virama), so a place it allows is always a cluster boundary; that only ever moves a cut back a character.
    `boundary`: a cluster boundary at or before i - 1 (the piece's start): flags pair regional indicators from the
    start of their run, and an even number of them lie between that start and any boundary, so counting from
    there is enough, and a page of a million flags is not counted back to its start at every cut."""
    if i <= 0 or i >= len(text):
        return False
    before, ch = text[i - 1], text[i]
    if before == "\r" and ch == "\n":
        return True
    if _is_control(before):     # UAX #29 GB4: a character after a control is a new cluster, even a mark
        return False
    if _extends(ch) or (before == "\u200d" and not ch.isspace()):
        return True
    if _is_regional_indicator(ch) and _is_regional_indicator(before):
        run = 1                                    # flags pair indicators from the start of the run
        while i - run - 1 >= boundary and _is_regional_indicator(text[i - run - 1]):
            run += 1
        return run % 2 == 1
    jamo, jamo_before = _hangul_jamo(ch), _hangul_jamo(before)
    if jamo in ("V", "T") or (jamo_before == "L" and jamo is not None):
        return True
    return unicodedata.combining(before) == 9 and ch.isalpha()    # a conjunct: consonant, virama, consonant


def _cuts_after(text, sep, floor, limit):
    """Offsets just past each occurrence of `sep` inside [floor, limit), the last one first."""
    end = limit
    while (at := text.rfind(sep, floor, end)) >= 0:
        yield at + len(sep)
        end = at + len(sep) - 1


def _cuts_after_break_space(text, floor, limit):
    """Offsets just past each break space inside [floor, limit), the last one first (a regex finds the last one;
    only if a combining mark sits on it does a character-by-character scan go on before it)."""
    last = _UP_TO_LAST_BREAK.match(text, floor, limit)
    if last is None:
        return
    yield last.end()
    for at in range(last.end() - 2, floor - 1, -1):
        if _BREAK_SPACE.match(text, at):
            yield at + 1


def _best_cut(text, start, limit):
    """The end offset for a piece starting at `start` (a cluster boundary) that must end at or before `limit`:
    just past the last of the best separator in the second half of the window, never inside a character cluster.
    A window with no break space in its second half (one long token: a URL, a base64 blob) is cut at the limit,
    moved back to the start of the cluster it would split (unless that cluster fills the whole second half: then
    at the limit, the one place a cut splits a cluster)."""
    floor = start + (limit - start) // 2          # never cut in the first half: pieces stay near max size
    for cuts in [_cuts_after(text, sep, floor, limit) for sep in _SEPARATORS] + [
            _cuts_after_break_space(text, floor, limit)]:
        for cut in cuts:
            if not _joins(text, cut, start):
                return cut
    cut = limit
    while cut > floor and _joins(text, cut, start):
        cut -= 1
    return cut if cut > floor else limit


def _next_start(text, after, before, boundary):
    """Where the passage after a cut at `before` starts: the first word start (a character after a break space,
    not inside a cluster) at or after `after`; `before` itself when there is none (no overlap). `boundary`: a
    cluster boundary before `after` (see _joins)."""
    pos = after
    while (word := _WORD_START.search(text, pos, before)) is not None:
        if not _joins(text, word.start(), boundary):
            return word.start()
        pos = word.start() + 1
    return before


def _trimmed(text, start, end):
    """Shrink [start, end) so the passage neither starts nor ends with whitespace (white space that carries a
    combining mark is a character of its own, and stays)."""
    while start < end and text[start].isspace() and not (_joins(text, start + 1) and not text[start + 1].isspace()):
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _section_passages(doc, start, end, path, max_chars, overlap):
    """The passages of one section, text[start:end] (see chunk_document)."""
    text = doc.text
    start, end = _trimmed(text, start, end)   # once: a long blank tail is neither rescanned nor counted as text
    out = []
    pos = start
    while pos < end:
        s, _ = _trimmed(text, pos, end)
        if s >= end:
            break
        piece_end = end if end - s <= max_chars else _best_cut(text, s, s + max_chars)
        a, b = _trimmed(text, s, piece_end)
        if b > a and (not out or b > out[-1].end):   # (a piece ending in a long blank run may hold no new text)
            out.append(Passage(text[a:b], doc.source, doc.title, path, a, b))
        if piece_end >= end:
            break
        pos = _next_start(text, max(piece_end - overlap, s + 1), piece_end, s)
    return out


def chunk_document(doc, max_chars=1200, overlap=200):
    """Passages of one Document (see module docstring), in document order.

    max_chars bounds each passage's length, always: a token longer than the window is cut (_best_cut).
    overlap (characters): the passage after a cut starts at the first word start at or after `overlap`
    characters before the cut, so two consecutive passages of a section share at most `overlap` characters
    (fewer when that point falls inside a word; none after a cut inside one long token), and never one holds the
    other. Every non-blank character of a section is in a passage, its heading line included; a section with
    nothing under its heading gives none (its title lives on in its subsections' paths)."""
    if max_chars < 50:
        raise ValueError(f"max_chars={max_chars}: passages under 50 characters carry no context; use >= 50")
    if not 0 <= overlap < max_chars // 2:
        raise ValueError(f"overlap={overlap} must be >= 0 and < max_chars/2 ({max_chars // 2})")
    out = []
    for start, end, path, body in _section_spans(doc):
        if not doc.text[max(start, body):end].strip():
            continue                           # a heading with nothing under it (or an empty preamble)
        out.extend(_section_passages(doc, start, end, path, max_chars, overlap))
    return out


def chunk_corpus(corpus_dir, max_chars=1200, overlap=200, extensions=None, progress=True, on_bad_file="fail",
                 log=print, prefer=()):
    """Read and chunk every supported file under corpus_dir. Returns (passages, number of files read).
    on_bad_file: a file that is not UTF-8 stops the build ("fail", the error names it and its line) or is
    reported and left out ("skip": a corpus of mixed encodings still indexes what it can).
    prefer: sources read in place of the page's preferred format (documents.list_corpus_files)."""
    if on_bad_file not in ("fail", "skip"):
        raise ValueError(f"on_bad_file must be 'fail' or 'skip', got {on_bad_file!r}")
    kwargs = {} if extensions is None else {"extensions": extensions}
    files = list_corpus_files(corpus_dir, prefer=prefer, **kwargs)
    passages, read = [], 0
    for path, source in tqdm(files, desc="chunking", unit="file", disable=not progress):
        try:
            doc = read_document(path, source)
        except CorpusDecodeError as e:
            if on_bad_file == "fail":
                raise
            log(f"skipped: {e}")
            continue
        read += 1
        passages.extend(chunk_document(doc, max_chars, overlap))
    if not passages:
        raise EmptyCorpusError(f"corpus directory {corpus_dir!r}: {len(files)} files but no text in any of them")
    return passages, read
