"""The NFC/NFD/NFKC/NFKD normalizers' quick path (text Python already finds normalized is returned as is) agrees
with tokenizers on short texts dense in the code points HF's older tables do not know, marks of every order and
compositions (Dives Akuru 11935 + 11930). Oracle: tokenizers' own normalizers."""
import random

import pytest
from tokenizers import normalizers

from minagent.tokenizer.normalizers import build_normalizer
from minagent.tokenizer.unicode_additions import unknown_to_hf_normalizers

POOL = ([chr(c) for lo, hi in unknown_to_hf_normalizers() for c in range(lo, hi + 1)]
        + list("ae\u0301\u0300\u0334\u0327\u0323\u0100\u00c5\u1100\u1161\u11a8\uac00\ufb01\u2460")
        + ["\U00011935", "\U00011930", "\u1dfc", "\u1acd"])


@pytest.mark.parametrize("form", ["NFC", "NFD", "NFKC", "NFKD"])
def test_normalizer_matches_tokenizers_on_mixed_marks(form):
    ours, theirs = build_normalizer({"type": form}), getattr(normalizers, form)()
    rng = random.Random(form)
    texts = ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 6))) for _ in range(3000)]
    assert [t for t in texts if ours(t) != theirs.normalize_str(t)] == []
