"""Surface tokens of ASCII texts found with numpy on raw bytes: the index build's fast path.

Why: building a BM25 index spends most of its time in Python objects, not in BM25. For 100k passages (10M
tokens) the regex makes 10M small str objects (~4 s) and the vocabulary lookups hash each one (~3 s). Most
manual text is ASCII, and for ASCII the analyzer's tokens have a simple shape that numpy finds in bulk:

- a *run* is a maximal stretch of [a-z0-9] in the lowercased text;
- an *identifier* is runs joined by single `-_.:/` characters (`max_connections`, `kavs1234-e`); the analyzer
  keeps it whole and, with split_identifiers, also its runs.

Revision 3 of the analysis rules (`joined_words`, see analyzer.py) adds, on top of those:

- a possessive `'s` after a run, not itself joined on to more text, is blanked before anything else is found;
- an *apostrophe word* is runs joined by single `'` (`don't`, `o'reilly`), kept whole (its runs are runs anyway);
- an *address* is runs joined by single `-_.:/@` with at least one `@` (`user@example.com`), kept whole;
- a *language name* is a run ending in a letter, then `++` not followed by a letter, `+` or `#` (`c++`, `g++`,
  `c++11` gives `c++`), or `#` not followed by a letter, digit, `+` or `#` (`c#`, `f#`; not `issue#12`).

A token of up to 16 bytes is then identified by two little-endian 64-bit words read straight from the buffer
(bytes past its end masked off): exact, no strings. A hash table held in numpy arrays maps the word pairs to
term ids, probed for all tokens of a chunk at once; only tokens it has not seen yet become str objects (to be
analysed). Longer tokens take the slow path (a str and a dict lookup, as in `TermIds.add_text`). A test checks
this path against `Analyzer.tokenize` text by text.
"""

import numpy as np

_RUN_BYTE = np.zeros(256, bool)
_RUN_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", np.uint8)] = True
_CONNECTOR_BYTE = np.zeros(256, bool)
_CONNECTOR_BYTE[np.frombuffer(b"-_.:/", np.uint8)] = True
_APOSTROPHE, _AT, _PLUS, _HASH, _S, _SPACE = b"'@+#s "
_ADDRESS_BYTE = _CONNECTOR_BYTE.copy()                 # what joins the runs of an address
_ADDRESS_BYTE[_AT] = True
_JOINER_BYTE = _ADDRESS_BYTE.copy()                    # what joins a run to the next in any token
_JOINER_BYTE[_APOSTROPHE] = True
_LETTER_BYTE = np.zeros(256, bool)
_LETTER_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)] = True
_AFTER_PLUSES_STOPS = _LETTER_BYTE.copy()             # "c++x" and "c+++" are no names; "c++11" is "c++"
_AFTER_PLUSES_STOPS[[_PLUS, _HASH]] = True
_AFTER_HASH_STOPS = _RUN_BYTE.copy()                  # "c#x", "issue#12", "c#+" are no names
_AFTER_HASH_STOPS[[_PLUS, _HASH]] = True
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_MIX = np.uint64(0x9E3779B97F4A7C15)          # odd multipliers: mix the two words into a table slot
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_WIDE = 16                                     # tokens longer than this take the slow path
_FIRST_SLOTS = 1 << 16                         # hash table size to start with (doubles as it fills)


def surface_spans(buf, split_identifiers=True, joined_words=False):
    """(starts, ends) byte offsets of the surface tokens in `buf` (uint8, lowercased ASCII): every run, then
    every identifier. Without split_identifiers the runs inside identifiers are left out. joined_words
    (revision 3): possessives are dropped first, and apostrophe words, addresses and language names follow."""
    if joined_words:
        buf = _without_possessives(buf)
    starts, ends = _runs(buf)
    if len(starts) < 2 and not joined_words:
        return starts, ends
    adjacent = starts[1:] == ends[:-1] + 1                        # one byte between run i and run i+1
    gap = buf[ends[:-1]]                                          # (the byte after run i: a joiner if adjacent)
    connected = adjacent & _CONNECTOR_BYTE[gap]                   # run i and run i+1 are in one identifier
    id_first, id_last = _chains(np.flatnonzero(connected))
    out_starts, out_ends = [starts, starts[id_first]], [ends, ends[id_last]]
    if not split_identifiers and len(id_first):
        inside = np.zeros(len(starts) + 1, np.int8)
        inside[id_first] += 1
        inside[id_last + 1] -= 1
        alone = np.cumsum(inside[:-1]) == 0
        out_starts[0], out_ends[0] = starts[alone], ends[alone]
    if joined_words:
        for first, last in (_chains(np.flatnonzero(adjacent & (gap == _APOSTROPHE))),     # don't, o'reilly
                            _addresses(adjacent & (gap == _AT), id_first, id_last)):       # user@example.com
            out_starts.append(starts[first])
            out_ends.append(ends[last])
        more_starts, more_ends = _language_names(buf, starts, ends, gap)                # c++, c#
        out_starts.append(more_starts)
        out_ends.append(more_ends)
    if len(out_starts) == 2 and not len(out_starts[1]):
        return out_starts[0], out_ends[0]
    return np.concatenate(out_starts), np.concatenate(out_ends)


def _runs(buf):
    """(starts, ends) of the maximal [a-z0-9] runs of `buf`."""
    is_run = _RUN_BYTE[buf]
    edges = np.flatnonzero(is_run[1:] != is_run[:-1]) + 1         # where runs begin and end, alternately
    if len(buf) and is_run[0]:
        edges = np.concatenate([[0], edges])
    if len(buf) and is_run[-1]:
        edges = np.concatenate([edges, [len(buf)]])
    return edges[0::2], edges[1::2]


def _chains(links):
    """(first, last) run indexes of each maximal chain of runs, from the sorted indexes i of the links that
    join run i to run i+1. Costs the number of links, not of runs."""
    if not len(links):
        return links, links
    breaks = np.flatnonzero(np.diff(links) != 1) + 1             # where a new chain starts among the links
    first = links[np.concatenate([[0], breaks])]
    last = links[np.concatenate([breaks - 1, [len(links) - 1]])] + 1
    return first, last


def _without_possessives(buf):
    """`buf` with each possessive "'s" blanked: after a run byte, and neither followed by a run byte nor by a
    joiner (-_.:/'@) and a run byte, so "git's" and "core.autocrlf's" lose it and "it's.x" keeps it. A copy
    only where there is one."""
    quote = np.flatnonzero(buf == _APOSTROPHE)
    if not len(quote):
        return buf
    quote = quote[(quote > 0) & (_byte_at(buf, quote + 1) == _S)]
    after = _byte_at(buf, quote + 2)
    quote = quote[_RUN_BYTE[buf[quote - 1]] & ~_RUN_BYTE[after]
                  & ~(_JOINER_BYTE[after] & _RUN_BYTE[_byte_at(buf, quote + 3)])]
    if not len(quote):
        return buf
    buf = buf.copy()
    buf[quote] = buf[quote + 1] = _SPACE
    return buf


def _addresses(at, id_first, id_last):
    """(first, last) runs of each chain joined by -_.:/ or @ that holds at least one @ ("user@example.com"),
    from the @ links and the identifiers' (first, last) runs: each @ joins the identifier (or lone run) before it
    to the one after it, and pieces that share an identifier ("a@b.c@d") are one address."""
    at_links = np.flatnonzero(at)
    if not len(at_links):
        return at_links, at_links
    first = _identifier_around(at_links, id_first, id_last)[0]
    last = _identifier_around(at_links + 1, id_first, id_last)[1]
    starts_address = np.flatnonzero(np.concatenate([[True], first[1:] > last[:-1]]))
    return first[starts_address], last[np.append(starts_address[1:] - 1, len(last) - 1)]


def _identifier_around(runs, id_first, id_last):
    """(first, last) run of the identifier holding each run (sorted run indexes), the run alone if none does."""
    if not len(id_first):
        return runs, runs
    k = np.maximum(np.searchsorted(id_first, runs, side="right") - 1, 0)   # the last identifier starting here
    inside = (id_first[k] <= runs) & (id_last[k] >= runs)
    return np.where(inside, id_first[k], runs), np.where(inside, id_last[k], runs)


def _language_names(buf, starts, ends, gap):
    """Spans of a run ending in a letter plus its "++" or "#" suffix: "c++", "g++", "c#", "f#". `gap`: the byte
    after each run but the last."""
    maybe = np.flatnonzero((gap == _PLUS) | (gap == _HASH))      # few: look closer at these only
    if len(ends) and _byte_at(buf, ends[-1:])[0] in (_PLUS, _HASH):
        maybe = np.append(maybe, len(ends) - 1)
    if not len(maybe):
        return maybe, maybe
    starts, ends = starts[maybe], ends[maybe]
    letter_end = _LETTER_BYTE[buf[ends - 1]]
    suffix, second, third = _byte_at(buf, ends), _byte_at(buf, ends + 1), _byte_at(buf, ends + 2)
    pluses = letter_end & (suffix == _PLUS) & (second == _PLUS) & ~_AFTER_PLUSES_STOPS[third]
    sharp = letter_end & (suffix == _HASH) & ~_AFTER_HASH_STOPS[second]
    return np.concatenate([starts[pluses], starts[sharp]]), np.concatenate([ends[pluses] + 2, ends[sharp] + 1])


def _byte_at(buf, at):
    """buf[at], 0 (no byte of any class) where `at` is past its end."""
    return np.where(at < len(buf), buf[np.minimum(at, len(buf) - 1)], 0).astype(np.uint8)


def token_words(raw, starts, lengths):
    """The two 64-bit words holding each token's first 16 bytes (the rest zero; tokens never contain a zero
    byte, so equal words mean equal tokens of up to 16 bytes)."""
    padded = raw + bytes(16)
    at = np.ndarray((len(raw) + 8,), dtype="<u8", buffer=padded, strides=(1,))   # at[i]: the 8 bytes from i
    w1 = at[starts] & _LOW_BYTES[np.minimum(lengths, 8)]
    w2 = at[starts + 8] & _LOW_BYTES[np.clip(lengths - 8, 0, 8)]
    return w1, w2


class PackedSurfaceIds:
    """(word1, word2) of a short surface token -> term id: an open-addressing hash table in numpy arrays,
    probed for a whole chunk of tokens at once (linear probing, load kept under 1/2, so a probe round or two).

    Slots store both words, so a match is exact. `surface_ids` is the TermIds' str -> id dict (its __missing__
    analyses a new surface form), consulted once per distinct token the table has not seen."""

    def __init__(self, surface_ids):
        self.surface_ids = surface_ids
        self.count = 0
        self._allocate(_FIRST_SLOTS)

    def _allocate(self, size):
        self.used = np.zeros(size, bool)
        self.w1 = np.zeros(size, np.uint64)
        self.w2 = np.zeros(size, np.uint64)
        self.ids = np.zeros(size, np.int64)

    def _slots(self, w1, w2):
        bits = np.uint64(64 - (len(self.used).bit_length() - 1))
        return (((w1 ^ (w2 * _MIX)) * _MIX2) >> bits).astype(np.int64)

    def lookup(self, w1, w2):
        """Term id per token; -2 where the table has no entry."""
        out = np.full(len(w1), -2, np.int64)
        slots, pending, mask = self._slots(w1, w2), np.arange(len(w1)), len(self.used) - 1
        while len(pending):
            s = slots[pending]
            used = self.used[s]
            match = used & (self.w1[s] == w1[pending]) & (self.w2[s] == w2[pending])
            out[pending[match]] = self.ids[s[match]]
            probe_on = used & ~match                      # slot taken by another token: try the next one
            pending = pending[probe_on]
            slots[pending] = (s[probe_on] + 1) & mask
        return out

    def insert(self, w1, w2, ids):
        """Add distinct tokens that are not in the table yet."""
        if 2 * (self.count + len(w1)) > len(self.used):
            old = self.used.copy(), self.w1.copy(), self.w2.copy(), self.ids.copy()
            size = len(self.used)
            while 2 * (self.count + len(w1)) > size:
                size *= 2
            self._allocate(size)
            self.count = 0
            self.insert(old[1][old[0]], old[2][old[0]], old[3][old[0]])
        slots, pending, mask = self._slots(w1, w2), np.arange(len(w1)), len(self.used) - 1
        while len(pending):
            s = slots[pending]
            free = np.flatnonzero(~self.used[s])
            _, one_each = np.unique(s[free], return_index=True)   # one token per free slot this round
            won = pending[free[one_each]]
            self.used[slots[won]] = True
            self.w1[slots[won]], self.w2[slots[won]], self.ids[slots[won]] = w1[won], w2[won], ids[won]
            pending = np.setdiff1d(pending, won, assume_unique=True)
            slots[pending] = (slots[pending] + 1) & mask
        self.count += len(w1)

    def chunk_ids(self, text, split_identifiers, joined_words=False):
        """(term id per surface token, byte offset of each token) for one lowercased ASCII text; the runs come
        first, in text order, then the identifiers and the revision-3 tokens (surface_spans)."""
        raw = text.encode("ascii")
        starts, ends = surface_spans(np.frombuffer(raw, np.uint8), split_identifiers, joined_words)
        lengths = ends - starts
        short = lengths <= _WIDE
        if short.all():
            short_at, long_at = slice(None), np.zeros(0, np.int64)
        else:
            short_at, long_at = np.flatnonzero(short), np.flatnonzero(~short)
        w1, w2 = token_words(raw, starts[short_at], lengths[short_at])
        found = self.lookup(w1, w2)
        miss = np.flatnonzero(found == -2)
        if len(miss):
            found[miss] = self._add_new(w1[miss], w2[miss], raw, starts[short_at][miss], ends[short_at][miss])
        ids = np.empty(len(starts), np.int64)
        ids[short_at] = found
        if len(long_at):
            lookup = self.surface_ids.__getitem__
            ids[long_at] = [lookup(raw[a:b].decode("ascii"))
                            for a, b in zip(starts[long_at].tolist(), ends[long_at].tolist())]
        return ids, starts

    def _add_new(self, w1, w2, raw, starts, ends):
        """Ids of tokens the table lacks (analysed by surface string, once per distinct token), then stored."""
        _, first, inverse = np.unique(w1 ^ (w2 * _MIX), return_index=True, return_inverse=True)
        if not ((w1[first][inverse] == w1) & (w2[first][inverse] == w2)).all():
            # two different tokens share a mixed key (astronomically rare): group them by both words instead
            groups = {}
            inverse = np.array([groups.setdefault(pair, len(groups)) for pair in zip(w1.tolist(), w2.tolist())])
            first = np.unique(inverse, return_index=True)[1]
        by_position = np.argsort(first)           # new terms get ids in order of appearance, as in add_text
        ids = np.empty(len(first), np.int64)
        lookup = self.surface_ids.__getitem__
        ids[by_position] = [lookup(raw[a:b].decode("ascii")) for a, b in
                            zip(starts[first[by_position]].tolist(), ends[first[by_position]].tolist())]
        self.insert(w1[first], w2[first], ids)
        return ids[inverse]
