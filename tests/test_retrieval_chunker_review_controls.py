"""A passage never starts inside "\\r\\n", also when a combining mark follows it.

Oracle: UAX #29 as the `regex` module's \\X implements it (and by hand: GB3 keeps CR LF together, GB4 breaks after
any control, so in "\\r\\n\\u0301" the clusters are "\\r\\n" and "\\u0301"). The chunker read the mark as joined
to the "\\n" before it, so trimming a passage's leading white space stopped between "\\r" and "\\n"."""
import regex

from minagent.retrieval.chunker import _joins, chunk_document
from minagent.retrieval.documents import Document


def _cluster_starts(text):
    return {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}


def test_a_mark_after_a_line_break_is_a_cluster_of_its_own():
    text = "ab\r\n\u0301c\t\u0301d\n\u0301"
    assert [i for i in range(1, len(text)) if not _joins(text, i)] == sorted(_cluster_starts(text) - {0, len(text)})


def test_passages_start_and_end_on_cluster_boundaries_around_crlf_and_a_mark():
    words = " ".join(["word"] * 9)
    for pad in range(0, 12):
        text = "x" * pad + words + "\n\r\n\u0301 " + words + "\r\n\u0301" + words
        bounds = _cluster_starts(text)
        for p in chunk_document(Document("x.txt", "", text), max_chars=50, overlap=0):
            assert p.start in bounds and p.end in bounds, (pad, p.start, p.end, text[p.start - 2:p.start + 2])
