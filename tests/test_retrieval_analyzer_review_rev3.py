"""Analysis revision 3: possessives dropped, contractions, addresses and C++/C# kept whole (hand-checked lists).

The expected lists are written from the documented rules, not from running the analyzer:
- Lucene's EnglishPossessiveFilter "removes possessives (trailing 's) from words", and since Lucene 3.6 treats
  U+2019 (’) and U+FF07 (＇) as apostrophes too; StandardTokenizer (UAX #29) keeps "don't", "o'reilly" and
  "core.autocrlf's" as one token, so the filter sees (and strips) the 's at the end of the whole token;
- our own rules (analyzer.py's docstring): runs of letters/digits, identifiers joined by -_.:/ kept whole and
  split, and now apostrophe words and @-addresses whole on top of their parts, and a word ending in a letter plus
  "++" or "#" as one more term.
"""

import numpy as np
import pytest

from minagent.retrieval import Retriever
from minagent.retrieval.analyzer import Analyzer, TermIds
from minagent.retrieval.ascii_terms import surface_spans
from minagent.retrieval.chunker import Passage


def bag(tokens):
    return sorted(tokens)


@pytest.mark.parametrize("text,expected", [
    # letters followed by ++ or #: one more term next to the letter, so C, C++ and C# are three terms
    ("C++ and C# code", ["c", "c++", "and", "c", "c#", "code"]),
    ("F# and J#. g++ -O2", ["f", "f#", "and", "j", "j#", "g", "g++", "o2"]),
    ("notepad++", ["notepad", "notepad++"]),
    ("C++11 and C++/CLI", ["c", "c++", "11", "and", "c", "c++", "cli"]),      # a digit may follow "++"
    # not names: a single "+", "++" before a letter or a third "+", "#" before a digit or letter, a digit before
    ("A+ grade, a++b, x+++y, issue#12, c#x, v2++", ["a", "grade", "a", "b", "x", "y", "issue", "12", "c", "x",
                                                   "v2"]),
    ("i++;", ["i", "i++"]),                                                  # code: harmless extra term
])
def test_language_names_are_kept_whole_next_to_the_word(text, expected):
    assert bag(Analyzer().tokenize(text)) == bag(expected)


@pytest.mark.parametrize("text,expected", [
    ("git's config", ["git", "config"]),
    ("the user’s guide", ["the", "user", "guide"]),              # U+2019, as Lucene 3.6+
    ("the user＇s guide", ["the", "user", "guide"]),              # U+FF07 (NFKC makes it ')
    ("GIT'S", ["git"]),                                          # the filter checks 's and 'S
    ("it's here", ["it", "here"]),                               # the filter does not tell "it is" apart
    ("the branch's commits", ["the", "branch", "commit"]),       # then the stemmer, as in EnglishAnalyzer
    ("the users' guide", ["the", "user", "guide"]),              # no 's: the plural's apostrophe was never a term
    ("core.autocrlf's value", ["core.autocrlf", "core", "autocrlf", "value"]),    # the 's of a whole identifier
    ("O'Reilly's books", ["o'reilly", "o", "reilly", "book"]),
    # the 's must end the token: here the token goes on (a run or a joiner and a run), so nothing is dropped
    ("it's.x", ["it's", "it", "s.x", "s", "x"]),
])
def test_possessive_s_is_dropped_as_lucene_english_possessive_filter(text, expected):
    assert bag(Analyzer().tokenize(text)) == bag(expected)


@pytest.mark.parametrize("text,expected", [
    ("don't", ["don't", "don", "t"]),
    ("O'Reilly", ["o'reilly", "o", "reilly"]),
    ("don’t", ["don't", "don", "t"]),                            # the typographic apostrophe is the same term
    ("rock'n'roll", ["rock'n'roll", "rock", "n", "roll"]),
    ("'quoted' words", ["quoted", "word"]),                      # quotes around a word join nothing
])
def test_apostrophe_words_are_kept_whole_and_split(text, expected):
    assert bag(Analyzer().tokenize(text)) == bag(expected)


@pytest.mark.parametrize("text,expected", [
    ("user@example.com", ["user@example.com", "user", "example.com", "example", "com"]),
    ("Mail Jane.Doe@mail.example.org.", ["mail", "jane.doe@mail.example.org", "jane.doe", "jane", "doe",
                                         "mail.example.org", "mail", "example", "org"]),
    ("git@github.com:org/repo.git", ["git@github.com:org/repo.git", "git", "github.com:org/repo.git", "github",
                                     "com", "org", "repo", "git"]),
    ("HEAD@{1} and @mention", ["head", "1", "and", "mention"]),  # an @ needs a word on both sides
])
def test_addresses_are_kept_whole_and_split(text, expected):
    assert bag(Analyzer().tokenize(text)) == bag(expected)


def test_without_split_identifiers_the_new_whole_terms_still_come_with_their_words():
    # split_identifiers only ever governed -_.:/ identifiers; the revision-3 terms are extra terms on top
    an = Analyzer(split_identifiers=False)
    assert bag(an.tokenize("don't use C++ at user@example.com")) == bag(
        ["don't", "don", "t", "use", "c", "c++", "at", "user", "example.com", "user@example.com"])


def test_stopwords_and_stemmer_leave_the_whole_terms_alone():
    an = Analyzer(stopwords=True)
    # "it" and "a" are stopwords; "it's" loses its 's first; "don't" and "a++" are not stopwords
    assert bag(an.tokenize("it's a++ don't files")) == bag(["a++", "don't", "don", "t", "file"])


# the lists the brief measured before revision 3 (runs of letters/digits + identifiers, nothing else)
_BEFORE = [("C++ and C# code", ["c", "and", "c", "code"]), ("git's config", ["git", "s", "config"]),
           ("the user’s guide", ["the", "user", "s", "guide"]), ("don't", ["don", "t"]),
           ("O'Reilly", ["o", "reilly"]), ("user@example.com", ["user", "example.com", "example", "com"])]


@pytest.mark.parametrize("config", [
    {"stopwords": False, "stem": True, "split_identifiers": True, "cjk_bigrams": True, "combining_marks": True,
     "revision": 2},
    {"stopwords": False, "stem": True, "split_identifiers": True, "cjk_bigrams": True},     # saved as revision 1
])
def test_indexes_saved_before_revision_3_keep_their_rules(config):
    an = Analyzer.from_config(config)
    assert an.revision in (1, 2)
    for text, before in _BEFORE:
        assert bag(an.tokenize(text)) == bag(before)
    ti = TermIds(an)
    ti.add_texts([t for t, _ in _BEFORE])             # the bulk path too
    flat, lengths = ti.arrays()
    inv = {i: t for t, i in ti.vocab.items()}
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    assert [bag(inv[i] for i in flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])] == [bag(b) for _, b in _BEFORE]


def test_a_saved_revision_2_index_loads_and_searches_with_revision_2(tmp_path):
    passages = [Passage("C++ templates and git's hooks", "a.txt", "A", "", 0, 30),
                Passage("plain C code", "b.txt", "B", "", 0, 12)]
    Retriever.from_passages(passages, analyzer=Analyzer(revision=2), progress=False).save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx")
    assert loaded.analyzer.revision == 2 and "c++" not in loaded.terms.vocab and "s" in loaded.terms.vocab
    assert Analyzer.from_config(Analyzer().config()).revision == 3
    new = Retriever.from_passages(passages, progress=False)
    assert "c++" in new.terms.vocab and "s" not in new.terms.vocab
    assert new.search("C++", k=1)[0].source == "a.txt"


def _bulk_terms(an, texts):
    ti = TermIds(an)
    ti.add_texts(texts)
    flat, lengths = ti.arrays()
    inv = {i: t for t, i in ti.vocab.items()}
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [bag(inv[i] for i in flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


_PIECES = ["C++", "c#", "F#.", "g++-12", "a++b", "x+++y", "A+", "issue#12", "C++11", "git's", "GIT'S", "it's.x",
           "a's-b", "don't", "O'Reilly", "o'reilly's", "rock'n'roll", "'quoted'", "users'", "user@example.com",
           "git@github.com:org/repo.git", "HEAD@{1}", "@x", "a@b@c", "x'y@z", "s's's", "1990's", "c++'s",
           "a_verylongidentifier's", "don't@example.com", "max_connections", "core.autocrlf's", "v2.0.1",
           "sixteenchars1234'", "averyveryverylongname++"]


def _fuzz_texts(rng, n, chars):
    texts = []
    for _ in range(n):
        if rng.random() < 0.5:
            texts.append("".join(rng.choice(chars, rng.integers(0, 60))))
        else:
            texts.append("".join(str(rng.choice(_PIECES)) + str(rng.choice(["", " ", ".", "'", "@", "#", "+", "-"]))
                                 for _ in range(rng.integers(0, 12))))
    return texts


@pytest.mark.parametrize("revision", [2, 3])
@pytest.mark.parametrize("stopwords,stem,split", [(False, True, True), (True, True, False)])
def test_bulk_build_path_agrees_with_reference_on_the_new_characters(revision, stopwords, stem, split,
                                                                      monkeypatch):
    # ASCII text dense in ' @ + # s and the connectors: the numpy path (ascii_terms) must find exactly the
    # reference's tokens; small batches so many batches and the table's growth are exercised
    monkeypatch.setattr("minagent.retrieval.analyzer._BATCH_BYTES", 300)
    rng = np.random.default_rng(revision * 10 + split)
    chars = list("acsCS19-_.:/@'+#  \n,;()")
    texts = _fuzz_texts(rng, 700, chars)
    texts += [t for t, _ in _BEFORE if t.isascii()]
    an = Analyzer(stopwords=stopwords, stem=stem, split_identifiers=split, revision=revision)
    assert _bulk_terms(an, texts) == [bag(an.tokenize(t)) for t in texts]


@pytest.mark.parametrize("split", [True, False])
def test_surface_spans_match_the_regex_surface_tokens(split):
    # below the term layer: the byte spans themselves, for many short random ASCII strings
    rng = np.random.default_rng(7 + split)
    chars = np.array(list("as1-.:/_@'+#  "))
    an = Analyzer(split_identifiers=split)
    for _ in range(3000):
        text = "".join(rng.choice(chars, rng.integers(0, 16)))
        raw = text.encode()
        starts, ends = surface_spans(np.frombuffer(raw, np.uint8), split, joined_words=True)
        assert bag(raw[a:b].decode() for a, b in zip(starts.tolist(), ends.tolist())) == \
            bag(an.surface_tokens(text)), text


def test_non_ascii_texts_take_the_same_rules():
    # the reference path handles text with ’ or accents (no numpy path): same terms as the ASCII spelling
    an = Analyzer()
    assert bag(an.tokenize("Don’t read the café’s C++ guide")) == bag(
        ["don't", "don", "t", "read", "the", "café", "c", "c++", "guide"])
