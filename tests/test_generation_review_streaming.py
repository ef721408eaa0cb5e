"""Streaming and stop strings of generate(), checked against HF's own decoding on real tokenizers.

The token ids are scripted (sample_next is replaced by a function that plays fixed sequences, one per row), so
the ids can be anything the tokenizer knows: byte-level tokens that cut a UTF-8 character, SentencePiece
<0xNN> byte-fallback runs, "▁" pieces at the start, special tokens. A tiny model with the tokenizer's vocabulary
runs the forwards; its logits are ignored.

Oracles: `tokenizers.Tokenizer.decode` (the full text of every prefix of the ids) and
`tokenizers.decoders.DecodeStream` (HF's incremental decoder). Properties, for every row and after every step:
  - the text streamed so far is a prefix of the row's final text and of the HF decode of the ids so far: nothing
    is ever streamed that a later token changes (no U+FFFD for a character still being completed) and nothing at
    or after a stop string (the second part skips prefixes that end inside a byte-fallback run, whose HF text
    may still change: see test_a_reply_that_ends_inside_a_byte_fallback_run);
  - it is never behind DecodeStream (what HF would have streamed by then is a prefix of it);
  - at the end the pieces add up to Completion.text, which is the HF decode cut before the first stop string,
    found after the first token whose text completes it.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import transformers
import transformers.convert_slow_tokenizer
from tokenizers import AddedToken, decoders, models
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.decoders import DecodeStream

import minagent.generation as generation
import tokenizer_assets as assets
from minagent import load_model, load_tokenizer
from minagent.generation import SamplingParams, generate

SMOLLM2 = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct"
SMOLLM2_EOS = 2  # <|im_end|>
MISTRAL_EOS = 2  # </s>


# ---- tokenizers: ours and HF's for the same vocabulary ------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    """(ours, HF's) for SmolLM2's byte-level BPE tokenizer.json."""
    if not (SMOLLM2 / "tokenizer.json").is_file():
        pytest.skip("models/SmolLM2-135M-Instruct not fetched (python infer.py fetch)")
    return load_tokenizer(SMOLLM2), HFTokenizer.from_file(str(SMOLLM2 / "tokenizer.json"))


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    """(ours, HF's) for Mistral-7B v0.1's SentencePiece tokenizer.model (BPE with <0xNN> byte fallback).

    Ours runs the .model file. HF's decoder for these models is the chain transformers' LlamaConverter writes
    (Replace '▁' -> ' ', ByteFallback, Fuse, Strip one leading space); decoding needs only the vocabulary, read
    from the .model with the sentencepiece package, and the special flags of <unk>, <s>, </s>."""
    import sentencepiece as spm

    model_file = assets.mistral_sentencepiece_model()
    directory = tmp_path_factory.mktemp("mistral_sp")
    (directory / "tokenizer.model").write_bytes(model_file.read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    return load_tokenizer(directory), hf


class SkippingSpecials:
    """Our tokenizer decoding with skip_special_tokens=True (generate calls decode(ids) only)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def tiny_model(tmp_path_factory, vocab_size: int):
    """A 1-layer Llama with the tokenizer's vocabulary: the scripted ids must be valid embedding rows."""
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp(f"tiny_{vocab_size}")
    transformers.LlamaForCausalLM(cfg).save_pretrained(directory)
    return load_model(directory)


# ---- scripted ids -------------------------------------------------------------------------------------------------
def random_char(rng: random.Random) -> str:
    """A character of 2, 3 or 4 UTF-8 bytes: Latin-1/Cyrillic, CJK, emoji."""
    low, high = rng.choice([(0xA0, 0x800), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF)])
    return chr(rng.randrange(low, high))


def byte_level_ids(rng: random.Random, hf: HFTokenizer, n: int) -> list[int]:
    """SmolLM2 ids biased to multi-byte text: single byte tokens of a character (each cuts it), HF's encoding of
    random non-ASCII words (merged tokens that may end mid-character), special tokens, any id."""
    byte_token = transformers.convert_slow_tokenizer.bytes_to_unicode()
    ids: list[int] = []
    while len(ids) < n:
        r = rng.random()
        if r < 0.3:
            ids += [hf.token_to_id(byte_token[b]) for b in random_char(rng).encode()]
        elif r < 0.6:
            word = "".join(random_char(rng) for _ in range(rng.randrange(1, 4)))
            ids += hf.encode(rng.choice(["", " "]) + word, add_special_tokens=False).ids
        elif r < 0.67:
            ids.append(rng.choice([0, 1, 3, 5, 14]))  # special, not the stop id
        else:
            ids.append(rng.randrange(17, hf.get_vocab_size()))
    return ids[:n]


def byte_fallback_ids(rng: random.Random, hf: HFTokenizer, n: int) -> list[int]:
    """Mistral ids biased to byte fallback: whole characters as <0xNN> runs (every run completes a character),
    non-ASCII pieces, pieces with and without '▁' (also as the first token), <unk>/<s>, any piece."""
    vocab_size = hf.get_vocab_size()
    non_ascii = [i for i in range(3 + 256, vocab_size) if any(ord(c) > 0x7F and c != "\u2581" for c in hf.id_to_token(i))]
    ids: list[int] = []
    while len(ids) < n:
        r = rng.random()
        if r < 0.35:
            ids += [hf.token_to_id(f"<0x{b:02X}>") for b in random_char(rng).encode()]
        elif r < 0.6:
            ids.append(rng.choice(non_ascii))
        elif r < 0.67:
            ids.append(rng.choice([0, 1]))
        elif r < 0.75:
            ids.append(hf.token_to_id("\u2581"))
        else:
            ids.append(rng.randrange(3 + 256, vocab_size))
    return ids  # not cut to n: a reply that ends inside a byte run is the known limit tested on its own


class Script:
    """Replaces sample_next: step s returns rows[b][s] for every row b (the stop id once a row's ids are used up),
    and counts the steps so on_text can tell after which token a piece came."""

    def __init__(self, rows: list[list[int]], stop_id: int):
        self.rows, self.stop_id, self.step = rows, stop_id, -1

    def __call__(self, logits, params, generator):
        self.step += 1
        return torch.tensor([r[self.step] if self.step < len(r) else self.stop_id for r in self.rows])


def run_scripted(monkeypatch, model, tokenizer, rows, stop_id, stop_strings=()):
    """generate() over the scripted rows; returns (completions, script, pieces) with pieces[b] = [(step, text)]."""
    script = Script(rows, stop_id)
    monkeypatch.setattr(generation, "sample_next", script)
    pieces = {b: [] for b in range(len(rows))}
    params = SamplingParams(max_new_tokens=max(map(len, rows)) + 1, stop_ids=[stop_id], stop_strings=stop_strings)
    out = generate(model, [[1, 5, 9]] * len(rows), params, tokenizer=tokenizer,
                   on_text=lambda row, text: pieces[row].append((script.step, text)))
    return out, pieces


def streamed_after(pieces, step: int) -> str:
    return "".join(text for s, text in pieces if s <= step)


def decode_stream_after_each(hf: HFTokenizer, ids: list[int], skip: bool) -> list[str] | None:
    """What DecodeStream has emitted after each id (None if it gives up: a byte run that turned invalid)."""
    stream, total, after = DecodeStream(skip_special_tokens=skip), "", []
    for i in ids:
        try:
            total += stream.step(hf, i) or ""
        except Exception:
            return None
        after.append(total)
    return after


def open_byte_run(hf: HFTokenizer, ids: list[int]) -> bool:
    """Whether ids end with a <0xNN> byte-fallback token: HF's ByteFallback decodes a run of them as a whole (one
    U+FFFD per byte if any part is invalid), so the text of such a prefix can still change characters that came
    before it in the run; once a piece closes the run it cannot."""
    return bool(ids) and hf.id_to_token(ids[-1]).startswith("<0x")


def check_stream(hf, rows, out, pieces, skip: bool, stop_strings=()):
    """The properties in the module docstring, for every row and every step; returns how many steps it checked."""
    checked = 0
    for b, ids in enumerate(rows):
        decode = [hf.decode(ids[:n], skip_special_tokens=skip) for n in range(len(ids) + 1)]
        stop_at = next((n for n in range(1, len(ids) + 1) if any(s in decode[n] for s in stop_strings)), None)
        if stop_at is None:
            want_text, want_ids, want_reason = decode[-1], ids, "stop_id"
        else:
            cut = min(decode[stop_at].find(s) for s in stop_strings if s in decode[stop_at])
            want_text, want_ids, want_reason = decode[stop_at][:cut], ids[:stop_at], "stop_string"
        assert out[b].text == want_text, (b, ids)
        assert out[b].token_ids == want_ids and out[b].finish_reason == want_reason, (b, ids)
        assert "".join(text for _, text in pieces[b]) == want_text, (b, ids)
        hf_stream = decode_stream_after_each(hf, want_ids, skip)
        for step in range(len(want_ids)):
            so_far = streamed_after(pieces[b], step)
            assert want_text.startswith(so_far), (b, step, ids)
            if not open_byte_run(hf, want_ids[:step + 1]):
                assert decode[step + 1].startswith(so_far), (b, step, ids)
            if hf_stream is not None and not stop_strings:
                assert so_far.startswith(hf_stream[step]), (b, step, ids)
            checked += 1
    return checked


# ---- the tests ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("skip", [False, True])
def test_smollm2_stream_is_hf_decode_of_every_prefix(smollm2, tmp_path_factory, monkeypatch, skip):
    ours, hf = smollm2
    model = tiny_model(tmp_path_factory, hf.get_vocab_size())
    rng = random.Random(7 + skip)
    rows = [byte_level_ids(rng, hf, rng.randrange(1, 30)) for _ in range(80)]
    assert all(SMOLLM2_EOS not in r for r in rows)
    out, pieces = run_scripted(monkeypatch, model, SkippingSpecials(ours) if skip else ours, rows, SMOLLM2_EOS)
    assert check_stream(hf, rows, out, pieces, skip) > 1000
    # the sample does hold what the test is about: cut characters, U+FFFD in the middle of a prefix's text
    assert sum("\ufffd" in hf.decode(r[:n]) for r in rows for n in range(1, len(r))) > 100


@pytest.mark.parametrize("skip", [False, True])
def test_byte_fallback_stream_is_hf_decode_of_every_prefix(mistral, tmp_path_factory, monkeypatch, skip):
    ours, hf = mistral
    model = tiny_model(tmp_path_factory, hf.get_vocab_size())
    rng = random.Random(11 + skip)
    rows = [byte_fallback_ids(rng, hf, rng.randrange(1, 30)) for _ in range(80)]
    out, pieces = run_scripted(monkeypatch, model, SkippingSpecials(ours) if skip else ours, rows, MISTRAL_EOS)
    assert check_stream(hf, rows, out, pieces, skip) > 1000
    assert sum(hf.decode(r[:n]).endswith("\ufffd") for r in rows for n in range(1, len(r))) > 100
    assert sum(hf.id_to_token(r[0]).startswith("\u2581") for r in rows) > 5  # the dropped leading space


@pytest.mark.parametrize("which", ["smollm2", "mistral"])
def test_stop_strings_spanning_tokens_are_never_streamed(which, request, tmp_path_factory, monkeypatch):
    """Stop strings taken from the rows' own text at random places (so most cross token boundaries, some cut a
    token in two); several per call, some a prefix of another."""
    ours, hf = request.getfixturevalue(which)
    model = tiny_model(tmp_path_factory, hf.get_vocab_size())
    rng = random.Random(3)
    make = byte_level_ids if which == "smollm2" else byte_fallback_ids
    rows = [make(rng, hf, rng.randrange(4, 30)) for _ in range(60)]
    stops = []
    for ids in rows[:40]:
        text = hf.decode(ids, skip_special_tokens=False)
        start = rng.randrange(len(text))
        stop = text[start:start + rng.randrange(1, 6)]
        if "\ufffd" not in stop:
            stops.append(stop)
    stops += [s[:2] + "\u2603" for s in stops[:5]]  # the start of a stop string that never comes: held, then shown
    stop_eos = SMOLLM2_EOS if which == "smollm2" else MISTRAL_EOS
    out, pieces = run_scripted(monkeypatch, model, ours, rows, stop_eos, stop_strings=stops)
    assert check_stream(hf, rows, out, pieces, False, stops) > 300
    assert sum(c.finish_reason == "stop_string" for c in out) > 30


def test_a_reply_that_ends_inside_a_byte_fallback_run(mistral, tmp_path_factory, monkeypatch):
    """The documented limit (see _RowText): HF's ByteFallback turns a whole run of <0xNN> pieces into one U+FFFD
    per byte when any part of it is invalid, so a reply cut inside a character (max_new_tokens, a stop id) loses
    the run's complete characters too, after they were streamed. No stream can take them back: HF's own
    DecodeStream streams the same characters and is then no prefix of the decoded text either. Completion.text
    stays the tokenizer's decode, and the stream showed what DecodeStream showed."""
    ours, hf = mistral
    model = tiny_model(tmp_path_factory, hf.get_vocab_size())
    run = [hf.token_to_id(f"<0x{b:02X}>") for b in "你好".encode() + "吗".encode()[:1]]
    ids = [hf.token_to_id("\u2581a")] + run
    out, pieces = run_scripted(monkeypatch, model, ours, [ids], MISTRAL_EOS)
    assert out[0].text == hf.decode(ids) == "a" + "\ufffd" * 7
    hf_streamed = decode_stream_after_each(hf, ids, False)[-1]
    assert hf_streamed == "a你好" and not out[0].text.startswith(hf_streamed)
    assert "".join(text for _, text in pieces[0]).startswith(hf_streamed)
