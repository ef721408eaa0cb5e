"""Chat formats end to end: template variants we must render as transformers does (or refuse), trajectories encoded
as inference encodes the same conversation, and the observation role carried from training to the agent.

Oracle: transformers' apply_chat_template (Jinja) on the same template text, and the same HF fast tokenizer
encoding the whole rendered text."""
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

import tokenizer_templates as templates
import tokenizer_tiny as tiny
from minagent.tokenizer import load_tokenizer
from minagent.tokenizer.chat_templates import detect_chat_template
from minagent.training.data import _sft_rows
from minagent.training.recipe import TrainConfig
from minagent.training.trajectories import encode_trajectory, read_trajectories

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def qwen_spec():
    return tiny.qwen_style()


def _pair(tmp_path, spec, template, bos=None, eos="<|im_end|>"):
    from transformers import PreTrainedTokenizerFast

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "bos_token": bos,
                                                                "eos_token": eos}), encoding="utf-8")
    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(json.dumps(spec)), bos_token=bos,
                                 eos_token=eos)
    hf.chat_template = template
    return load_tokenizer(tmp_path), hf


# A ChatML template whose default system prompt holds a brace (Qwen2.5-Math-Instruct's "\\boxed{}") or is a
# double-quoted Jinja literal with an apostrophe (the system prompt used to be dropped silently).
QWEN25_MATH = templates.QWEN25.replace("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                                       "Please reason step by step, and put your final answer within \\\\boxed{}.")
QWEN2_DOUBLE_QUOTED = templates.QWEN2.replace(
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}",
    "{{ \"<|im_start|>system\\nYou're a helpful assistant.<|im_end|>\\n\" }}")
# InternLM2-style ChatML that starts with {{ bos_token }} (rendered without the BOS, silently, before).
CHATML_WITH_BOS = ("{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                   "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.mark.parametrize("name,template,bos", [("qwen25_math", QWEN25_MATH, None),
                                               ("double_quoted", QWEN2_DOUBLE_QUOTED, None),
                                               ("chatml_bos", CHATML_WITH_BOS, "<|endoftext|>")],
                         ids=["qwen25_math", "double_quoted", "chatml_bos"])
def test_chatml_variants_render_as_transformers_or_fail_loudly(tmp_path, qwen_spec, name, template, bos):
    assert template not in (templates.QWEN25, templates.QWEN2)
    ours, hf = _pair(tmp_path / name, qwen_spec, template, bos=bos)
    messages = [{"role": "user", "content": "1+1?"}]
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    try:
        got = ours.apply_chat_template(messages, add_generation_prompt=True)
    except ValueError:
        return  # a clear refusal is acceptable
    assert got == expected


# observation_role="tool" with Qwen2.5's template: consecutive tool turns are encoded segment by segment, so
#    "</tool_response>" + "\n<tool_response>" becomes '>', '\n' instead of the '>\n' that the whole rendered
#    text (transformers, and the agent's own prompt encoding) gives. The context ids the student trains on differ
#    from what it is shown at inference.
def test_consecutive_tool_turns_encode_like_the_whole_text(tmp_path, qwen_spec):
    ours, hf = _pair(tmp_path / "q25", qwen_spec, templates.QWEN25)
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Thought: a"},
                {"role": "tool", "content": "obs one"}, {"role": "tool", "content": "obs two"},
                {"role": "assistant", "content": "Thought: b"}]
    text = hf.apply_chat_template(messages, tokenize=False)
    ids, _ = encode_trajectory(ours, messages)
    assert ids == hf(text, add_special_tokens=False)["input_ids"]


# Trajectories in the OpenAI format (assistant turn with tool_calls and content "") are accepted; the
#    tool_calls are dropped silently and the model is trained to answer the task with an immediately closed,
#    empty turn. chat_templates.py says tool calls are "rejected"; the trajectory reader must reject them too.
def test_tool_calls_in_a_trajectory_are_rejected_not_dropped(tmp_path):
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "x"}}}]},
            {"role": "tool", "content": "result"}, {"role": "assistant", "content": "The answer is 4."}]
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"messages": msgs}) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"t\.jsonl:1: .*tool_calls"):
        read_trajectories(path)


# The held-out split is encoded with the same drop policy but an empty result raises "every trajectory was
#    longer than max length": one too-long held-out trajectory aborts the whole SFT run although the train split
#    is fine and the policy is "drop".
def test_a_too_long_held_out_trajectory_does_not_abort_the_run(tmp_path, tiny_dir):
    short = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    long = {"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "t.jsonl"
    rows = [short] * 19 + [long]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for seed in range(50):  # a seed whose single held-out trajectory is the long one
        cfg = TrainConfig(model=str(tiny_dir), data=str(path), out=str(tmp_path / "out"), max_length=256,
                          eval_fraction=0.05, seed=seed)
        from minagent.training.data import split_indices
        _, held = split_indices(len(rows), cfg.eval_fraction, seed)
        if list(held) == [19]:
            break
    else:
        pytest.skip("no seed holds out the long trajectory")
    train, evals = _sft_rows(cfg, load_tokenizer(tiny_dir), str(path), cfg.eval_fraction, log=lambda *_: None)
    assert train.num_targets() > 0


def test_the_observation_role_a_model_was_trained_with_reaches_the_agent(tmp_path, tiny_dir):
    """An SFT export records --observation-role; load_llm renders the agent's observations with it, so the prompt
    the agent encodes is the context the trajectory was trained on (Qwen2.5's <tool_response> turns here)."""
    import shutil

    from minagent.agent.commands import load_llm
    from minagent.agent.llm import MinagentLLM
    from minagent.chat import AGENT_SETTINGS_FILE, agent_settings, write_agent_settings

    model_dir = tmp_path / "student"
    shutil.copytree(tiny_dir, model_dir)
    assert agent_settings(model_dir) == {} and load_llm(str(model_dir)).observation_role == "user"
    write_agent_settings(model_dir, "tool")
    llm = load_llm(str(model_dir))
    assert llm.observation_role == "tool"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Thought: a<end_code>"},
                {"role": "tool", "content": "obs one"}, {"role": "tool", "content": "obs two"}]
    trained = encode_trajectory(llm.tok, messages + [{"role": "assistant", "content": "Thought: b"}])[0]
    prompt = llm.prompt_ids(messages)
    assert trained[:len(prompt)] == prompt and "<tool_response>" in llm.tok.decode(prompt)
    as_user = MinagentLLM(llm.model, llm.tok).prompt_ids(messages)
    assert as_user != prompt
    (model_dir / AGENT_SETTINGS_FILE).write_text('{"observation_role": "observer"}')
    with pytest.raises(ValueError, match="observation_role must be one of"):
        load_llm(str(model_dir))


SMOLLM2_CONFIG = Path(__file__).resolve().parent.parent / "models" / "SmolLM2-135M-Instruct" / "tokenizer_config.json"


@pytest.mark.skipif(not SMOLLM2_CONFIG.is_file(), reason="SmolLM2 tokenizer_config.json not present")
def test_apostrophe_in_a_jinja_comment_keeps_the_default_system():
    template = json.loads(SMOLLM2_CONFIG.read_text())["chat_template"]
    want = detect_chat_template(template, set()).default_system
    assert want  # 'You are a helpful AI assistant named SmolLM, trained by Hugging Face'
    commented = "{#- the model's default system prompt -#}\n" + template
    assert detect_chat_template(commented, set()).default_system == want  # (the quote in the comment paired wrongly)
