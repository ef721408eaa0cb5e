"""What SFT trains equals transformers' return_assistant_tokens_mask on templates that mark assistant output with
{% generation %} (ChatML as in transformers' own tests, Llama-3 the same way): the assistant content and its
end-of-turn token, nothing of the headers, the system prompt, the user or the tool turns.

Oracle: transformers' apply_chat_template(return_assistant_tokens_mask=True) with the same HF fast tokenizer."""

import pytest

import tokenizer_templates as templates
import tokenizer_tiny as tiny
from test_chat_formats import _pair
from minagent.training.trajectories import encode_trajectory

CHATML_GENERATION = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] != 'assistant' %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% else %}{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3_GENERATION = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

CONVERSATIONS = {
    "agent": [{"role": "system", "content": "Answer with code."}, {"role": "user", "content": "6*7?"},
              {"role": "assistant", "content": "Thought: compute.\nCode:\n```py\nprint(6*7)\n```<end_code>"},
              {"role": "user", "content": "Observation:\n42"},
              {"role": "assistant", "content": "Thought: done.\nCode:\n```py\nfinal_answer(42)\n```<end_code>"}],
    "consecutive_assistant": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "one"},
                              {"role": "assistant", "content": "two {braces} \"quotes\" ünï"}],
    "empty_assistant": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""},
                        {"role": "user", "content": "again"}, {"role": "assistant", "content": "  padded  "}],
}


@pytest.mark.parametrize("family", ["chatml", "llama3"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_trained_tokens_are_transformers_assistant_mask(tmp_path, family, conversation):
    chatml = family == "chatml"
    spec = tiny.qwen_style() if chatml else tiny.llama3_style()
    template = CHATML_GENERATION if chatml else LLAMA3_GENERATION
    bos, eos = (None, "<|im_end|>") if chatml else ("<|begin_of_text|>", "<|eot_id|>")
    ours, hf = _pair(tmp_path, spec, template, bos, eos)
    messages = CONVERSATIONS[conversation]
    if chatml:  # the tagged template renders as the published untagged one
        assert hf.apply_chat_template(messages, tokenize=False) == \
            hf.apply_chat_template(messages, tokenize=False, chat_template=templates.QWEN2)
    oracle = hf.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, trainable = encode_trajectory(ours, messages)
    assert ids == list(oracle["input_ids"])
    assert [int(t) for t in trainable] == list(oracle["assistant_masks"])
