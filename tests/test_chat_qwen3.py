"""Qwen3's hybrid-thinking chat template, rendered in Python, against transformers running the published Jinja.

Oracle: transformers' apply_chat_template on templates.QWEN3 (text, ids, enable_thinking, continue_final_message),
and the same HF fast tokenizer for the SFT encoding. Templates derived from Qwen3's must be refused, not rendered
as Qwen3: transformers shows they render differently."""
import json

import pytest
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

import tokenizer_templates as templates
import tokenizer_tiny as tiny
from minagent.tokenizer import load_tokenizer
from minagent.training.trajectories import encode_trajectory

U = lambda c: {"role": "user", "content": c}  # noqa: E731
S = lambda c: {"role": "system", "content": c}  # noqa: E731
T = lambda c: {"role": "tool", "content": c}  # noqa: E731


def A(content, **fields):
    return {"role": "assistant", "content": content, **fields}


CONVERSATIONS = {
    "user_only": [U("hi")],
    "system_user": [S("Be terse."), U("hi")],
    "think_in_history": [U("q1"), A("<think>\nr1\n</think>\n\na1"), U("q2"), A("<think>r2</think>a2")],
    "agent_steps": [S("You are an agent."), U("task"), A("<think>\nplan\n</think>\n\nThought: search"),
                    T("obs one"), T("obs two"), A("<think>done</think>Final answer: 4")],
    "reasoning_fields": [U("q"), A("x", reasoning_content="R1"), T("o"), A("y", thinking="T2"), T("p"),
                         A("z", reasoning_content="")],
    "observations_as_user": [U("q"), A("a1"), U("obs"), A("a2")],
    "wrapped_tool_response_user": [U("q"), A("a1"), U("<tool_response>\nx\n</tool_response>"), A("a2")],
    "no_user": [S("s"), A("a"), A("b")],
    "late_system": [U("q"), S("late"), A("a")],
    "empty": [U(""), A("")],
    "special_text": [U('{{ x }} {% if %} "q" \'s ünï😀\r\n'), A("\n\n<think>\n\n</think>\n\n  spaced ")],
    "nested_think": [U("q"), A("<think>a<think>b</think>c</think>d")],
}


@pytest.fixture(scope="module")
def qwen3_pair(tmp_path_factory):
    """(our Tokenizer, HF fast tokenizer), both with Qwen3's template and its <think> / </think> added tokens."""
    from transformers import PreTrainedTokenizerFast

    backend = HFTokenizer.from_str(json.dumps(tiny.qwen_style()))
    backend.add_tokens([AddedToken("<think>", special=False, normalized=False),
                        AddedToken("</think>", special=False, normalized=False)])
    d = tmp_path_factory.mktemp("qwen3")
    (d / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": templates.QWEN3, "bos_token": None,
                                                         "eos_token": "<|im_end|>"}), encoding="utf-8")
    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(backend.to_str()), eos_token="<|im_end|>")
    hf.chat_template = templates.QWEN3
    return load_tokenizer(d), hf


def _ours(tok, enable_thinking):
    tok.chat_renderer.enable_thinking = enable_thinking
    return tok


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("enable_thinking", [None, False, True])
def test_qwen3_renders_and_encodes_as_transformers(qwen3_pair, conversation, add_generation_prompt,
                                                   enable_thinking):
    ours, hf = qwen3_pair
    messages = CONVERSATIONS[conversation]
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                      **kwargs)
    got = _ours(ours, enable_thinking).apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert got == expected
    ids = hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)["input_ids"]
    assert ours.encode(got) == list(ids)


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_qwen3_continue_final_message_as_transformers(qwen3_pair, conversation):
    ours, hf = qwen3_pair
    messages = CONVERSATIONS[conversation]
    try:
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                          continue_final_message=True)
    except ValueError:  # the template rewrote the final message (its <think> markup): nothing to continue
        with pytest.raises(ValueError, match="continue_final_message"):
            _ours(ours, None).apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True)
    else:
        assert _ours(ours, None).apply_chat_template(messages, add_generation_prompt=False,
                                                     continue_final_message=True) == expected


@pytest.mark.parametrize("conversation", ["agent_steps", "think_in_history", "observations_as_user",
                                          "reasoning_fields"])
def test_qwen3_sft_trains_exactly_each_assistant_turn_as_rendered(qwen3_pair, conversation):
    """The trained tokens are what the model writes after `<|im_start|>assistant\\n`: the think block the template
    puts there (or not), the answer and <|im_end|>; the ids are those of the whole rendered text."""
    ours, hf = qwen3_pair
    messages = CONVERSATIONS[conversation]
    text = hf.apply_chat_template(messages, tokenize=False)
    ids, trainable = encode_trajectory(_ours(ours, None), messages)
    assert ids == hf(text, add_special_tokens=False)["input_ids"]
    turns = [part.split("<|im_end|>")[0] + "<|im_end|>" for part in text.split("<|im_start|>assistant\n")[1:]]
    runs = "".join(hf.decode([i]) if t else "\0" for i, t in zip(ids, trainable)).split("\0")
    assert [r for r in runs if r] == turns


def test_qwen3_drops_no_role_silently(qwen3_pair):
    """The template skips a role it does not know (transformers renders nothing for it); we refuse."""
    ours, hf = qwen3_pair
    messages = [U("q"), {"role": "observation", "content": "obs"}]
    assert "obs" not in hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(ValueError, match=r"messages\[1\]: role 'observation'"):
        _ours(ours, None).apply_chat_template(messages)


# Qwen3-2507's thinking models open the think block in the generation prompt; QwQ-style templates drop it from
# history; an edited copy renders the same conversation differently: none of them may be rendered as Qwen3.
DERIVATIVES = {
    "thinking_2507_prompt": templates.QWEN3.replace(
        "{{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking",
        "{{- '<|im_start|>assistant\\n<think>\\n' }}\n    {%- if enable_thinking"),
    "no_think_in_history": templates.QWEN3.replace("{%- if loop.last or (not loop.last and reasoning_content) %}",
                                                   "{%- if false %}"),
}


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_qwen3_derivatives_are_refused_not_rendered_as_qwen3(qwen3_pair, tmp_path, name):
    ours, hf = qwen3_pair
    template = DERIVATIVES[name]
    assert template != templates.QWEN3
    messages = [U("q"), A("<think>r</think>a")]
    assert hf.apply_chat_template(messages, tokenize=False, chat_template=template, add_generation_prompt=True) != \
        hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tiny.qwen_style()), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    with pytest.raises(ValueError, match="not Qwen3's published one"):
        load_tokenizer(tmp_path).apply_chat_template(messages)


def test_qwen3_template_is_recognised_with_crlf_line_ends(qwen3_pair, tmp_path):
    """A copy saved with Windows line ends (and a final newline) renders as the original in Jinja: still Qwen3."""
    ours, hf = qwen3_pair
    template = templates.QWEN3.replace("\n", "\r\n") + "\n"
    messages = CONVERSATIONS["agent_steps"]
    expected = hf.apply_chat_template(messages, tokenize=False, chat_template=template, add_generation_prompt=True)
    assert expected == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tiny.qwen_style()), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    assert load_tokenizer(tmp_path).apply_chat_template(messages) == expected
