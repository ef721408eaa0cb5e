"""Unicode tables: where Python's `unicodedata` and HF tokenizers' own tables disagree, our ids must still be HF's.

Found by fuzzing encode/decode against `tokenizers` with random text from every Unicode category (a few thousand
strings per tokenizer shape: SmolLM2's real tokenizer, GPT-2's ByteLevel regex, Qwen2 and Llama-3 layouts, each also
with added tokens carrying every flag). The only differences left were Unicode versions:
  - Oniguruma (pre-tokenizer regexes) and the regex crate (single_word) know Unicode 16.0, Rust's char::is_numeric
    (Digits) 17.0, while Python 3.11's unicodedata is 14.0 and calls the newer code points unassigned;
  - HF's NFC/NFD/NFKC/NFKD run on Unicode 9.0 tables, so marks added later are not reordered or composed there.
Every test measures the oracle over whole sets of code points rather than a few examples.
"""
from __future__ import annotations

import json
import sys
import unicodedata
from functools import lru_cache

import pytest
from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

import tokenizer_assets as assets
import tokenizer_tiny as tiny
from minagent.tokenizer.bpe_tokenizer import BPETokenizer
from minagent.tokenizer.normalizers import build_normalizer
from minagent.tokenizer.pretokenizers import GPT2_PATTERN, build_pretokenizer, run_pretokenizer
from test_tokenizer import SMOLLM2_PRETOKENIZER

CATEGORIES = ["L", "M", "N", "P", "S", "Z", "C", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No",
              "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co"]


@lru_cache(maxsize=1)
def python_unassigned() -> str:
    """Every code point the running Python's unicodedata calls Cn in the planes Unicode assigns in (0-3 and 14;
    4-13 are empty and 15-16 private use), as one string."""
    planes = [*range(0x40000), *range(0xE0000, 0xF0000)]
    return "".join(chr(cp) for cp in planes if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) == "Cn")


@lru_cache(maxsize=1)
def newer_code_points() -> str:
    """Those of python_unassigned() that Oniguruma, in HF tokenizers, knows."""
    unassigned = pre_tokenizers.Split(Regex(r"\p{Cn}"), behavior="removed")
    return "".join(p for p, _ in unassigned.pre_tokenize_str(python_unassigned()))


def hf_split(pattern: str, text: str) -> list[str]:
    return [p for p, _ in pre_tokenizers.Split(Regex(pattern), behavior="isolated").pre_tokenize_str(text)]


def our_split(pattern: str, text: str) -> list[str]:
    return run_pretokenizer(build_pretokenizer({"type": "Split", "pattern": {"Regex": pattern},
                                                "behavior": "Isolated"}), text)


def test_the_same_code_points_are_unassigned_as_in_oniguruma():
    text = python_unassigned()
    assert our_split(r"\P{Cn}+", text) == hf_split(r"\P{Cn}+", text)


@pytest.mark.parametrize("category", CATEGORIES)
def test_newer_code_points_have_onigurumas_categories(category):
    text = newer_code_points()
    assert len(text) > 10_000  # Unicode 15.0-16.0 assigned ~10,300 (the Python running this is older)
    pattern = rf"\p{{{category}}}+"
    assert our_split(pattern, text) == hf_split(pattern, text)


@pytest.mark.parametrize("pattern", [tiny.QWEN2_PATTERN, tiny.LLAMA3_PATTERN, GPT2_PATTERN],
                         ids=["qwen2", "llama3", "gpt2"])
def test_byte_level_regexes_split_newer_code_points_like_hf(pattern):
    """Each newer code point next to a contraction, a digit, a space and a newline."""
    text = "".join(f"{c}'m {c}1{c}'S\n{c}" for c in newer_code_points())
    assert our_split(pattern, text) == hf_split(pattern, text)


@pytest.mark.parametrize("individual", [True, False])
def test_digits_use_rusts_is_numeric(individual):
    """Rust's tables are Unicode 17.0: the Sharada digits U+11DE0.. and Yangqin numerals U+16FF4.. are numbers."""
    numbers = "".join(chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "N")
    text = "a".join(python_unassigned() + numbers)
    hf = pre_tokenizers.Digits(individual_digits=individual)
    ours = build_pretokenizer({"type": "Digits", "individual_digits": individual})
    assert run_pretokenizer(ours, text) == [p for p, _ in hf.pre_tokenize_str(text)]


@pytest.fixture(scope="module")
def qwen_pair():
    spec = tiny.qwen_style()
    return HFTokenizer.from_str(json.dumps(spec)), BPETokenizer(spec)


def test_single_word_token_sees_newer_letters_as_word_characters(qwen_pair):
    """[WORD] (single_word) must not match glued to a Unicode 16 letter or mark, and must next to a new symbol."""
    hf, ours = qwen_pair
    texts = [f"[WORD]{c}" for c in newer_code_points()] + [f"{c}[WORD]" for c in newer_code_points()[::7]]
    expected = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    assert [ours.encode(t) for t in texts] == expected


def _normalization_probes() -> list[str]:
    """Every code point this Python gives a combining class or a decomposition: alone, after "a" and before a
    class-1 mark (reordering), and as its canonical decomposition (composition)."""
    probes = []
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or not (unicodedata.combining(c) or unicodedata.decomposition(c)):
            continue
        probes += [c, f"a{c}\u0334", f"\u1dfc{c}"]
        decomposition = unicodedata.decomposition(c)
        if decomposition and not decomposition.startswith("<"):
            probes.append("".join(chr(int(h, 16)) for h in decomposition.split()))
    return probes


@pytest.mark.parametrize("form", ["NFC", "NFD", "NFKC", "NFKD"])
def test_unicode_normalizers_match_hf_on_every_mark_and_decomposition(form):
    ours, hf = build_normalizer({"type": form}), getattr(normalizers, form)()
    mismatches = [p for p in _normalization_probes() if ours(p) != hf.normalize_str(p)]
    assert not mismatches, [f"U+{ord(p[-1]):04X}" for p in mismatches[:20]]


# ---- the fuzzer's minimal cases, end to end through each tokenizer shape --------------------------------------------

@pytest.fixture(scope="module")
def smollm2_spec(smollm2_gguf):
    """SmolLM2-135M-Instruct's real vocabulary (transformers' export) with its published Digits + ByteLevel."""
    spec = json.loads((assets.smollm2_hf_export(smollm2_gguf) / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = SMOLLM2_PRETOKENIZER
    return spec


MINIMAL_CASES = {
    "smollm2": ["\U00013af3'm", "\u2029\U00011de4", "x\U00011de41", "\U0001ccf5\U0001ccf6 \U000105c0's"],
    "llama3": ["\U000138ef'R", "1\U0001e4f1\U0001e4f22", "\U00031350\U00031351 'LL"],
    "qwen": ["\U00014397\u0e31", "[WORD]\U0002ee46", "\U00013b30[WORD]", "\u1dfc\u1acd", "\uaab2\U00011a47",
             "\U00011935\U00011930", "e\u1ac1\u0301", "<|im_end|>\U00011938<|im_end|>"],
}


@pytest.mark.parametrize("shape", sorted(MINIMAL_CASES))
def test_fuzzer_minimal_cases_encode_and_decode_like_hf(shape, request):
    spec = {"smollm2": lambda: request.getfixturevalue("smollm2_spec"), "llama3": tiny.llama3_style,
            "qwen": tiny.qwen_style}[shape]()
    hf, ours = HFTokenizer.from_str(json.dumps(spec)), BPETokenizer(spec)
    for text in MINIMAL_CASES[shape]:
        ids = hf.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False), text
