"""BM25 analysis: identifiers whole and split, CJK bigrams, stopwords, light stemming (hand-checked examples)."""

import numpy as np
import pytest

from minagent.retrieval.analyzer import Analyzer, TermIds, light_stem


def test_identifiers_are_kept_whole_and_split():
    toks = Analyzer().tokenize("Error KAVS1234-E: raise max_connections; see core.autocrlf, --no-ff and a/b.")
    for whole in ("kavs1234-e", "max_connections", "core.autocrlf", "no-ff", "a/b"):
        assert whole in toks
    for part in ("kavs1234", "e", "max", "connection", "core", "autocrlf", "no", "ff", "a", "b", "error", "raise"):
        assert part in toks
    # trailing punctuation is not part of an identifier; "connections" is stemmed, "max_connections" is not
    assert "b." not in toks and "connections" not in toks


def test_identifier_splitting_can_be_turned_off():
    assert sorted(Analyzer(split_identifiers=False).tokenize("KAVS1234-E max_connections plain")) == \
        ["kavs1234-e", "max_connections", "plain"]


def test_cjk_bigrams_and_fullwidth_folding():
    toks = Analyzer().tokenize("設定ファイル を 確認 Ｅｒｒｏｒ１２ 한국어")
    assert toks[:1] == ["error12"]              # NFKC folds full-width letters and digits
    assert set(toks[1:]) == {"設定", "定フ", "ファ", "ァイ", "イル", "を", "確認", "한국", "국어"}
    assert "設" not in toks                      # runs longer than one character give bigrams only


def test_turkish_capital_dotted_i_lowercases_to_i():
    # Unicode's simple lowercase mapping of U+0130 is U+0069 (UnicodeData.txt; Java's Character.toLowerCase and
    # so Lucene's LowerCaseFilter use it). str.lower() gives "i" + U+0307, a combining dot that stays inside the
    # word: "İstanbul" would be a term the query "istanbul" never matches. Dotless "ı" is its own letter.
    an = Analyzer()
    assert an.tokenize("İstanbul İZMİR") == ["istanbul", "izmir"] == an.tokenize("ISTANBUL izmir")
    assert an.tokenize("I\u0307stanbul ılık") == ["istanbul", "ılık"]      # NFKC composes I + U+0307 to İ
    # an index saved with revision 1 was built with the dot kept: its queries keep it too
    assert Analyzer(revision=1).tokenize("İstanbul") == ["i\u0307stanbul"]


def test_combining_marks_stay_inside_words():
    """Marks (Unicode M*) are not \\w, but they are part of words: vowel signs and viramas in Devanagari, harakat
    in Arabic, a combining accent. Hand-checked tokens."""
    a = Analyzer()
    assert a.tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert a.tokenize("مُحَمَّد") == ["مُحَمَّد"]
    assert a.tokenize("re\u0301sume\u0301 cafe") == ["résumé", "cafe"]  # NFKC composes e + U+0301 to é
    assert a.tokenize("x\u20dd-y\u0306z") == ["x\u20dd-y\u0306z", "x\u20dd", "y\u0306z"]  # marks NFKC keeps
    # the words' letters alone no longer match: "नदी" (river) shares न and द with "हिन्दी" but no term
    assert not set(a.tokenize("हिन्दी")) & set(a.tokenize("नदी किनारे"))
    # next to an identifier, a marked word is still one term, counted once; a lone mark is no word
    assert a.tokenize("हिन्दी भाषा config.yaml") == ["हिन्दी", "भाषा", "config.yaml", "config", "yaml"]
    assert a.tokenize("\u26a0\ufe0f Warning") == ["warning"]
    ids = TermIds(a)
    ids.add_texts(["हिन्दी भाषा config.yaml", "plain ascii words"])
    assert ids.arrays()[1].tolist() == [5, 3]


def test_stopwords_optional():
    assert Analyzer().tokenize("the branch is not here") == ["the", "branch", "is", "not", "here"]
    assert Analyzer(stopwords=True).tokenize("the branch is not here") == ["branch", "here"]


@pytest.mark.parametrize("word,stem", [
    ("files", "file"), ("entries", "entry"), ("branches", "branch"), ("passes", "pass"), ("boxes", "box"),
    ("status", "status"), ("class", "class"), ("does", "does"), ("goes", "goes"), ("this", "this"),
    ("commits", "commit"), ("aliases", "aliase"), ("has", "has"), ("keys", "key"),
    ("series", "sery"),                                  # rule-based: -ies -> -y, like Lucene's
])
def test_light_stemmer(word, stem):
    assert light_stem(word) == stem


@pytest.mark.parametrize("plural,singular", [
    ("sizes", "size"), ("initializes", "initialize"), ("optimizes", "optimize"), ("prizes", "prize"),
    ("caches", "cache"), ("niches", "niche"), ("mustaches", "mustache"),         # -ze / -che words + s
    ("buzzes", "buzz"), ("waltzes", "waltz"), ("branches", "branch"), ("matches", "match"),
    ("reaches", "reach"), ("detaches", "detach"), ("catches", "catch"), ("boxes", "box"),
    ("prefixes", "prefix"), ("hashes", "hash"), ("classes", "class"),          # -z / -ch / -x / -sh / -ss + es
])
def test_plural_and_singular_get_one_term(plural, singular):
    # hand-checked English plurals: a query for the singular must find the plural. The -es-after-sibilant rule
    # cut "sizes" to "siz" and "caches" to "cach" ("size" occurs 3640 times in git's manual, "sizes" 33)
    an = Analyzer()
    assert an.tokenize(plural) == an.tokenize(singular) == [singular]


def test_indexes_saved_before_the_stemmer_fix_keep_their_rules():
    # an index's passages were stemmed by the rules of its day: its queries must be too, or "sizes" (stored as
    # "siz") would stop matching itself
    old = Analyzer.from_config({"stopwords": False, "stem": True, "split_identifiers": True, "cjk_bigrams": True,
                                "combining_marks": True})
    assert old.tokenize("sizes caches branches") == ["siz", "cach", "branch"]
    assert Analyzer.from_config(Analyzer().config()).tokenize("sizes caches") == ["size", "cache"]
    with pytest.raises(ValueError, match="unknown revision 7"):
        Analyzer(revision=7)


def test_stemming_skips_words_with_digits_and_can_be_disabled():
    assert Analyzer().tokenize("refs v2s ids commits") == ["ref", "v2s", "ids", "commit"]  # <4 letters: kept
    assert Analyzer(stem=False).tokenize("ids commits") == ["ids", "commits"]


def test_fast_build_path_matches_reference_tokenize():
    texts = ["Error KAVS1234-E in max_connections, the files.", "", "日本語 the and ＡＢＣ", "x" * 50,
             "git-rebase --onto <newbase> HEAD~3 branches"]
    for stop in (False, True):
        an = Analyzer(stopwords=stop)
        ti = TermIds(an)
        for t in texts:
            ti.add_text(t)
        flat, lengths = ti.arrays()
        inv = {i: t for t, i in ti.vocab.items()}
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for j, t in enumerate(texts):
            assert sorted(inv[i] for i in flat[offsets[j]:offsets[j + 1]]) == sorted(an.tokenize(t))
            assert sorted(inv[i] for i in ti.ids(t)) == sorted(an.tokenize(t))
        # queries map to the same ids and drop terms the index never saw
        assert ti.query_ids("files unseenword") == [ti.vocab["file"]]
        # surface forms seen while indexing come from the build's cache, the others are analysed: both must
        # give the reference analyzer's terms, also for a TermIds made from the vocabulary alone (a loaded index)
        for q in ["the Errors in KAVS1234-E", "file FILES errors branch 日本 ａｂｃ", "max_connections of HEAD~3",
                  "unseen words only"]:
            want = [ti.vocab[t] for t in an.tokenize(q) if t in ti.vocab]
            assert ti.query_ids(q) == want
            assert TermIds(an, ti.vocab).query_ids(q) == want


def test_query_ids_equal_the_reference_analyzer_on_random_queries():
    # query_ids takes a shortcut for plain ASCII words (no identifier, apostrophe, address or language-name
    # characters): every query, plain or not, must still give the reference analyzer's terms, in order
    rng = np.random.default_rng(8)
    words = ["Files", "file", "the", "and", "commits", "KAVS1234-E", "max_connections", "git's", "don't", "C++",
             "c#", "user@example.com", "v2.4.10", "HEAD~3", "naïve", "日本語", "ＡＢＣ", "x-", "-y", "a/b", "1990",
             "Unseen", "zzq", "ids", "it's", "o'reilly", "@", "+", "#", ".", "İstanbul", "straße"]
    corpus = [" ".join(rng.choice(words, 12)) for _ in range(40)]
    for stop in (False, True):
        for stem in (True, False):
            an = Analyzer(stopwords=stop, stem=stem)
            ti = TermIds(an)
            ti.add_texts(corpus[:30])                 # the last words of the list may stay unseen
            loaded = TermIds(an, ti.vocab)           # a loaded index: vocabulary only, no surface-form cache
            for _ in range(300):
                q = " ".join(rng.choice(words, int(rng.integers(0, 6))))
                want = [ti.vocab[t] for t in an.tokenize(q) if t in ti.vocab]
                assert ti.query_ids(q) == want, q
                assert loaded.query_ids(q) == want, q


def _terms_per_text(ti):
    flat, lengths = ti.arrays()
    inv = {i: t for t, i in ti.vocab.items()}
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [sorted(inv[i] for i in flat[offsets[j]:offsets[j + 1]]) for j in range(len(lengths))]


_PIECES = ["files", "entries", "The", "max_connections", "KAVS1234-E", "core.autocrlf", "--no-ff", "a/b.", "x",
           "very_long_identifier.with-many:parts/and.more", "sixteenchars1234", "seventeenchars123", "eightchr",
           "ninechars", "is", "status", "Classes", "a--b", "-lead", "trail-", "x.y.z", "ÉTÉ", "日本語テキスト",
           "HEAD~3", "v2.0.1", "__init__", "http://example.com/a_b", "12345678901234567"]


def _random_texts(rng, n):
    chars = list("abcXYZ019-_.:/ \n\t,;!?()'\"éü日本")
    texts = []
    for _ in range(n):
        if rng.random() < 0.4:
            texts.append("".join(rng.choice(chars, rng.integers(0, 80))))
        else:
            texts.append(" ".join(str(rng.choice(_PIECES)) + str(rng.choice(["", ".", ",", "-", "_", " "]))
                                  for _ in range(rng.integers(0, 30))))
    return texts


@pytest.mark.parametrize("stopwords,stem,split", [(False, True, True), (True, False, True), (True, True, False),
                                                  (False, False, False)])
def test_bulk_build_path_matches_reference_tokenize(stopwords, stem, split, monkeypatch):
    # add_texts tokenizes ASCII texts on their bytes (ascii_terms); the regex reference decides what is right.
    # Small batches so many batches, non-ASCII texts in between and the table's growth are all exercised.
    monkeypatch.setattr("minagent.retrieval.analyzer._BATCH_BYTES", 200)
    rng = np.random.default_rng(int(stopwords) * 4 + int(stem) * 2 + int(split))
    an = Analyzer(stopwords=stopwords, stem=stem, split_identifiers=split)
    texts = _random_texts(rng, 600)
    ti = TermIds(an)
    ti.add_texts(texts)
    assert _terms_per_text(ti) == [sorted(an.tokenize(t)) for t in texts]
    assert sum(t.isascii() for t in texts) > 100 and sum(not t.isascii() for t in texts) > 100


def test_bulk_build_path_survives_key_collisions_and_table_growth(monkeypatch):
    # with the word mixer zeroed, every token is keyed by its first 8 bytes only: these collide on purpose and
    # must still get their own ids; a 4-slot table must grow many times without losing an entry
    monkeypatch.setattr("minagent.retrieval.ascii_terms._MIX", np.uint64(0))
    monkeypatch.setattr("minagent.retrieval.ascii_terms._FIRST_SLOTS", 4)
    monkeypatch.setattr("minagent.retrieval.analyzer._BATCH_BYTES", 300)    # later batches look up earlier ones
    texts = ["abcdefgh1 abcdefgh2 abcdefgh abcdefgh12345678 abcdefgh1", "abcdefgh2 zzz abcdefgh12345679"]
    texts += [f"w{i} w{i * 7} shared-{i % 5}" for i in range(300)] * 2
    an = Analyzer()
    ti = TermIds(an)
    ti.add_texts(texts)
    assert _terms_per_text(ti) == [sorted(an.tokenize(t)) for t in texts]
    colliding = ("abcdefgh1", "abcdefgh2", "abcdefgh", "abcdefgh12345678", "abcdefgh12345679")
    assert len({ti.vocab[t] for t in colliding}) == 5


def test_config_roundtrip_and_unknown_field():
    an = Analyzer(stopwords=True, stem=False)
    assert Analyzer.from_config(an.config()).config() == an.config()
    with pytest.raises(ValueError, match="unknown fields"):
        Analyzer.from_config({"stem": True, "porter": True})
    # an index saved before the combining_marks field keeps analysing queries the way it was built
    old = Analyzer.from_config({"stopwords": False, "stem": True, "split_identifiers": True, "cjk_bigrams": True})
    assert old.tokenize("हिन्दी") == ["ह", "न", "द"] and Analyzer().tokenize("हिन्दी") == ["हिन्दी"]
