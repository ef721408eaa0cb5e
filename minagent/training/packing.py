"""Fixed-length training rows: several documents packed into one row, kept apart by document ids.

A row holds `length` input tokens and, for each, the token it must predict (its *target*, -100 when the
position is not trained). Packing wastes no compute on padding, but documents must not see each other: every
position carries the id of its document, attention is restricted to equal ids, and RoPE positions restart at 0
where a document starts, so a packed document is computed exactly as if it were alone.

Two ways to fill rows:
  - `pack_stream` (CPT): the corpus is one token stream (EOS after each document) cut into consecutive rows; a
    document may continue in the next row. The target of a document's last token (its EOS) would be the next
    document's first token, which nothing can predict: it is masked.
  - `pack_examples` (SFT): whole examples (a trajectory each, with a per-token trainable flag) placed into rows
    first-fit by decreasing length; an example is never split. The rest of a row is padding (its own doc id,
    no targets).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

IGNORE = -100


@dataclass
class PackedRows:
    tokens: np.ndarray     # int64 [N, L] input ids
    targets: np.ndarray    # int64 [N, L] next-token targets, IGNORE where not trained
    doc_ids: np.ndarray    # int64 [N, L] document id of each position (unique within a row)
    positions: np.ndarray  # int64 [N, L] RoPE position: offset within the document's run in this row

    def __len__(self):
        return len(self.tokens)

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def fingerprint(self) -> str:
        """Row count, length and a hash of the rows' tokens, targets and document ids: what a resumed run must
        share with the run that wrote the checkpoint (the data path alone misses a file edited in between)."""
        h = hashlib.sha256()
        for a in (self.tokens, self.targets, self.doc_ids):
            h.update(np.ascontiguousarray(a, dtype=np.int64))
        return f"{len(self)} rows x {self.length} tokens, sha256 {h.hexdigest()[:16]}"

    def select(self, rows) -> "PackedRows":
        rows = np.asarray(rows, dtype=np.int64)
        return PackedRows(self.tokens[rows], self.targets[rows], self.doc_ids[rows], self.positions[rows])


def _positions(doc_ids: np.ndarray) -> np.ndarray:
    """Offset of every position from the start of its run of equal doc ids, per row."""
    N, L = doc_ids.shape
    idx = np.broadcast_to(np.arange(L), (N, L))
    starts = np.ones((N, L), dtype=bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    return (idx - run_start).astype(np.int64)


def pack_stream(stream: np.ndarray, doc_of_token: np.ndarray, length: int, pad_id: int) -> PackedRows:
    """Cut a token stream into rows of `length` inputs; row k predicts stream[kL+1 : kL+L+1].

    doc_of_token: the document index of every stream token. The final partial row is padded, not dropped, so a
    small corpus still trains on every token."""
    stream = np.asarray(stream, dtype=np.int64)
    docs = np.asarray(doc_of_token, dtype=np.int64)
    n_rows = max(1, -(-(len(stream) - 1) // length))
    total = n_rows * length + 1
    pad = total - len(stream)
    s = np.concatenate([stream, np.full(pad, pad_id, dtype=np.int64)])
    # padding gets its own document id (-1 then made unique per row below) and is never a target
    d = np.concatenate([docs, np.full(pad, -1, dtype=np.int64)])
    tokens = s[:-1].reshape(n_rows, length)
    targets = s[1:].reshape(n_rows, length).copy()
    in_doc, next_doc = d[:-1].reshape(n_rows, length), d[1:].reshape(n_rows, length)
    targets[(in_doc != next_doc) | (next_doc < 0)] = IGNORE
    doc_ids = np.where(in_doc < 0, docs.max(initial=0) + 1, in_doc)
    return PackedRows(tokens, targets, doc_ids, _positions(doc_ids))


def example_targets(ids: list[int], trainable: list[bool]) -> np.ndarray:
    """targets[i] = ids[i+1] where token i+1 is trained, else IGNORE; the last token predicts nothing."""
    ids_a = np.asarray(ids, dtype=np.int64)
    t = np.full(len(ids_a), IGNORE, dtype=np.int64)
    train_next = np.asarray(trainable[1:], dtype=bool)
    t[:-1][train_next] = ids_a[1:][train_next]
    return t


def pack_examples(examples: list[tuple[list[int], list[bool]]], length: int, pad_id: int) -> PackedRows:
    """First-fit-decreasing packing of whole examples (each at most `length` tokens) into rows."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i][0]), i))
    rows: list[list[int]] = []   # example indices per row
    free: list[int] = []
    for i in order:
        n = len(examples[i][0])
        if n > length:
            raise ValueError(f"example {i} has {n} tokens, more than the row length {length}")
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(length - n)
    N = len(rows)
    tokens = np.full((N, length), pad_id, dtype=np.int64)
    targets = np.full((N, length), IGNORE, dtype=np.int64)
    doc_ids = np.zeros((N, length), dtype=np.int64)
    for r, members in enumerate(rows):
        at = 0
        for j, i in enumerate(members):
            ids, trainable = examples[i]
            tokens[r, at:at + len(ids)] = ids
            targets[r, at:at + len(ids)] = example_targets(ids, trainable)
            doc_ids[r, at:at + len(ids)] = j
            at += len(ids)
        doc_ids[r, at:] = len(members)  # padding: one more "document" that nothing attends into
    return PackedRows(tokens, targets, doc_ids, _positions(doc_ids))
