"""The BPE model: vocabulary + ranked merges -> token ids for one pre-tokenized piece ("word").

A word starts as one symbol per character (for byte-level BPE: one per byte, spelled with GPT-2 characters).
Then, exactly like HF tokenizers (models/bpe/word.rs), the adjacent pair with the lowest merge rank is merged,
leftmost first on ties, until no adjacent pair has a merge. A heap of candidate pairs over a linked list of
symbols makes a long word (a run of Japanese, a long whitespace run) cost O(n log n), not O(n^2).
Results are cached per word: real text repeats words, so most pieces never reach the merge loop.

Merges come in two spellings in tokenizer.json: "a b" strings (older files, e.g. Qwen2.5) and ["a", "b"]
pairs (tokenizers >= 0.20). Both are parsed; a merges list that parses to nothing while non-empty is an error,
never a silent "no merges" (a bug another loader had).
"""
from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Callable

from .errors import SpecError

_CACHE_LIMIT = 200_000  # words; the cache is simply cleared when full (text rarely has that many distinct words)


def parse_merges(raw, where: str = "model.merges") -> list[tuple[str, str]]:
    """Merges from tokenizer.json in either spelling -> list of (left, right)."""
    if not isinstance(raw, list):
        raise SpecError(where, f"expected a list, got {type(raw).__name__}")
    merges = []
    append = merges.append
    for i, item in enumerate(raw):
        kind = type(item)
        parts = item.split(" ") if kind is str else item if kind is list else None
        if parts is None or len(parts) != 2 or type(parts[0]) is not str or type(parts[1]) is not str \
                or not parts[0] or not parts[1]:
            raise SpecError(f"{where}[{i}]", f"expected \"a b\" or [\"a\", \"b\"], got {item!r:.60}")
        append((parts[0], parts[1]))
    return merges


class BPE:
    """vocab: token string -> id. merges: ordered pairs; earlier = higher priority."""

    def __init__(self, vocab: dict[str, int], merges: list, *, unk_token: str | None = None,
                 byte_fallback: bool = False, fuse_unk: bool = False, ignore_merges: bool = False):
        """`merges` as found in tokenizer.json: "a b" strings and/or ["a", "b"] pairs, highest priority first."""
        self.vocab = vocab
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.unk_id = vocab.get(unk_token) if unk_token is not None else None
        if unk_token is not None and self.unk_id is None:
            raise SpecError("model.unk_token", f"{unk_token!r} is not in model.vocab")
        self.byte_fallback, self.fuse_unk, self.ignore_merges = byte_fallback, fuse_unk, ignore_merges
        self.merges = self._rank_merges(vocab, merges)
        self._cache: dict[str, tuple[int, ...]] = {}

    @staticmethod
    def _rank_merges(vocab: dict[str, int], raw) -> dict[tuple[int, int], tuple[int, int]]:
        """(left id, right id) -> (rank, merged id). A later duplicate overwrites an earlier one, as in HF.
        Qwen has ~150k merges, so the loop is kept bare; on any problem the validating parser names the entry."""
        table: dict[tuple[int, int], tuple[int, int]] = {}
        try:
            for rank, item in enumerate(raw):
                left, right = item.split(" ") if type(item) is str else item
                table[vocab[left], vocab[right]] = (rank, vocab[left + right])
        except (ValueError, TypeError, KeyError, AttributeError):
            for rank, (left, right) in enumerate(parse_merges(raw)):
                for token in (left, right, left + right):
                    if token not in vocab:
                        raise SpecError(f"model.merges[{rank}]", f"{left!r} {right!r} uses {token!r}, "
                                                                 "which is not in model.vocab") from None
            raise
        return table

    def encode_word(self, word: str, spell: Callable[[str], str] | None = None) -> tuple[int, ...]:
        """Token ids of one pre-tokenized piece. `spell` rewrites the piece into vocabulary characters (byte-level:
        UTF-8 bytes -> GPT-2 characters) and runs only on a cache miss, so a repeated word costs one dict lookup."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        symbols = spell(word) if spell is not None else word
        if self.ignore_merges and symbols in self.vocab:  # Llama-3: a word that is a token is taken whole
            ids = (self.vocab[symbols],)
        else:
            ids = tuple(self._merge(self._initial_symbols(symbols)))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _initial_symbols(self, word: str) -> list[int]:
        vocab, out = self.vocab, []
        for ch in word:
            tid = vocab.get(ch)
            if tid is not None:
                out.append(tid)
            elif self.byte_fallback and all(f"<0x{b:02X}>" in vocab for b in ch.encode("utf-8")):
                out.extend(vocab[f"<0x{b:02X}>"] for b in ch.encode("utf-8"))
            elif self.unk_id is not None:
                if not (self.fuse_unk and out and out[-1] == self.unk_id):
                    out.append(self.unk_id)
            # else: HF drops a character it cannot spell (never happens with a full byte alphabet)
        return out

    def _merge(self, sym: list[int]) -> list[int]:
        n, merges = len(sym), self.merges
        if n < 2:
            return sym
        if n == 2:
            hit = merges.get((sym[0], sym[1]))
            return [hit[1]] if hit else sym
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for pos in range(n - 1):
            hit = merges.get((sym[pos], sym[pos + 1]))
            if hit:
                heap.append((hit[0], pos, hit[1]))
        heapify(heap)
        alive = [True] * n
        while heap:
            _, pos, new_id = heappop(heap)
            right = nxt[pos]
            if not alive[pos] or right < 0:
                continue
            hit = merges.get((sym[pos], sym[right]))
            if hit is None or hit[1] != new_id:  # stale entry: a neighbour has changed since it was pushed
                continue
            sym[pos], alive[right] = new_id, False
            after = nxt[right]
            nxt[pos] = after
            if after >= 0:
                prv[after] = pos
                hit = merges.get((new_id, sym[after]))
                if hit:
                    heappush(heap, (hit[0], pos, hit[1]))
            before = prv[pos]
            if before >= 0:
                hit = merges.get((sym[before], new_id))
                if hit:
                    heappush(heap, (hit[0], before, hit[1]))
        return [s for s, keep in zip(sym, alive) if keep]
