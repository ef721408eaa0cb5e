"""Text -> BM25 terms: lowercase, unicode words, CJK bigrams, identifiers kept whole and split, optional
stopwords and a light stemmer; possessives dropped, contractions, e-mail addresses and C++/C# kept whole.

Manual search lives on exact strings: message IDs (`KAVS1234-E`), config keys (`max_connections`,
`core.autocrlf`), options (`--no-ff`). Each such identifier becomes one term for the whole string *and* terms for
its parts, so a query for "max_connections" matches it exactly and a query for "connections" still finds it.
CJK scripts have no spaces between words; the standard answer (Lucene's CJKBigramFilter) is overlapping
character bigrams, which we emit for runs of Han/Kana/Hangul.

Revision 3 (see Analyzer) adds what manuals about programming need, on top of the words and identifiers:
- a possessive 's / ’s is dropped, as Lucene's EnglishPossessiveFilter ("removes possessives (trailing 's) from
  words"; U+2019 too since Lucene 3.6) does: "git's config" is "git config", not "git s config". It must end the
  word: the "'s" of "it's.x" or "a's-b" is followed by more of the token and stays;
- a word joined to the next by an apostrophe is kept whole as well as split, like an identifier: "don't" gives
  "don't", "don", "t" (an exact match for "don't", and "don" still finds it); ’ is read as ';
- an address, words joined by - _ . : / and at least one @, is kept whole as well: "user@example.com" (its parts
  "user", "example.com", "example", "com" stay) — also "git@github.com:org/repo.git" and "pkg@1.2.3";
- a language name, a word ending in a letter and then "++" or "#", is one more term next to the word: "c++",
  "c#", "f#", "g++" (so "C", "C++" and "C#" are three terms, and "c" still matches all three). "++" may be
  followed by a digit ("c++11" gives "c++" and "11") but not by a letter ("a++b" is an expression) or by
  + or #; "#" by none of these ("issue#12" is a number, "c#x" no name). "A+" is no name: a single "+" is a
  grade, a regex or arithmetic far more often. "i++" in code does give "i++" — a term nobody searches for,
  harmless next to the "i" it keeps.

`tokenize(text)` is the readable reference; `TermIds.add_text` is the fast path for one text (regex findall + one
dict lookup per token, with stemming done once per distinct surface form) and `TermIds.add_texts` the bulk path
used to build an index (ASCII texts tokenized on their bytes with numpy: ascii_terms). A test checks they agree.
"""

import re
import unicodedata
from array import array

import numpy as np

from .ascii_terms import PackedSurfaceIds

def _ranges(codes):
    """Consecutive runs of increasing ints as (first, last) pairs."""
    out = []
    for c in codes:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


_BATCH_BYTES = 512 << 10      # ASCII text tokenized per numpy pass in TermIds.add_texts (bounds its temporaries)

# A word is a run of letters/digits; an identifier is words joined by - _ . : / (no spaces). One linear regex
# pass finds both ("compounds"); the ASCII version is ~2x faster and most manual text is ASCII.
# Combining marks (Unicode M*: Devanagari vowel signs and viramas, Arabic harakat, the dot of a lowercased "İ")
# are inside words too, though `\w` leaves them out: without them "हिन्दी" would fall apart into its consonants.
# Texts holding a mark take the (slower) patterns that allow them.
# (planes 0-1 hold every mark but the variation selectors of plane 14, U+E0100-E01EF: ~7 ms at import, not 90)
_MARKS = "".join(f"{chr(a)}-{chr(b)}" for a, b in _ranges(
    c for c in range(0x300, 0x20000) if unicodedata.category(chr(c))[0] == "M")) + "\U000e0100-\U000e01ef"
_HAS_MARK = re.compile(f"[{_MARKS}]")


def _word_patterns(first, inner):
    """(word, compound, joined) regexes for words that start with `first` and go on with `inner` characters."""
    word = f"{first}(?:{inner})*"
    return (re.compile(word), re.compile(f"{word}(?:[-_.:/]{word})*"),
            re.compile(f"(?:{inner})[-_.:/]{first}"))   # joined: does the text hold any identifier at all?


_WORD, _COMPOUND, _JOINED = _word_patterns(r"[^\W_]", r"[^\W_]")
# a word starts with a letter or digit (a lone mark, like the emoji selector U+FE0F, is no word) and holds marks
_MARKED_WORD, _MARKED_COMPOUND, _MARKED_JOINED = _word_patterns(r"[^\W_]", f"[^\\W_]|[{_MARKS}]")
_COMPOUND_ASCII = re.compile(r"[a-z0-9]+(?:[-_.:/][a-z0-9]+)*")
_ASCII_RUN = re.compile(r"[a-z0-9]+")
_NOT_PLAIN = re.compile(r"[-_.:/'@+#]")   # ASCII without these: the surface tokens are its [a-z0-9]+ runs, lowercased


class _JoinedWordRules:
    """Revision 3's regexes for words that start with `first`, go on with `inner` and whose letters (not
    digits) are `letter`; ascii_terms finds the same tokens on bytes."""

    def __init__(self, first, inner, letter, digit):
        # a match starts where a word starts: a match tried inside a word fails anyway (it ends where the one
        # from the word's start would), and on long words those tries cost as much as the whole scan
        word = f"(?<!{first}){first}(?:{inner})*"
        more = f"{first}(?:{inner})*"
        # 's after a word, neither going on as a word nor joined (-_.:/'@) to one: "git's", not "it's.x" (the
        # literal 's first lets the regex engine skip to it: 15x faster than a pattern opening with a lookbehind)
        self.possessive = re.compile(f"'s(?<=(?:{inner})'s)(?!{inner}|[-_.:/'@]{first})")
        self.apostrophe_word = re.compile(f"{word}(?:'{more})+")                 # don't, o'reilly
        self.address_chain = re.compile(f"{word}(?:[-_.:/@]{more})+")            # an address if it holds an @
        self.language_name = re.compile(                                          # c++, g++, c++11, c#, f#
            f"{word}(?<!{digit})(?:\\+\\+(?!{letter}|[+#])|#(?!{inner}|[+#]))")

    def joined_tokens(self, text):
        """The apostrophe words, addresses and language names of `text` (possessives already dropped).

        Each regex reads only the white-space-separated pieces holding its character (' @ + #): none of these
        tokens spans white space, and a few pieces scan much faster than the whole text."""
        apostrophe, at, name = "'" in text, "@" in text, "+" in text or "#" in text
        if not (apostrophe or at or name):
            return []
        pieces = text.split()
        out = self.apostrophe_word.findall(" ".join(p for p in pieces if "'" in p)) if apostrophe else []
        if at:
            out += [t for t in self.address_chain.findall(" ".join(p for p in pieces if "@" in p)) if "@" in t]
        if name:
            out += self.language_name.findall(" ".join(p for p in pieces if "+" in p or "#" in p))
        return out


_RULES = _JoinedWordRules(r"[^\W_]", r"[^\W_]", r"[^\W\d_]", r"\d")
_MARKED_RULES = _JoinedWordRules(r"[^\W_]", f"[^\\W_]|[{_MARKS}]", f"[^\\W\\d_]|[{_MARKS}]", r"\d")
_ASCII_RULES = _JoinedWordRules("[a-z0-9]", "[a-z0-9]", "[a-z]", "[0-9]")     # ~2x faster on ASCII text
_CONNECTORS = "-_.:/"
_CJK_CHARS = (
    "\u1100-\u11ff\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
)
_CJK_RUN = re.compile(f"[{_CJK_CHARS}]+")
_HAS_CJK = re.compile(f"[{_CJK_CHARS}]")

# Lucene's English stopword set (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET): short on purpose — in manuals words
# like "not", "can", "all" carry meaning.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)


_STEM_EXCEPTIONS = frozenset("this thus does has was is its his yes alias always perhaps whereas".split())
# -ches/-zes plurals that are -che/-ze words + s, not -ch/-z words + es: "caches" is "cache" + s ("branches" is
# "branch" + es), "sizes" and every -ize verb ("initializes") are -ze + s; only -zzes and -tzes (buzzes,
# waltzes) are -z + es
_CHE_WORDS = ("cache", "niche", "cliche", "avalanche", "stache", "psyche", "creche", "fiche", "headache")
_SIBILANT_ES = {1: ("ches", "shes", "sses", "xes", "zes"), 2: ("ches", "shes", "sses", "xes", "zzes", "tzes")}
REVISIONS = (1, 2, 3)     # versions of the analysis rules (see Analyzer)
REVISION = 3              # analysis rules of new indexes


def light_stem(word, revision=REVISION):
    """A light English plural stemmer: Lucene's "minimal" S-stemmer plus -es after sibilants.

    It only undoes plurals, so it never merges unrelated words (Porter maps "general" and "generate" together):
    files -> file, entries -> entry, branches -> branch, passes -> pass, boxes -> box, sizes -> size,
    caches -> cache; "status", "class" and short words are left alone. The caller skips identifiers and words
    with digits. revision 1 (indexes saved before it was fixed) also cut -es after every z and after -che
    words: sizes -> siz, initializes -> initializ, caches -> cach.
    """
    n = len(word)
    if n < 4 or word[-1] != "s" or word[-2] in "us" or word in _STEM_EXCEPTIONS:
        return word
    if word.endswith("ies") and n > 4 and word[-4] not in "ae":
        return word[:-3] + "y"
    if word.endswith("es"):
        if word[-3] in "aeio":
            return word                                   # does, shoes, goes: Lucene leaves these
        if word.endswith(_SIBILANT_ES[min(revision, 2)]) and (revision < 2 or not word[:-1].endswith(_CHE_WORDS)):
            return word[:-2]
    return word[:-1]


class Analyzer:
    """Configurable analysis chain; its `config()` is saved with an index so queries are analysed the same way.

    revision: the version of the analysis rules. 3 drops possessives and keeps contractions, addresses and
    language names whole (module docstring); 2 (11/2026) stems sizes -> size and caches -> cache (light_stem)
    and lowercases "İ" to "i" (normalize); 1 is what indexes saved before then were built with. An index keeps
    the revision it was saved with (from_config), so its queries are analysed as its passages were.
    """

    def __init__(self, stopwords=False, stem=True, split_identifiers=True, cjk_bigrams=True, combining_marks=True,
                 revision=REVISION):
        if revision not in REVISIONS:
            raise ValueError(f"analyzer config: unknown revision {revision!r}; expected one of {list(REVISIONS)}")
        self.stopwords = bool(stopwords)
        self.stem = bool(stem)
        self.split_identifiers = bool(split_identifiers)
        self.cjk_bigrams = bool(cjk_bigrams)
        self.combining_marks = bool(combining_marks)   # marks inside words (False: split at them, as before 11/2026)
        self.revision = revision
        self._stop = ENGLISH_STOPWORDS if self.stopwords else frozenset()

    @property
    def joined_words(self):
        """Whether revision 3's rules apply: possessives dropped; contractions, addresses, c++/c# kept whole."""
        return self.revision >= 3

    def config(self):
        return {"stopwords": self.stopwords, "stem": self.stem, "split_identifiers": self.split_identifiers,
                "cjk_bigrams": self.cjk_bigrams, "combining_marks": self.combining_marks, "revision": self.revision}

    @classmethod
    def from_config(cls, cfg):
        unknown = set(cfg) - {"stopwords", "stem", "split_identifiers", "cjk_bigrams", "combining_marks", "revision"}
        if unknown:
            raise ValueError(f"analyzer config: unknown fields {sorted(unknown)}")
        # an index saved before combining_marks existed was built splitting words at marks, one saved before
        # revision existed with revision 1's rules: query it the same way
        return cls(**{"combining_marks": False, "revision": 1, **cfg})

    def normalize(self, text):
        """NFKC (full-width letters and digits become ASCII) then lowercase.

        "İ" (Turkish capital dotted I) lowercases to "i", as Unicode's simple case mapping (and Java's, so Lucene's
        LowerCaseFilter) has it: str.lower() gives "i" + U+0307 (a combining dot), which would make "İstanbul" a
        term that the query "istanbul" never matches (revision 1 kept the dot). Revision 3 reads ’ (U+2019, the
        typographic apostrophe) as ', so "don’t" and "don't" are one term (NFKC already folds U+FF07 to ')."""
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
            if self.revision >= 2:
                text = text.replace("\u0130", "i")
            if self.revision >= 3:
                text = text.replace("\u2019", "'")
        return text.lower()

    def surface_tokens(self, text):
        """Tokens before stemming/stopwords: words, whole identifiers, CJK bigrams (bag of words: order free)."""
        ascii = text.isascii()
        text = text.lower() if ascii else self.normalize(text)
        cjk = None
        if not ascii and self.cjk_bigrams and _HAS_CJK.search(text):
            cjk = []
            for run in _CJK_RUN.findall(text):
                cjk.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
            text = _CJK_RUN.sub(" ", text)
        marked = not ascii and self.combining_marks and _HAS_MARK.search(text)
        word, compound, joined = ((_MARKED_WORD, _MARKED_COMPOUND, _MARKED_JOINED) if marked
                                  else (_WORD, _COMPOUND, _JOINED))
        rules = (_ASCII_RULES if ascii else _MARKED_RULES if marked else _RULES) if self.joined_words else None
        if rules and "'" in text:
            text = rules.possessive.sub("  ", text)            # before anything else: "git's" is "git"
        tokens = (_COMPOUND_ASCII if ascii else compound).findall(text)
        # identifiers need a connector: a C-speed substring test skips the regex for most plain prose
        if self.split_identifiers and any(c in text for c in _CONNECTORS) and joined.search(text):
            idents = [t for t in tokens if any(c in t for c in _CONNECTORS)]  # (not isalnum: marks are not)
            if idents:
                tokens += word.findall(" ".join(idents))
        if rules:
            tokens += rules.joined_tokens(text)
        return tokens + cjk if cjk else tokens

    def term(self, token):
        """The index term for one surface token, or None if it is a stopword."""
        if token in self._stop:
            return None
        if self.stem and token.isalpha() and token.isascii():
            return light_stem(token, self.revision)
        return token

    def tokenize(self, text):
        """Readable reference path: the list of index terms of `text` (with repeats)."""
        out = []
        for tok in self.surface_tokens(text):
            t = self.term(tok)
            if t is not None:
                out.append(t)
        return out


class _SurfaceIds(dict):
    """surface token -> term id, computing (stem, stopword check, vocabulary insert) on first sight only."""

    def __init__(self, analyzer, vocab):
        super().__init__()
        self.analyzer, self.vocab = analyzer, vocab

    def __missing__(self, surface):
        term = self.analyzer.term(surface)
        tid = -1 if term is None else self.vocab.setdefault(term, len(self.vocab))
        self[surface] = tid
        return tid


class TermIds:
    """Maps texts to term ids while building an index (the fast path of Analyzer.tokenize).

    Each token costs one dict lookup done in C (`map` over a dict whose __missing__ analyses new surface forms),
    and ids go straight into a flat int32 buffer: no per-document Python lists are kept. Stopwords get id -1;
    `arrays()` drops them.
    """

    def __init__(self, analyzer, vocab=None):
        self.analyzer = analyzer
        self.vocab = {} if vocab is None else dict(vocab)   # term -> id
        self._ids = _SurfaceIds(analyzer, self.vocab)
        self._flat = array("i")
        self._lengths = array("q")
        self._packed = None                     # ascii_terms table, made on first add_texts

    def ids(self, text):
        """Term ids of one text (repeats kept, stopwords dropped)."""
        return [i for i in map(self._ids.__getitem__, self.analyzer.surface_tokens(text)) if i >= 0]

    def add_text(self, text):
        """Append one document's term ids to the flat buffer."""
        before = len(self._flat)
        self._flat.extend(map(self._ids.__getitem__, self.analyzer.surface_tokens(text)))
        self._lengths.append(len(self._flat) - before)

    def add_texts(self, texts, progress=None):
        """add_text for many texts, same ids: runs of ASCII texts are tokenized together on their bytes
        (ascii_terms: 1.3 s instead of 6.2 s for 10M tokens), other texts one at a time. `progress`: a tqdm
        bar, advanced per text."""
        batch, size = [], 0
        for text in texts:
            if text.isascii():
                batch.append(text)
                size += len(text) + 1
                if size >= _BATCH_BYTES:
                    self._add_ascii(batch, progress)
                    batch, size = [], 0
            else:
                self._add_ascii(batch, progress)
                batch, size = [], 0
                self.add_text(text)
                if progress is not None:
                    progress.update(1)
        self._add_ascii(batch, progress)

    def _add_ascii(self, texts, progress):
        if not texts:
            return
        if self._packed is None:
            self._packed = PackedSurfaceIds(self._ids)
        joined = "\n".join(texts).lower()        # a newline never joins tokens, so none crosses a text
        ids, offsets = self._packed.chunk_ids(joined, self.analyzer.split_identifiers,
                                              self.analyzer.joined_words)
        text_starts = np.cumsum([0] + [len(t) + 1 for t in texts])
        if len(offsets) > 1 and (offsets[1:] < offsets[:-1]).any():
            # identifiers come after the runs: regroup the tokens by text
            text_of = np.searchsorted(text_starts, offsets, side="right") - 1
            ids = ids[np.argsort(text_of, kind="stable")]
            counts = np.bincount(text_of, minlength=len(texts))
        else:
            counts = np.diff(np.searchsorted(offsets, text_starts))
        self._flat.frombytes(ids.astype(np.int32).tobytes())
        self._lengths.frombytes(counts.astype(np.int64).tobytes())
        if progress is not None:
            progress.update(len(texts))

    def arrays(self):
        """(flat term ids int32, per-document lengths int64) of every text added, stopwords removed."""
        flat = np.frombuffer(self._flat, dtype=np.int32) if len(self._flat) else np.zeros(0, np.int32)
        lengths = np.frombuffer(self._lengths, dtype=np.int64) if len(self._lengths) else np.zeros(0, np.int64)
        if self.analyzer.stopwords:
            keep = flat >= 0
            doc = np.repeat(np.arange(len(lengths)), lengths)
            flat, lengths = flat[keep], np.bincount(doc[keep], minlength=len(lengths)).astype(np.int64)
        return flat, lengths          # views of the buffers (no copy); texts can no longer be added

    def builder(self):
        """A new TermIds for adding texts to an index built with this one: same vocabulary and surface-form
        cache (copies, so this one is untouched if the build fails), empty buffers."""
        new = TermIds(self.analyzer, self.vocab)
        new._ids.update(self._ids)
        return new

    def for_queries(self):
        """This TermIds with its build buffers dropped (the index holds the postings now): what is kept is the
        vocabulary and the surface-form cache that query_ids reads. Returns self."""
        self._flat, self._lengths, self._packed = array("i"), array("q"), None
        return self

    def query_ids(self, text):
        """Term ids of a query; terms the index has never seen are dropped (they match nothing).

        A surface form seen while indexing is one dict lookup (its id, or -1 for a stopword); others are
        analysed, without being added anywhere (queries never grow the vocabulary).
        """
        if text.isascii() and not _NOT_PLAIN.search(text):
            # plain ASCII words (most queries): no identifiers, possessives or joined words to find, so
            # surface_tokens would return exactly the runs; every one seen while indexing: its ids
            ids = list(map(self._ids.get, _ASCII_RUN.findall(text.lower())))
            if None not in ids:
                return ids if -1 not in ids else [i for i in ids if i >= 0]
        known, vocab, term = self._ids, self.vocab, self.analyzer.term
        out = []
        for tok in self.analyzer.surface_tokens(text):
            i = known.get(tok)
            if i is None:
                t = term(tok)
                i = -1 if t is None else vocab.get(t, -1)
            if i >= 0:
                out.append(i)
        return out
