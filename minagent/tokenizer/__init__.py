"""Tokenizers for the checkpoints minagent runs, written without HF tokenizers/transformers.

    tok = load_tokenizer("path/to/Qwen2.5-0.5B-Instruct")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])   # add_generation_prompt=True
    ids = tok.encode(prompt)                       # add_special_tokens=False: the template has them
    text = tok.decode(ids, skip_special_tokens=True)
    tok.eos_token_id, tok.stop_token_ids, tok.vocab_size

Modules, one concept each:
    loading.py                  load_tokenizer, the Tokenizer facade, which file wins
    bpe_tokenizer.py            tokenizer.json pipeline (added tokens -> normalize -> pre-tokenize -> BPE)
    bpe.py                      the BPE merge loop and merges parsing ("a b" or ["a", "b"])
    byte_level.py               GPT-2 bytes <-> characters
    unicode_regex.py            \\p{L}/\\p{N}/\\s patterns translated for Python's re
    pretokenizers.py            ByteLevel, Split, Digits, Metaspace, Sequence
    normalizers.py, decoders.py, postprocessors.py   the other tokenizer.json sections
    added_tokens.py             special tokens matched first, never split
    sentencepiece_tokenizer.py  tokenizer.model through the sentencepiece package
    chat_templates.py           ChatML (Qwen2.5, SmolLM2) and Llama-3 templates in Python
    checkpoint_files.py         tokenizer_config.json, generation_config.json, ... (special ids, template)
    errors.py                   errors that name the file and the field
"""
from .errors import TokenizerFileNotFoundError, TokenizerFormatError
from .loading import Tokenizer, load_tokenizer

__all__ = ["load_tokenizer", "Tokenizer", "TokenizerFileNotFoundError", "TokenizerFormatError"]
