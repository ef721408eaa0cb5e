"""GGUF import: read llama.cpp model files and convert them into HF-layout checkpoint directories.

    reader.py     GGUFFile: header, metadata, tensor directory, memory-mapped data
    dequant.py    F32/F16/BF16/Q8_0/Q4_0/Q4_1 blocks -> float32 (numpy, vectorised)
    convert.py    llama/qwen2/qwen3 GGUF -> HF tensor names, config.json, generation_config.json
    tokenizer.py  GGUF tokenizer metadata -> tokenizer.json + tokenizer_config.json
"""
from .convert import convert_gguf, hf_config_from_gguf, hf_state_dict_from_gguf
from .reader import GGUFError, GGUFFile, TensorInfo, UnsupportedTensorType

__all__ = ["GGUFFile", "GGUFError", "UnsupportedTensorType", "TensorInfo", "convert_gguf",
           "hf_config_from_gguf", "hf_state_dict_from_gguf"]
