"""Reading GGUF files (llama.cpp's single-file model format): metadata, tensor directory, tensor data.

Layout (little-endian throughout):

    "GGUF" | u32 version (2 or 3) | u64 tensor_count | u64 metadata_kv_count
    metadata_kv_count x  (string key, u32 value_type, value)
    tensor_count      x  (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    zero padding up to a multiple of `general.alignment` (32 when absent)
    data section: each tensor at data_start + offset

A string is a u64 byte count and UTF-8 bytes; an array is a u32 element type, a u64 count and the elements
(arrays may nest). `ne[0]` is the fastest-varying axis, so a HF [rows, cols] matrix has ne = [cols, rows]:
shapes here are reported reversed, in HF/PyTorch order.

The file is memory-mapped, never read into memory: a tensor's bytes are a view of the map, and dequantising
one tensor at a time keeps at most one float copy of it alive.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dequant import GGML_TYPES, SUPPORTED_TYPES, dequantize

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value type id -> struct format of a scalar (8 = string, 9 = array are handled apart).
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
VALUE_TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
                    7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64"}


class GGUFError(ValueError):
    """A GGUF file that cannot be read; the message starts with the file's path."""


class UnsupportedTensorType(GGUFError):
    """A tensor stored in a ggml type this importer cannot dequantise."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_id: int
    shape: tuple[int, ...]  # HF/PyTorch order: the reverse of GGUF's ne[]
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type_id][0]

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    """Sequential little-endian reads over the mapped bytes; every read is bounds-checked."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def _need(self, n: int, what: str):
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFError(f"{self.path}: truncated or corrupt: reading {what} at byte {self.pos} needs "
                            f"{n} bytes, but the file has {len(self.data)}")

    def scalar(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        n = self.scalar("Q", what)
        self._need(n, what)
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # llama.cpp writes token strings as raw bytes; a few vocabularies hold invalid UTF-8 pieces.
            return raw.decode("utf-8", errors="surrogateescape")

    def value(self, type_id: int, what: str):
        if type_id in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[type_id], what)
        if type_id == _STRING:
            return self.string(what)
        if type_id == _ARRAY:
            item_type = self.scalar("I", what)
            count = self.scalar("Q", what)
            if item_type in _SCALAR_FORMATS:  # one vectorised read instead of `count` struct calls
                dtype = np.dtype("<" + _SCALAR_FORMATS[item_type])
                self._need(count * dtype.itemsize, what)
                items = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos).tolist()
                self.pos += count * dtype.itemsize
                return items
            if item_type not in (_STRING, _ARRAY):
                raise GGUFError(f"{self.path}: corrupt {what}: unknown array element type {item_type}")
            self._need(count * 8, what)  # every string or array element takes at least 8 bytes
            return [self.value(item_type, what) for _ in range(count)]
        raise GGUFError(f"{self.path}: corrupt {what}: unknown value type {type_id} at byte {self.pos - 4}")


class GGUFFile:
    """An open GGUF file: `metadata` (key -> Python value), `tensors` (name -> TensorInfo), `tensor(name)`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        if self.path.stat().st_size < 24:
            raise GGUFError(f"{self.path}: truncated: {self.path.stat().st_size} bytes is shorter than a "
                            f"GGUF header (24 bytes)")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(memoryview(self._map), self.path)
        if bytes(self._map[:4]) != MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (starts with {bytes(self._map[:4])!r}, expected b'GGUF')")
        cur.pos = 4
        self.version = cur.scalar("I", "version")
        if self.version not in (2, 3):
            if struct.unpack(">I", struct.pack("<I", self.version))[0] in (2, 3):
                raise GGUFError(f"{self.path}: big-endian GGUF files are not supported")
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not supported (expected 2 or 3)")
        n_tensors = cur.scalar("Q", "tensor count")
        n_kv = cur.scalar("Q", "metadata count")
        self.metadata: dict = {}
        self.metadata_types: dict[str, int] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in self.metadata:  # llama.cpp refuses these too: which value would be meant?
                raise GGUFError(f"{self.path}: metadata key '{key}' appears twice")
            type_id = cur.scalar("I", f"type of metadata '{key}'")
            self.metadata[key] = cur.value(type_id, f"metadata '{key}'")
            self.metadata_types[key] = type_id
        if "general.alignment" in self.metadata and self.metadata_types["general.alignment"] != 4:
            found = VALUE_TYPE_NAMES.get(self.metadata_types["general.alignment"])
            raise GGUFError(f"{self.path}: general.alignment is {found}, expected UINT32 (as the gguf format and "
                            "llama.cpp require)")
        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise GGUFError(f"{self.path}: general.alignment={self.alignment} is not a power of two")

        infos = []
        for i in range(n_tensors):
            name = cur.string(f"name of tensor #{i}")
            n_dims = cur.scalar("I", f"rank of tensor '{name}'")
            if n_dims > 8:
                raise GGUFError(f"{self.path}: corrupt tensor '{name}': {n_dims} dimensions")
            ne = [cur.scalar("Q", f"shape of tensor '{name}'") for _ in range(n_dims)]
            type_id = cur.scalar("I", f"type of tensor '{name}'")
            offset = cur.scalar("Q", f"offset of tensor '{name}'")
            infos.append((name, ne, type_id, offset))
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment

        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, type_id, offset in infos:
            self.tensors[name] = self._tensor_info(name, ne, type_id, offset)

    def _tensor_info(self, name: str, ne: list[int], type_id: int, offset: int) -> TensorInfo:
        if name in self.tensors:
            raise GGUFError(f"{self.path}: tensor '{name}' is listed twice")
        if type_id not in GGML_TYPES:
            raise GGUFError(f"{self.path}: tensor '{name}' has unknown ggml type id {type_id}")
        type_name, block, block_bytes = GGML_TYPES[type_id]
        n = 1
        for d in ne:
            n *= d
        row = ne[0] if ne else 1  # a 0-dim tensor holds one value (llama.cpp reads its missing ne[0] as 1)
        if row % block:
            raise GGUFError(f"{self.path}: tensor '{name}' ({type_name}) has a row of {row} values, "
                            f"not a multiple of the block size {block}")
        if offset % self.alignment:
            raise GGUFError(f"{self.path}: tensor '{name}' offset {offset} is not aligned to {self.alignment}")
        info = TensorInfo(name, type_id, tuple(reversed(ne)), self.data_offset + offset, n // block * block_bytes)
        if info.offset + info.nbytes > len(self._map):
            raise GGUFError(f"{self.path}: truncated: tensor '{name}' needs bytes {info.offset}.."
                            f"{info.offset + info.nbytes}, but the file has only {len(self._map)} bytes")
        return info

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor `name`: a read-only uint8 view of the memory map (no copy)."""
        info = self.info(name)
        return self._map[info.offset:info.offset + info.nbytes]

    def info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor '{name}'")
        return self.tensors[name]

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Tensor `name` dequantised to `dtype`, in HF shape (ne reversed)."""
        info = self.info(name)
        if info.type_name not in SUPPORTED_TYPES:
            raise UnsupportedTensorType(f"{self.path.name}: tensor '{name}' has type {info.type_name}, "
                                        f"supported: {', '.join(SUPPORTED_TYPES)} (file {self.path})")
        values = dequantize(self.raw(name), info.type_name)
        return torch.from_numpy(values).reshape(info.shape).to(dtype)

    def close(self):
        """Drop the memory map; it is unmapped once no `raw()` view of it is alive (returned tensors are copies)."""
        self._map = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"GGUFFile({str(self.path)!r}, version={self.version}, tensors={len(self.tensors)})"
