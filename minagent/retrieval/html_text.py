"""HTML -> plain text with headings, with a small regex tag scanner (no dependencies).

Manuals are often shipped as HTML (the microdomain paper prefers it). For retrieval we need the readable text,
its title, and where each heading starts so the chunker can split by section. Block elements become line
breaks, <pre> keeps its whitespace, table cells are joined with " | " so a table row stays one line, and
script/style/head contents are dropped. The stdlib HTMLParser does the same job 5x slower (git-doc: 5 s vs 1 s),
and manuals are machine-generated, well-formed HTML, so a scanner over tags and text is enough.
"""

import html
import re

_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "caption",
}
# block tags whose start tag only breaks the line (or starts a table cell): <div/> and <p/> act as <div> and <p>
_SELF_CLOSING_BREAKS = (_BLOCK_TAGS - {"br", "pre"}) | {"td", "th"}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg"}
# what may stand in <head>: any other start tag (or <body>) ends it, as in HTML5, where </head> is optional
_HEAD_TAGS = {"title", "meta", "link", "style", "script", "base", "noscript", "template"}
_SPACES = re.compile(r"[ \t\r\n\f\v]+")


# A comment, a CDATA section (group "cdata": its text, taken literally, as XHTML pages and HTML5's <svg>/<math>
# content mean it; html.parser reports it whole as a declaration), a doctype or processing instruction, or a tag
# (group "end" = "/" for end tags, "name", "empty" = "/" for <x/>). Inside a tag a quote opens a quoted value only
# right after "=" (HTML5): elsewhere it is part of a name or an unquoted value, as in <a title=don't href=x>,
# where reading "'" as an opening quote ran the tag on past its ">" and left the tag in the text. An unquoted
# value runs to white space or ">", so <h2 id=a/> is a start tag whose id is "a/", not an empty <h2/>. "</"
# not followed by a letter ("</ p>", "</>") is a bogus comment, dropped up to its ">".
# Each part of a tag can be read one way only (white space after "=" and an unquoted value are taken whole, a quote
# opens a quoted value only if it is closed, else it starts an unquoted one): with two ways, a "<" that no ">"
# follows (a page ending "if a<b then x=1 y=2 ...") made the search try exponentially many splits before failing.
_WS = r"[ \t\n\r\f]"
_UNQUOTED_RUN = r"[^ \t\n\r\f>]"   # a character of an unquoted value (it ends at white space or ">")
_ATTR_VALUE = "|".join([
    r'"[^"]*"', r"'[^']*'",                                            # quoted, the quote closed later
    rf'"(?![^"]*"){_UNQUOTED_RUN}*(?!{_UNQUOTED_RUN})',               # a quote never closed: an unquoted value
    rf"'(?![^']*'){_UNQUOTED_RUN}*(?!{_UNQUOTED_RUN})",
    rf"(?![\"']){_UNQUOTED_RUN}+(?!{_UNQUOTED_RUN})",                 # unquoted, taken whole
    r"(?=>|\Z)",                                                       # empty: "=" right before ">"
])
_TAG = re.compile(r"<!--.*?(?:-->|$)|<!\[CDATA\[(?P<cdata>.*?)(?:\]\]>|\Z)|<![^>]*>|<\?[^>]*>|</(?![a-zA-Z])[^>]*>"
                  r"|<(?P<end>/?)(?P<name>[a-zA-Z][a-zA-Z0-9-]*)"
                  rf"(?:[^>=]|={_WS}*(?!{_WS})(?:{_ATTR_VALUE}))*?(?P<empty>/?)>", re.S)

_RAW_TEXT_END = {name: re.compile(rf"</{name}(?=[ \t\n\r\f/>])", re.I) for name in ("script", "style", "title")}


class _TextExtractor:
    def __init__(self):
        self.parts = []          # output text pieces
        self.length = 0          # total length of self.parts
        self.headings = []       # (level, title, offset of the heading line in the output)
        self.title = ""
        self._skip_depth = 0
        self._in_head = False
        self._in_title = False
        self._titles = 0         # <title> elements opened: only the first one names the page
        self._pre_depth = 0
        self._pre_opened = False   # just after <pre>: a newline there is not part of the text (HTML5)
        self._heading = None     # (level, start offset, pieces) while inside <hN>
        self._cell_in_row = 0

    # -- output helpers -------------------------------------------------------------------------------------
    def _emit(self, s):
        if s:
            self.parts.append(s)
            self.length += len(s)
            if self._heading is not None:
                self._heading[2].append(s)

    def _last_char(self):
        for p in reversed(self.parts):
            if p:
                return p[-1]
        return "\n"

    def _line_break(self):
        """<br>: inside <pre> a newline of its own (the text's newlines are kept as they are, so a <br> after one
        is a second one, an empty line); elsewhere the end of the current line."""
        if self._pre_depth:
            self._emit("\n")
        else:
            self._newline()

    def _newline(self, blank=False):
        """End the current line (and leave an empty line after it when `blank`)."""
        if not self.parts:
            return
        tail = "".join(self.parts[-3:])
        want = "\n\n" if blank else "\n"
        have = len(tail) - len(tail.rstrip("\n"))
        if have < len(want):
            # drop trailing spaces before a line break so lines never end in blanks
            while self.parts and self.parts[-1].endswith(" ") and self._pre_depth == 0:
                stripped = self.parts[-1].rstrip(" ")
                self.length -= len(self.parts[-1]) - len(stripped)
                self.parts[-1] = stripped
                if stripped:
                    break
                self.parts.pop()
            self._emit(want[have:])

    # -- parser callbacks -----------------------------------------------------------------------------------
    def handle_starttag(self, tag, attrs):
        self._pre_opened = False
        if tag == "head":
            self._in_head = True
            return
        if tag not in _HEAD_TAGS:
            self._in_head = False
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag == "title":      # (not an <svg>'s <title>: skipped above)
            self._in_title = True
            self._titles += 1
            return
        if tag in _HEADING_TAGS:
            self._newline(blank=True)
            self._heading = (_HEADING_TAGS[tag], self.length, [])
        elif tag == "pre":
            self._newline(blank=True)
            self._pre_depth += 1
            self._pre_opened = True
        elif tag == "br":
            self._line_break()
        elif tag == "tr":
            self._newline()
            self._cell_in_row = 0
        elif tag in ("td", "th"):
            if self._cell_in_row:
                self._emit(" | ")
            self._cell_in_row += 1
        elif tag in ("p", "table", "ul", "ol", "dl", "blockquote"):
            self._newline(blank=True)
        elif tag in _BLOCK_TAGS:
            self._newline()

    def handle_startendtag(self, tag, attrs):
        """<x/>. HTML5 ignores the "/" of a non-void tag (<div/> is <div>); XHTML reads an empty element. Both
        break the line at a block tag (or start a table cell), so those act as their start tag; the others
        (<pre/>, <h2/>, <title/>, <script/>...) would open an element the two readings disagree on, and are left
        out, as are inline ones, which change nothing."""
        self._pre_opened = False
        if tag == "br" and not self._skip_depth:
            self._line_break()
        elif tag in _SELF_CLOSING_BREAKS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        self._pre_opened = False
        if tag == "head":
            self._in_head = False
            return
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag == "title":
            self._in_title = False
            return
        if tag in _HEADING_TAGS and self._heading is not None:
            level, start, pieces = self._heading
            self._heading = None
            text = " ".join("".join(pieces).split())  # (str.split: no-break spaces too, "Chapter&nbsp;1.")
            if text:
                self.headings.append((level, text, start))
            self._newline(blank=True)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self._newline(blank=True)
        elif tag == "br":                       # </br> is read as <br> (HTML5)
            self._line_break()
        elif tag in ("p", "table", "ul", "ol", "dl", "blockquote"):
            self._newline(blank=True)
        elif tag in _BLOCK_TAGS:
            self._newline()

    def handle_data(self, data):
        if self._in_title:
            if self._titles == 1:  # document.title is the first <title> element's text (HTML5 §3.1.3)
                self.title += data
            return
        if self._in_head and data.strip() and not self._skip_depth:
            self._in_head = False  # text in <head> starts the body (HTML5), as a body tag would
        if self._skip_depth or self._in_head or not data:
            return
        if self._pre_depth:
            data = data.replace("\r\n", "\n").replace("\r", "\n")
            if self._pre_opened and data.startswith("\n"):
                data = data[1:]
            self._pre_opened = False
            self._emit(data)
            return
        text = _SPACES.sub(" ", data)
        if text.startswith(" ") and self._last_char() in " \n":
            text = text[1:]
        self._emit(text)


    def feed(self, source):
        pos = 0
        # search from pos, not finditer: after <script>/<style> the scan must resume at the end tag; finditer
        # would go on inside the raw text, where "a<b" or "<!--" reads as a tag that swallows </script>
        while (m := _TAG.search(source, pos)) is not None:
            if m.start() > pos:
                self.handle_data(html.unescape(source[pos:m.start()]))
            pos = m.end()
            self._pre_opened = False           # a comment too is the token after <pre>: a newline after it is text
            if m.group("cdata") is not None:  # (before: "<![CDATA[ a <b" read as a declaration, "]]>" as text)
                self.handle_data(m.group("cdata"))
                continue
            name = m.group("name")
            if name is None:
                continue                       # comment, doctype, processing instruction
            name = name.lower()
            if m.group("end"):
                self.handle_endtag(name)
            elif m.group("empty"):
                self.handle_startendtag(name, None)
            else:
                self.handle_starttag(name, None)
                if name in ("script", "style"):   # raw text: skip to the matching end tag
                    pos = _raw_text_end(source, pos, name)
                elif name == "title" and self._in_title:   # text with entities but no tags, up to </title>
                    end = _raw_text_end(source, pos, name)
                    self.handle_data(html.unescape(source[pos:end]))
                    pos = end
        if pos < len(source):
            self.handle_data(html.unescape(source[pos:]))


def _raw_text_end(source, pos, name):
    """Where the raw text of a <script>/<style>, or the escapable raw text of a <title>, that starts at `pos`
    ends: at its end tag, "</name" followed by white space, "/" or ">" (HTML5; case-insensitive), else the end
    of the source. Inside, "<" opens nothing: <title>Vector<T></title> is titled "Vector<T>", and a "<!" or "<?"
    in a title no longer reads as a comment that runs past </title> and turns the whole body into the title."""
    end = _RAW_TEXT_END[name].search(source, pos)
    return len(source) if end is None else end.start()


def html_to_text(source):
    """Return (title, text, headings) for an HTML document.

    headings is a list of (level, heading text, character offset of the heading in `text`).
    """
    parser = _TextExtractor()
    parser.feed(source)
    return _SPACES.sub(" ", parser.title).strip(), "".join(parser.parts), parser.headings
