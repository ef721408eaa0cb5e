"""WordPiece on adversarial Unicode against HF tokenizers (what sentence-transformers runs): every assigned code
point, and hand-picked hard cases under each casing option."""

import os
import unicodedata

import pytest

from minagent.retrieval.wordpiece import WordPieceTokenizer
from test_retrieval_encoder import model_dir  # noqa: F401  (the MiniLM directory, or a skip)

tokenizers = pytest.importorskip("tokenizers")

HARD_CASES = [
    "İstanbul ıI", "Café NAÏVE", "ΣΑΣ σας ΌΣΟΣ", "Straße ẞ", "ǅemal Ǆ", "e\u0301 \u0301a", "日本語 テスト 한국어",
    "ﬁ ½ ² Ｆｕｌｌ", "K\u212a Å Ω", "x" * 100, "x" * 101, "É" * 101, "A\u0300" * 60, "\u00a0nbsp\u00a0 a\u3000b",
    "😀👍🏽 👨\u200d👩\u200d👧", "zero\u200bwidth\u200c\u200d\u2060\ufeff", "a\x00b\ufffdc\x07d\x85e", "\u2028l\u2029p",
    "¡¿«»„“” 、。「」 $^`~|<>+=", "§¶†‡ ©®™", "[MASK] [mask] a[SEP]b", "\t\x0b\x0c\x1c\x1f", "", "   ",
    "\ue000 private \U000f0000", "\U0002b820 \U0002b920 ext-E", "𝐀𝐁 Ꭰꭰ ɐʁ",
]




def test_every_code_point_classified_as_hf_tokenizers(model_dir):
    """Each code point between letters, so whether it is dropped (control), stripped (accent), split off
    (punctuation) or kept shows in the ids. HF's character classes are Unicode 8.0's: characters assigned since
    (e.g. U+061D ARABIC END OF TEXT MARK, U+1CF00 Znamenny marks) are ordinary characters to it, and U+166D,
    U+111C9, U+1734 changed category. Other letters (Lo), private use and unassigned code points have no class
    that changed; they are left out to keep the test fast."""
    hf = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    ours = WordPieceTokenizer.from_file(os.path.join(model_dir, "vocab.txt"))
    cps = [c for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Co", "Cs", "Lo")]
    texts = ["ab" + chr(c) + "ab" for c in cps]
    expected = hf.encode_batch(texts, add_special_tokens=False)
    wrong = [(hex(c), ours.encode(t, add_special_tokens=False), e.ids)
             for c, t, e in zip(cps, texts, expected) if ours.encode(t, add_special_tokens=False) != e.ids]
    assert not wrong, (len(wrong), wrong[:10])


@pytest.mark.parametrize("lowercase,strip_accents", [(True, None), (True, False), (False, None), (False, True)])
def test_hard_cases_under_each_casing_option(model_dir, lowercase, strip_accents):
    vocab = os.path.join(model_dir, "vocab.txt")
    hf = tokenizers.BertWordPieceTokenizer(vocab, lowercase=lowercase, strip_accents=strip_accents)
    ours = WordPieceTokenizer.from_file(vocab, lowercase=lowercase, strip_accents=strip_accents)
    for s in HARD_CASES:
        assert ours.encode(s) == hf.encode(s).ids, repr(s)
