"""SentenceEncoder against sentence-transformers itself (max_seq_length 256 truncation, empty and whitespace-only
texts, texts far over 512 tokens) and batch-padding invariance."""

import numpy as np
import pytest

from minagent.retrieval.encoder import SentenceEncoder, default_encoder_dir

EDGE_TEXTS = [
    "", " ", "  \t\n  ", "\u200b\ufeff", "\x00", "[PAD] [PAD]", "[SEP]", "😀", "İstanbul ıI",
    "word " * 700,                                     # 700 word tokens: past the 512-position table
    "日本語" * 300,                                     # 900 CJK tokens
    "x" * 500,                                         # one over-long word: a single [UNK]
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="module")
def encoder():
    try:
        return SentenceEncoder(default_encoder_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_edge_texts_match_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(encoder.model_dir, device="cpu")
    assert ref.max_seq_length == encoder.max_length == 256
    want = ref.encode(EDGE_TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    got = encoder.encode(EDGE_TEXTS, batch_size=4)
    cos = (got.astype(np.float64) * want.astype(np.float64)).sum(1)
    assert cos.min() >= 0.9999, [(EDGE_TEXTS[i][:20], cos[i]) for i in np.argsort(cos)[:3]]


def test_embedding_does_not_depend_on_its_batch(encoder):
    """A text alone, and padded inside batches of other lengths and sizes: same vector within fp32 noise."""
    texts = ["short one", "a considerably longer sentence about rebasing a topic branch onto master " * 3,
             "mid-length text on git stash", "x", "word " * 120]
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    for batch_size in (2, 5):
        together = encoder.encode(texts, batch_size=batch_size)
        np.testing.assert_allclose(together, alone, atol=2e-6)
    mixed = encoder.encode(texts[:1] + texts[1:] * 2, batch_size=8)     # duplicates in one batch
    np.testing.assert_allclose(mixed[0], alone[0], atol=2e-6)
