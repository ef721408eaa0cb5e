"""The from-scratch encoder against HF: WordPiece ids identical to HF tokenizers, all-MiniLM-L6-v2 embeddings equal
to transformers' BertModel + mean pooling (cosine >= 0.9999) on 200 varied sentences, and an LM's mean-pooled
hidden states equal to HF's hidden_states (with padding in the batch)."""

import os
import random

import numpy as np
import pytest
import torch

from minagent.retrieval.encoder import HiddenStateEncoder, SentenceEncoder, default_encoder_dir
from minagent.retrieval.wordpiece import WordPieceTokenizer

BASE = [
    "How do I undo the last commit?",
    "git rebase --onto master next topic",
    "The quick brown fox jumps over the lazy dog.",
    "Error KAVS1234-E: the value of max_connections (512) exceeds the limit.",
    "Set core.autocrlf=true on Windows; see https://git-scm.com/docs/git-config#_variables for details.",
    "Café, naïve, résumé, façade, jalapeño, Ångström, Øresund, Straße.",
    "ΟΔΟΣ and Σίσυφος: Greek with a final sigma.",
    "Привет, как дела? Это тест кириллицы.",
    "日本語のテキストを検索します。設定ファイルを確認してください。",
    "中文分词测试：机器学习与自然语言处理。",
    "한국어 문장도 처리해야 합니다.",
    "مرحبا بالعالم، هذا اختبار.",
    "שלום עולם",
    "Emoji 😀👍🏽 and symbols ©®™ § ¶ • → ≤ ≥ ≠ ∞",
    "tabs\tand\nnewlines\r\nand   multiple     spaces",
    "zero\u200bwidth\u00adsoft\ufeffbom and a control\x07bell",
    "def f(x): return x**2 if x > 0 else -x  # python",
    "SELECT name FROM users WHERE id = 42 AND status <> 'deleted';",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "e-mail: someone@example.com, phone +1-555-0100, date 2024-03-31T12:00:00Z",
    "Version 2.39.5 (Debian 1:2.39.5-0+deb12u3) was released on 2024-05-14.",
    "ALL CAPS SENTENCE SHOUTING ABOUT GIT PUSH --FORCE",
    "a",
    "?!",
    "   leading and trailing spaces   ",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ ａｎｄ ｄｉｇｉｔｓ １２３",
    "İstanbul, ǅemal, ﬁ ligature, ½ fraction, ² superscript",
    "Mixed 日本 and English words in one 文.",
    "x" * 120 + " a word longer than one hundred characters",
    "The reflog records when the tips of branches were updated in the local repository.",
    "Hooks are programs you can place in a hooks directory to trigger actions.",
    "Bisect uses binary search to find the commit that introduced a bug.",
    "[link](http://example.org) **bold** _italic_ `code` <tag attr=\"v\">",
    "1 2 3 4 5 6 7 8 9 10 3.14159 -2.5e-10 0xFF 1,000,000",
    "C:\\Program Files\\Git\\bin\\git.exe --version",
    "The œuvre of the naïve coöperative — “quoted” ‘text’ … ellipsis",
    "Thai ภาษาไทย, Hindi हिन्दी, Tamil தமிழ்",
    "user.name and user.email must be set before committing",
    "Stash the changes in a dirty working directory away",
    "¿Dónde está la biblioteca? ¡Está allí!",
]


def sentences_200():
    """200 deterministic, varied sentences: the base set, then mixes, case changes and long truncated texts."""
    rng = random.Random(1234)
    out = list(BASE)
    while len(out) < 200:
        kind = len(out) % 16
        if kind < 4:
            out.append(" ".join(rng.sample(BASE, rng.randint(2, 4))))
        elif kind < 8:
            s = rng.choice(BASE)
            out.append(s.upper() if rng.random() < 0.5 else s.title())
        elif kind == 8:
            out.append(" ".join(rng.choice(BASE) for _ in range(rng.randint(18, 26))))  # > 256 tokens
        else:
            words = " ".join(BASE).split()
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))))
    return out


@pytest.fixture(scope="module")
def model_dir():
    try:
        return default_encoder_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_wordpiece_ids_identical_to_hf_tokenizers(model_dir):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    ours = WordPieceTokenizer.from_file(os.path.join(model_dir, "vocab.txt"))
    for s in sentences_200() + ["", "\x00\ufffd", "\ue000 private use", "𫤠 ext-E ideograph", "a" * 101]:
        assert ours.encode(s) == hf.encode(s).ids, repr(s)
    # truncation keeps [CLS] ... [SEP] within max_length like HF's truncation=True
    hf.enable_truncation(max_length=16)
    long = sentences_200()[2] * 3
    assert ours.encode(long, max_length=16) == hf.encode(long).ids



def test_wordpiece_special_tokens_in_text_match_hf_tokenizers(model_dir):
    """[CLS]/[SEP]/[PAD]/[UNK]/[MASK] written in a passage are HF added tokens: matched in the raw text (case-
    sensitive, glued or not) and encoded as their own id, as sentence-transformers' tokenizer does."""
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    ours = WordPieceTokenizer.from_file(os.path.join(model_dir, "vocab.txt"))
    for s in ["fill the [MASK] in", "a[SEP]b", "[CLS][CLS]", "[UNK] x [PAD]", "[sep] [Sep] [MASK", "日[MASK]本",
              "Straße [SEP] café"]:
        assert ours.encode(s) == hf.encode(s).ids, repr(s)
    assert ours.encode("fill the [MASK] in")[3] == ours.vocab["[MASK]"]

def hf_reference_embeddings(model_dir, texts):
    transformers = pytest.importorskip("transformers")
    tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))     # similar lengths share a batch
    out = np.zeros((len(texts), model.config.hidden_size))
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            idx = order[i:i + 32]
            batch = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = model(**batch).last_hidden_state.double()
            m = batch["attention_mask"].unsqueeze(-1).double()
            pooled = (h * m).sum(1) / m.sum(1)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def test_minilm_embeddings_match_transformers(model_dir):
    texts = sentences_200()
    ref = hf_reference_embeddings(model_dir, texts)
    enc = SentenceEncoder(model_dir)
    assert enc.max_length == 256 and enc.dim == 384
    assert sum(len(enc.tokenizer.encode(t)) > 256 for t in texts) >= 8      # truncation is exercised
    ours = enc.encode(texts, batch_size=16)
    assert ours.shape == (200, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = (ours.astype(np.float64) * ref).sum(1)
    assert cos.min() >= 0.9999, (cos.argmin(), cos.min())
    # batching/ordering does not change a text's embedding
    single = enc.encode([texts[7]], batch_size=1)
    assert float(single[0] @ ours[7]) >= 0.99999
    with pytest.raises(TypeError, match="list of texts"):
        enc.encode("not a list")
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(ValueError, match=r"max_length=513: expected 2\.\.512"):  # the position table's size
        SentenceEncoder(model_dir, max_length=513)


def test_hidden_state_encoder_matches_hf_last_hidden_state_with_padding():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    lm = transformers.LlamaForCausalLM(cfg).eval()

    class ByteTokenizer:
        pad_token_id = 0

        def encode(self, text):
            return [1 + b % 96 for b in text.encode("utf-8")]

    texts = ["short", "a much longer text that needs padding in its batch", "mid length one", "x"]
    enc = HiddenStateEncoder.from_causal_lm(lm, ByteTokenizer(), batch_size=3)
    ours = enc.encode(texts)
    with torch.no_grad():
        for i, t in enumerate(texts):           # oracle: one text at a time, no padding at all
            ids = torch.tensor([ByteTokenizer().encode(t)])
            h = lm(ids, output_hidden_states=True).hidden_states[-1][0].double()
            ref = torch.nn.functional.normalize(h.mean(0), dim=0).numpy()
            assert float(ours[i] @ ref) >= 0.99999
    with pytest.raises(ValueError, match="shape"):
        HiddenStateEncoder(lambda ids, mask: torch.zeros(ids.shape[0], 3), ByteTokenizer().encode, 8).encode(["a"])


def test_lm_encoder_on_minagent_transformer_matches_hf(tmp_path):
    """The project's own model as a dense encoder: minagent.load_model of a saved HF checkpoint, through
    forward_hidden, equals HF's mean-pooled last hidden state."""
    transformers = pytest.importorskip("transformers")
    minagent_weights = pytest.importorskip("minagent.weights")
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours_model = minagent_weights.load_model(tmp_path).eval()
    assert hasattr(ours_model, "forward_hidden")

    class ByteTokenizer:
        pad_token_id = 0

        def encode(self, text):
            return [1 + b % 96 for b in text.encode("utf-8")]

    texts = ["retrieval with an LM", "x", "a longer sentence to force padding inside the batch"]
    got = HiddenStateEncoder.from_causal_lm(ours_model, ByteTokenizer(), batch_size=3).encode(texts)
    with torch.no_grad():
        for i, t in enumerate(texts):
            h = hf(torch.tensor([ByteTokenizer().encode(t)]), output_hidden_states=True).hidden_states[-1][0]
            ref = torch.nn.functional.normalize(h.double().mean(0), dim=0).numpy()
            assert float(got[i] @ ref) >= 0.9999


def test_batches_cap_padded_tokens_and_cover_every_text_once():
    # hand-checked: longest first; a batch holds <= batch_size rows and <= max_tokens padded tokens (rows x its
    # longest text), except that a single text longer than the cap still gets a batch of its own
    from minagent.retrieval.encoder import _batches_by_length
    lengths = [5, 300, 40, 40, 260, 1, 40, 100]
    batches = [b.tolist() for b in _batches_by_length(lengths, batch_size=3, max_tokens=256)]
    assert batches == [[1], [4], [7, 2], [3, 6, 0], [5]]
    assert [b.tolist() for b in _batches_by_length(lengths, batch_size=3)] == [[1, 4, 7], [2, 3, 6], [0, 5]]


def test_lm_encoder_reads_special_token_text_in_a_passage_as_text(tmp_path):
    """A manual about chat models may write "<|im_end|>": the LM encoder embedded it as the end-of-turn token.
    Oracle: HF tokenizers with encode_special_tokens=True (special tokens in the text split as plain text)."""
    import json
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    import tokenizer_tiny as tiny
    from tokenizers import Tokenizer

    from minagent.tokenizer import load_tokenizer
    spec = tiny.qwen_style()
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    ours = load_tokenizer(tmp_path)
    hf = Tokenizer.from_str(json.dumps(spec))
    hf.encode_special_tokens = True
    text = "Each turn ends with <|im_end|> and <mask> marks a gap."

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(4)
            self.seen = []

        def forward(self, ids):
            self.seen.append(ids)
            return self.norm(torch.zeros(*ids.shape, 4))

    model = Recorder()
    enc = HiddenStateEncoder.from_causal_lm(model, ours, max_length=512)
    enc.encode([text])
    assert model.seen[0][0].tolist() == hf.encode(text, add_special_tokens=False).ids
