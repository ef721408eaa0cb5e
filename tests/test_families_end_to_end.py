"""Each supported family end to end, from a checkpoint directory laid out as users download it to a chat reply.

Per family: a tiny random model saved by transformers (save_pretrained: config.json, model.safetensors,
generation_config.json) next to a tokenizer in the family's real layout (tokenizer.json, tokenizer_config.json with
the published chat template and bos/eos tokens, generation_config.json with the family's eos ids).

Oracle: transformers itself on the same directory: AutoModelForCausalLM.generate over
AutoTokenizer.apply_chat_template(..., add_generation_prompt=True), greedy, which stops at its generation_config's
eos ids; and apply_chat_template's ids for the agent's conversation (minagent.agent.llm.MinagentLLM.prompt_ids)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

import hf_tiny
import tokenizer_templates as templates
import tokenizer_tiny as tiny
from minagent import load_model, load_tokenizer
from minagent.agent.llm import MinagentLLM, render_messages
from minagent.chat import chat_reply
from minagent.generation import SamplingParams, generate

transformers = pytest.importorskip("transformers")

SMOLLM2 = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct"
MAX_NEW = 8
CHAT = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "What is 6*7? Say it."}]
AGENT_RUN = [{"role": "system", "content": "You are an agent. Answer with code."},
             {"role": "user", "content": "6*7?"},
             {"role": "assistant", "content": "Thought: compute.\nCode:\n```py\nprint(6*7)\n```<end_code>"},
             {"role": "tool", "content": "Observation:\nExecution logs:\n42"}]


def _qwen_tokenizer(extra=()) -> dict:
    tok = HFTokenizer.from_str(json.dumps(tiny.qwen_style()))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    return json.loads(tok.to_str())


def _llama3_tokenizer() -> dict:
    tok = HFTokenizer.from_str(json.dumps(tiny.llama3_style()))
    tok.add_special_tokens([AddedToken("<|eom_id|>", special=True, normalized=False)])
    return json.loads(tok.to_str())


def _mistral_v3_tokenizer() -> dict:
    import test_chat_mistral as mistral
    return mistral._spec("v3")


def _smollm2_tokenizer() -> dict:
    if not (SMOLLM2 / "tokenizer.json").is_file():
        pytest.skip("models/SmolLM2-135M-Instruct not fetched (python infer.py fetch)")
    return json.loads((SMOLLM2 / "tokenizer.json").read_text(encoding="utf-8"))


# family -> (hf_tiny-style architecture, tokenizer builder, chat template, tokenizer_config tokens,
#            generation_config eos tokens (as published), model vocab padding beyond the tokenizer)
FAMILIES = {
    "qwen2.5": (("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True, rope_theta=1e6)),
                _qwen_tokenizer, templates.QWEN25,
                {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                ["<|im_end|>", "<|endoftext|>"], 7),
    "qwen3": (("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, tie_word_embeddings=True, rope_theta=1e6)),
              lambda: _qwen_tokenizer(["<think>", "</think>"]), templates.QWEN3,
              {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
              ["<|im_end|>", "<|endoftext|>"], 5),
    "llama3.2": (("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, rope_theta=500000.0, head_dim=16,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
                 _llama3_tokenizer, templates.LLAMA32,
                 {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                 ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], 0),
    "llama3.1": (("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
                 _llama3_tokenizer, templates.LLAMA31_FIXED_DATE,
                 {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                 ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], 0),
    "mistral-v0.3": (("MistralConfig", "MistralForCausalLM", dict(sliding_window=None, head_dim=16)),
                     _mistral_v3_tokenizer, templates.MISTRAL_V3, {"bos_token": "<s>", "eos_token": "</s>"},
                     ["</s>"], 0),
    "smollm2": (("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True, rope_theta=100000.0)),
                _smollm2_tokenizer, None, None, ["<|im_end|>"], 0),
}


def _build(family: str, directory: Path, seed: int = 0) -> Path:
    """The checkpoint directory of `family`, written by transformers and tokenizers as the Hub ships it."""
    (cfg_name, model_name, overrides), make_tokenizer, template, tokens, gen_eos, padding = FAMILIES[family]
    spec = make_tokenizer()
    hf_tok = HFTokenizer.from_str(json.dumps(spec))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    if template is None:  # SmolLM2: its own tokenizer_config.json, as downloaded
        shutil.copy(SMOLLM2 / "tokenizer_config.json", directory / "tokenizer_config.json")
    else:
        (directory / "tokenizer_config.json").write_text(json.dumps(
            {**tokens, "chat_template": template, "tokenizer_class": "PreTrainedTokenizerFast"}), encoding="utf-8")
    eos_ids = [hf_tok.token_to_id(t) for t in gen_eos]
    cfg = getattr(transformers, cfg_name)(**{**hf_tiny.COMMON, **overrides,
                                             "vocab_size": hf_tok.get_vocab_size() + padding,
                                             "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids})
    torch.manual_seed(seed)
    # projections larger than the embeddings: a tied model then does not just repeat its last token
    model = hf_tiny.randomize(getattr(transformers, model_name)(cfg).eval(), std=0.25)
    model.generation_config = transformers.GenerationConfig(eos_token_id=eos_ids, do_sample=False)
    model.save_pretrained(directory)
    return directory


def _hf(directory: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(directory)


def _hf_reply_ids(model, hf_tok, messages, eos_ids=None) -> list[int]:
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    kwargs = {} if eos_ids is None else {"eos_token_id": eos_ids}
    out = model.generate(**ids, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0, **kwargs)
    return out[0, ids["input_ids"].shape[1]:].tolist()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    directory = _build(request.param, tmp_path_factory.mktemp(request.param.replace(".", "_")))
    return request.param, directory


def test_chat_reply_equals_transformers_generate(family):
    """Greedy reply: same prompt ids, same tokens, same stop; with one of the model's own tokens made an eos id
    (written to generation_config.json) both must stop right before it."""
    name, directory = family
    hf_model, hf_tok = _hf(directory)
    model, tok = load_model(directory, dtype="float32", device="cpu"), load_tokenizer(directory)
    prompt = tok.encode(tok.apply_chat_template(CHAT, add_generation_prompt=True))
    assert prompt == list(hf_tok.apply_chat_template(CHAT, add_generation_prompt=True)["input_ids"])
    free = _hf_reply_ids(hf_model, hf_tok, CHAT)
    ours = generate(model, [prompt], SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0,
                                                    stop_ids=tuple(tok.stop_token_ids)), tokenizer=tok)[0]
    stop_ids = set(hf_model.generation_config.eos_token_id)
    assert ours.token_ids == [t for t in free if t not in stop_ids], name
    assert chat_reply(model, tok, CHAT, SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0)) == \
        hf_tok.decode(free, skip_special_tokens=True)
    # make the third generated token an end of turn, as transformers reads it from generation_config.json
    if len(free) >= 3 and free[2] not in stop_ids:
        stop_at = free[2]
        gen = json.loads((directory / "generation_config.json").read_text())
        gen["eos_token_id"] = [*gen["eos_token_id"], stop_at]
        (directory / "generation_config.json").write_text(json.dumps(gen))
        try:
            hf_stopped = _hf_reply_ids(hf_model, hf_tok, CHAT, gen["eos_token_id"])
            tok2 = load_tokenizer(directory)
            got = generate(model, [prompt], SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0,
                                                           stop_ids=tuple(tok2.stop_token_ids)), tokenizer=tok2)[0]
            assert hf_stopped[-1] == stop_at and got.token_ids == hf_stopped[:-1]
        finally:
            gen["eos_token_id"] = gen["eos_token_id"][:-1]
            (directory / "generation_config.json").write_text(json.dumps(gen))


def test_stop_ids_cover_transformers_eos_ids(family):
    """The reply stops wherever transformers' generate stops (its generation_config eos ids). minagent also stops at
    the family's other end-of-turn/document specials (loading.END_TOKENS: SmolLM2's <|endoftext|>), on purpose."""
    name, directory = family
    hf_model, hf_tok = _hf(directory)
    tok = load_tokenizer(directory)
    eos = set(hf_model.generation_config.eos_token_id)
    assert eos <= set(tok.stop_token_ids), name
    extra = {hf_tok.convert_ids_to_tokens(i) for i in set(tok.stop_token_ids) - eos}
    assert extra <= {"<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>"}, name


@pytest.mark.parametrize("role", ["user", "tool"])
@pytest.mark.parametrize("prefix", ["", "Thought:"])
def test_agent_prompt_ids_equal_transformers(family, prefix, role):
    """system + task + step + observation, observations as user turns (the default) or as tool turns (a model
    trained with --observation-role tool; Mistral's templates refuse those, see test_chat_mistral)."""
    name, directory = family
    if role == "tool" and name.startswith("mistral"):
        pytest.skip("Mistral's [INST] templates raise on tool turns without tool calls")
    hf_tok = transformers.AutoTokenizer.from_pretrained(directory)
    tok = load_tokenizer(directory)
    messages = render_messages(AGENT_RUN, role)
    if prefix:
        expected = hf_tok.apply_chat_template(messages + [{"role": "assistant", "content": prefix}],
                                              continue_final_message=True)["input_ids"]
    else:
        expected = hf_tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert MinagentLLM(None, tok, observation_role=role).prompt_ids(AGENT_RUN, prefix) == list(expected)
