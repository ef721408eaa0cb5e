"""Llama-3 templates beyond the published ones: what the template text decides (its dates, a system turn of its
own) must reach our renderer, or the template must be refused.

Oracle: transformers' apply_chat_template running the same Jinja text."""
import json

import pytest
from tokenizers import Tokenizer as HFTokenizer

import tokenizer_templates as templates
import tokenizer_tiny as tiny
from minagent.tokenizer import load_tokenizer

MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "tool", "content": "{\"ok\": true}"},
            {"role": "user", "content": "And 3+3?"}]


@pytest.fixture(scope="module")
def llama3_spec():
    return tiny.llama3_style()


def _pair(directory, spec, template):
    from transformers import PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": template, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}), encoding="utf-8")
    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(json.dumps(spec)),
                                 bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    hf.chat_template = template
    return load_tokenizer(directory), hf


# A Llama-3.1-style template with its own dates (a later fine-tune's knowledge cut-off and fixed "today", in
# single quotes): we wrote Llama-3.1's "December 2023" and "26 Jul 2024" whatever the template said.
OTHER_DATES = templates.LLAMA31_FIXED_DATE.replace("December 2023", "March 2025").replace(
    '{%- set date_string = "26 Jul 2024" %}', "{%- set date_string = '01 Jan 2025' %}")


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_dates_are_read_from_the_llama31_template(tmp_path, llama3_spec, add_generation_prompt):
    assert OTHER_DATES != templates.LLAMA31_FIXED_DATE and "01 Jan 2025" in OTHER_DATES
    ours, hf = _pair(tmp_path, llama3_spec, OTHER_DATES)
    expected = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert "March 2025" in expected and "01 Jan 2025" in expected
    got = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt)
    assert got == expected
    ids = hf.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt)["input_ids"]
    assert ours.encode(got) == list(ids)


# A Llama-3.0-style template that injects a default system turn when the conversation has none: we rendered the
# conversation without it, silently.
OWN_SYSTEM = ("{% if messages[0]['role'] != 'system' %}{{ bos_token + '<|start_header_id|>system<|end_header_id|>"
              "\\n\\nYou are a helpful assistant.<|eot_id|>' }}{% endif %}" + templates.LLAMA3)


def test_a_llama3_template_with_its_own_system_turn_is_refused(tmp_path, llama3_spec):
    ours, hf = _pair(tmp_path, llama3_spec, OWN_SYSTEM)
    messages = MESSAGES[1:]
    assert "You are a helpful assistant." in hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(ValueError, match="system turn of its own"):
        ours.apply_chat_template(messages)


# Mistral-7B-Instruct-v0.1's template (v1 [INST] form): a valid template transformers renders, which we refuse by
# name rather than with a generic "unrecognised" and the template's first characters.
MISTRAL_V1 = ("{{ bos_token }}{% for message in messages %}"
              "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
              "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
              "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
              "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
              "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")


def test_mistral_inst_templates_are_refused_by_name(tmp_path, llama3_spec):
    ours, hf = _pair(tmp_path, llama3_spec, MISTRAL_V1)
    messages = [{"role": "user", "content": "hi"}]
    assert "[INST] hi [/INST]" in hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(ValueError, match=r"Mistral's \[INST\] format .* not implemented"):
        ours.apply_chat_template(messages)
