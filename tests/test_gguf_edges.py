"""GGUF import at the edges: nested metadata, tensors stored out of directory order, rows that are not whole
blocks, partial rotary metadata, and converted Qwen checkpoints loaded by transformers itself.

Oracles: files written by `gguf.GGUFWriter` (then patched by hand where the writer refuses), `gguf.GGUFReader`,
llama.cpp's documented behaviour (cited at each test), transformers' own GGUF loader.
"""
from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
import torch

from minagent.gguf import GGUFError, GGUFFile, convert_gguf
from test_gguf import oracle_dequant, tiny_model_gguf, write_gguf


def _tensor_info_at(raw: bytes, name: str, n_dims: int) -> int:
    """Byte position of tensor `name`'s directory entry (its u64 name length), found by its exact encoding."""
    encoded = struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", n_dims)
    pos = raw.rfind(encoded)
    assert pos > 0 and raw.count(encoded) == 1
    return pos


def test_nested_and_wide_metadata_values(tmp_path):
    """Arrays of arrays keep their nesting (gguf.GGUFReader.contents() flattens them, so the expected values are
    the ones written); 64-bit and bool scalars round-trip exactly."""
    V = gguf.GGUFValueType
    path = tmp_path / "meta.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("t.nested_ints", [[1, 2], [3]])
    w.add_array("t.nested_strs", [["a", "b"], ["ü"]])
    w.add_array("t.bools", [True, False, True])
    w.add_key_value("t.u64", 2**64 - 1, V.UINT64)
    w.add_key_value("t.i64", -(2**63), V.INT64)
    w.add_key_value("t.f64", 0.1, V.FLOAT64)
    w.add_key_value("t.false", False, V.BOOL)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    meta = GGUFFile(path).metadata
    assert meta["t.nested_ints"] == [[1, 2], [3]] and meta["t.nested_strs"] == [["a", "b"], ["ü"]]
    assert meta["t.bools"] == [True, False, True]
    assert (meta["t.u64"], meta["t.i64"], meta["t.f64"], meta["t.false"]) == (2**64 - 1, -(2**63), 0.1, False)


def test_tensor_data_in_another_order_than_the_directory(tmp_path):
    """Offsets, not directory order, locate the data: swap the offsets of two same-sized tensors and each name
    reads the other's bytes, as gguf.GGUFReader reads them."""
    a, b = np.arange(64, dtype=np.float32).reshape(2, 32), -np.arange(64, dtype=np.float32).reshape(2, 32)
    path = write_gguf(tmp_path / "m.gguf", {"a": (a, "Q8_0"), "b": (b, "Q8_0")})
    raw = bytearray(path.read_bytes())
    # entry: u64 name length, name, u32 n_dims, 2 x u64 ne, u32 type, u64 offset
    pa, pb = (_tensor_info_at(raw, n, 2) + 8 + 1 + 4 + 16 + 4 for n in ("a", "b"))
    (oa,), (ob,) = struct.unpack_from("<Q", raw, pa), struct.unpack_from("<Q", raw, pb)
    struct.pack_into("<Q", raw, pa, ob)
    struct.pack_into("<Q", raw, pb, oa)
    path.write_bytes(raw)
    g = GGUFFile(path)
    assert g.tensors["b"].offset < g.tensors["a"].offset
    for name in ("a", "b"):
        assert torch.equal(g.tensor(name).reshape(-1), oracle_dequant(path, name).reshape(-1)), name
    assert torch.allclose(g.tensor("a"), torch.from_numpy(b), atol=0.3)  # a's name now points at b's data


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1"])
def test_row_that_is_not_whole_blocks_is_refused(tmp_path, type_name):
    """A quantised row of 48 values (not a multiple of the 32-value block) is refused, naming file, tensor and
    block size; gguf.GGUFReader refuses it too. (GGUFWriter will not write one: the shape is patched.)"""
    path = write_gguf(tmp_path / "rows.gguf", {"w": (np.zeros((2, 64), np.float32), type_name)})
    raw = bytearray(path.read_bytes())
    struct.pack_into("<QQ", raw, _tensor_info_at(raw, "w", 2) + 8 + 1 + 4, 48, 2)
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="not a multiple"):
        gguf.GGUFReader(str(path))
    with pytest.raises(GGUFError, match=rf"rows\.gguf: tensor 'w' \({type_name}\) has a row of 48 values, not a "
                                        r"multiple of the block size 32"):
        GGUFFile(path)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_partial_rotary_is_refused(tmp_path, arch):
    """rope.dimension_count below the head size: llama.cpp refuses a llama file ("invalid n_rot: %u, expected
    %u" in llama-model.cpp) and rotates only that many dimensions of a qwen2 one; HF's Llama/Qwen2 rotate all,
    so converting would silently change the model."""
    path = tiny_model_gguf(tmp_path / "rot.gguf", arch, meta_changes={f"{arch}.rope.dimension_count": 8})
    with pytest.raises(GGUFError, match=rf"rot\.gguf: {arch}\.rope\.dimension_count is 8, expected the head "
                                        r"size 16"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch,tied", [("qwen2", False), ("qwen3", True)])
def test_converted_qwen_loads_in_transformers_with_its_gguf_logits(tmp_path, arch, tied):
    """The converted directory (config.json included) loaded by transformers gives the logits of transformers'
    model loaded straight from the GGUF: bias tensors (qwen2), q/k norms (qwen3), tied and untied heads."""
    import transformers

    path = tiny_model_gguf(tmp_path / "tiny.gguf", arch, tied=tied)
    out = convert_gguf(path, tmp_path / "hf", tokenizer=False)
    from_gguf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    from_dir = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert from_dir.config.tie_word_embeddings is tied
    ids = torch.tensor([[5, 80, 3, 200, 17, 17, 260, 9]])
    with torch.no_grad():
        assert torch.equal(from_dir(ids).logits, from_gguf(ids).logits)


def test_a_float64_rms_eps_is_kept_exactly(tmp_path):
    """GGUF lets a writer store a float as FLOAT64; the converter read every float through float32 (meant for
    FLOAT32 values written from a short decimal), so 1.234567890123e-06 became 1.2345679e-06. The oracle is the
    value written."""
    eps = 1.234567890123e-06
    path = tiny_model_gguf(tmp_path / "f64.gguf", "llama", meta_changes={
        "llama.attention.layer_norm_rms_epsilon": (eps, gguf.GGUFValueType.FLOAT64),
        "llama.rope.freq_base": (500000.0000001, gguf.GGUFValueType.FLOAT64)})
    convert_gguf(path, tmp_path / "out")
    import json
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["rms_norm_eps"] == eps and config["rope_theta"] == 500000.0000001


def test_a_zero_dim_quantised_tensor_is_refused_naming_it(tmp_path):
    """A 0-dim tensor holds one value, never a whole 32-value block: llama.cpp reads its ne[0] as 1 and refuses it
    ("not a multiple of block size"). Ours computed 0 bytes and failed in torch's reshape with no file or tensor
    named. (GGUFWriter writes a (1, 32) tensor; its rank is patched to 0 and its shape bytes dropped.)"""
    path = write_gguf(tmp_path / "scalar.gguf", {"s": (np.ones((1, 32), np.float32), "Q8_0")})
    raw = bytearray(path.read_bytes())
    at = _tensor_info_at(raw, "s", 2)
    entry = 8 + 1  # u64 length, name "s"
    raw[at + entry:at + entry + 4 + 16] = struct.pack("<I", 0)  # rank 0, no shape
    # the directory shrank by 16 bytes: pad after it so the data keeps its aligned position
    data_at = at + entry + 4 + 4 + 8
    raw[data_at:data_at] = bytes(16)
    path.write_bytes(raw)
    with pytest.raises(GGUFError, match=r"scalar\.gguf: tensor 's' \(Q8_0\) has a row of 1 values, not a multiple "
                                        r"of the block size 32"):
        GGUFFile(path)
