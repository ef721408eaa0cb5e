"""Tokenizer.apply_chat_template's keywords (minagent/tokenizer/loading.py): `enable_thinking`, transformers' keyword
for Qwen3's template, reaches our Qwen3 renderer for that call only; templates that do not read it ignore it, as
their Jinja does.

Oracle: transformers' apply_chat_template(..., enable_thinking=...) on the same template text and tokenizer."""
import json

import pytest
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

import tokenizer_templates as templates
import tokenizer_tiny as tiny
from minagent.tokenizer import load_tokenizer

MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}, {"role": "user", "content": "3+3?"}]


def _pair(directory, template):
    from transformers import PreTrainedTokenizerFast

    backend = HFTokenizer.from_str(json.dumps(tiny.qwen_style()))
    backend.add_tokens([AddedToken("<think>", special=False, normalized=False),
                        AddedToken("</think>", special=False, normalized=False)])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": template, "bos_token": None, "eos_token": "<|im_end|>"}), encoding="utf-8")
    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(backend.to_str()), eos_token="<|im_end|>")
    hf.chat_template = template
    return load_tokenizer(directory), hf


@pytest.mark.parametrize("enable_thinking", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_enable_thinking_keyword_reaches_qwen3(tmp_path, enable_thinking, add_generation_prompt):
    ours, hf = _pair(tmp_path, templates.QWEN3)
    expected = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=add_generation_prompt,
                                      enable_thinking=enable_thinking)
    got = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt,
                                   enable_thinking=enable_thinking)
    assert got == expected
    ids = hf.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt,
                                 enable_thinking=enable_thinking)["input_ids"]
    assert ours.encode(got) == list(ids)
    segments = ours.chat_segments(MESSAGES, add_generation_prompt, enable_thinking=enable_thinking)
    assert "".join(t for t, _ in segments) == expected
    # for this call only: the next call without the keyword renders as transformers does without it
    assert ours.chat_renderer.enable_thinking is None
    assert ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt) == \
        hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=add_generation_prompt)


def test_enable_thinking_false_prompt_differs(tmp_path):
    """The keyword must matter: transformers writes an empty think block after the generation prompt."""
    ours, hf = _pair(tmp_path, templates.QWEN3)
    off = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert ours.apply_chat_template(MESSAGES, enable_thinking=False) == off


def test_a_template_without_thinking_ignores_the_keyword(tmp_path):
    ours, hf = _pair(tmp_path, templates.QWEN25)
    expected = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert expected == hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert ours.apply_chat_template(MESSAGES, enable_thinking=False) == expected
