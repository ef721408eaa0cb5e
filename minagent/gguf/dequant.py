"""Dequantising GGML tensor blocks to float32, vectorised over all blocks at once with numpy.

GGML stores a tensor as a run of fixed-size blocks along its fastest axis. The formats read here:

  F32 / F16 / BF16   one element per "block", stored as is (BF16 = the top 16 bits of a float32)
  Q8_0  34 bytes / 32 values: f16 scale d, 32 x int8 q           -> d * q
  Q4_0  18 bytes / 32 values: f16 scale d, 16 bytes of nibbles   -> d * (q - 8)
  Q4_1  20 bytes / 32 values: f16 scale d, f16 min m, 16 bytes   -> d * q + m

In both 4-bit formats byte j holds value j in its low nibble and value j + 16 in its high nibble. The
arithmetic is done in float32 in the order ggml uses (product, then sum), so results are bit-identical to
llama.cpp's own dequantisation.
"""
from __future__ import annotations

import numpy as np

# ggml type id -> (name, values per block, bytes per block). Every type llama.cpp defines is listed, so the
# reader can size (and bounds-check) any tensor even when this module cannot dequantise it.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}


def _f16_column(blocks: np.ndarray, start: int) -> np.ndarray:
    """The little-endian float16 at byte `start` of every block, as a float32 column (n_blocks, 1)."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """(n_blocks, 16) bytes -> (n_blocks, 32) values 0..15: all low nibbles first, then all high nibbles."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)


def _f32(raw):
    return raw.view("<f4").astype(np.float32)


def _f16(raw):
    return raw.view("<f2").astype(np.float32)


def _bf16(raw):
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


def _q8_0(raw):
    blocks = raw.reshape(-1, 34)
    return (_f16_column(blocks, 0) * blocks[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)


def _q4_0(raw):
    blocks = raw.reshape(-1, 18)
    q = _nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return (_f16_column(blocks, 0) * q.astype(np.float32)).reshape(-1)


def _q4_1(raw):
    blocks = raw.reshape(-1, 20)
    q = _nibbles(blocks[:, 4:]).astype(np.float32)
    return (_f16_column(blocks, 0) * q + _f16_column(blocks, 2)).reshape(-1)


DEQUANTIZERS = {"F32": _f32, "F16": _f16, "BF16": _bf16, "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1}
SUPPORTED_TYPES = tuple(DEQUANTIZERS)


def dequantize(raw: np.ndarray, type_name: str) -> np.ndarray:
    """Flat float32 values of the bytes `raw` (uint8, a whole number of blocks) holding type `type_name`."""
    if type_name not in DEQUANTIZERS:
        raise ValueError(f"type {type_name} cannot be dequantised; supported: {', '.join(SUPPORTED_TYPES)}")
    return DEQUANTIZERS[type_name](np.ascontiguousarray(raw, dtype=np.uint8))
