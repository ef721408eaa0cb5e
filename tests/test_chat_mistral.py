"""Mistral's [INST] chat templates (Mistral-7B-Instruct-v0.1/v0.2 "v1", v0.3 "v3", Mistral-Nemo "Tekken"), rendered
in Python, against transformers running the published Jinja text.

Oracle: transformers' apply_chat_template on templates.MISTRAL_V1 / MISTRAL_V3 / MISTRAL_TEKKEN (text, token ids,
the errors the templates raise, continue_final_message), its return_assistant_tokens_mask on the same templates
with the assistant output wrapped in {% generation %} (the SFT mask), and the same HF fast tokenizer encoding.
Tokenizers: tiny ones trained here in the layouts these checkpoints ship, each adding <s> when asked for special
tokens (so a double BOS would show): SentencePiece-style Metaspace BPE with byte fallback (v1: [INST] is plain
text; v3: [INST], [/INST] and the tool tokens are control tokens) and byte-level BPE (Tekken)."""
import json

import jinja2
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

import tokenizer_templates as templates
import tokenizer_tiny as tiny
from minagent.agent.llm import MinagentLLM, render_messages
from minagent.tokenizer import load_tokenizer
from minagent.tokenizer.chat_templates import MistralInst
from minagent.training.trajectories import encode_trajectory
from tokenizer_corpus import mixed_text

U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731
S = lambda c: {"role": "system", "content": c}  # noqa: E731
T = lambda c: {"role": "tool", "content": c}  # noqa: E731

TOOL_TOKENS = ["[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]
TEMPLATES = {"v1": templates.MISTRAL_V1, "v3": templates.MISTRAL_V3, "tekken": templates.MISTRAL_TEKKEN}
# the assistant output each template writes, to wrap in {% generation %} for transformers' assistant mask
REPLIES = {"v1": "{{- ' ' + message['content'] + eos_token}}",
           "v3": '{{- " " + message["content"]|trim + eos_token}}',
           "tekken": '{{- message["content"] + eos_token}}'}

CONVERSATIONS = {
    "user_only": [U("Hello, who are you?")],
    "system_user": [S("You answer briefly."), U("2+2?")],
    "multi_turn": [U("Capital of France?"), A("Paris."), U("And Japan?")],
    "system_multi_turn_sft": [S("Be terse."), U("Capital of France?"), A("Paris."), U("And Japan?"),
                              A("Thought: easy.\nCode:\n```py\nfinal_answer('Tokyo')\n```<end_code>")],
    "agent_steps": [S("You are an agent. Answer with code."), U("6*7?"),
                    A("Thought: compute.\nCode:\n```py\nprint(6*7)\n```<end_code>"), U("Observation:\n42"),
                    A("Thought: done.\nCode:\n```py\nfinal_answer(42)\n```<end_code>"), U("Observation:\n42")],
    "whitespace": [S("  sys  "), U("  padded \n"), A("\n spaced  "), U("日本語 ✅")],
    "special_text": [U('{{ x }} {% if %} "q" \'s [INST] [/INST] ünï'), A("</s> not the end [INST]")],
    "empty": [S(""), U(""), A(""), U("")],
    "system_only": [S("only a system prompt")],
}
# Conversations the templates refuse (raise_exception); ours must refuse them too, saying what is wrong.
REFUSED = {
    "two_users": ([U("a"), U("b")], r"messages\[1\]: a user turn where .* needs a assistant|alternate"),
    "assistant_first": ([A("a")], r"messages\[0\]: .*alternate"),
    "system_then_assistant": ([S("s"), A("a")], r"messages\[1\]: .*alternate"),
    "two_assistants": ([U("q"), A("a"), A("b")], r"messages\[2\]: .*alternate"),
    "late_system": ([U("q"), S("late")], r"messages\[1\]: a system message may only come first"),
    "tool_turn": ([U("q"), A("a"), T("obs")], r"messages\[2\]: role 'tool'.*observation_role 'user'"),
    "unknown_role": ([U("q"), {"role": "observation", "content": "o"}], r"messages\[1\]: role 'observation'"),
}


def _metaspace_bpe(specials: list[str]) -> dict:
    """SentencePiece-style tokenizer.json as transformers converts Llama/Mistral models: Metaspace prepend
    "always" without splitting, BPE with <0xNN> byte fallback, <s> added by the post-processor."""
    tok = HFTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False)
    tok.train_from_iterator([mixed_text(seed=s, min_chars=30_000) for s in range(1, 5)], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                             "split": False}
    return spec


def _tekken_style() -> dict:
    """Byte-level BPE (Tekken is tiktoken-based) with Mistral's control tokens, <s> added by the post-processor."""
    tok = tiny._train(tiny.LLAMA3_PATTERN, ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", *TOOL_TOKENS], nfc=False)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                      special_tokens=[("<s>", tok.token_to_id("<s>"))])])
    return json.loads(tok.to_str())


def _spec(form: str) -> dict:
    if form == "v1":
        return _metaspace_bpe(["<unk>", "<s>", "</s>"])
    if form == "v3":
        return _metaspace_bpe(["<unk>", "<s>", "</s>", "[INST]", "[/INST]", *TOOL_TOKENS])
    return _tekken_style()


def _write(directory, spec, template):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": template, "bos_token": "<s>", "eos_token": "</s>"}), encoding="utf-8")
    return load_tokenizer(directory)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """form -> (our Tokenizer, HF fast tokenizer, spec), both with the published template."""
    from transformers import PreTrainedTokenizerFast

    made = {}

    def get(form):
        if form not in made:
            spec = _spec(form)
            ours = _write(tmp_path_factory.mktemp(form), spec, TEMPLATES[form])
            hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                         eos_token="</s>")
            hf.chat_template = TEMPLATES[form]
            made[form] = (ours, hf, spec)
        return made[form]
    return get


@pytest.mark.parametrize("form", sorted(TEMPLATES))
def test_published_templates_are_recognised(pairs, form):
    ours, _, _ = pairs(form)
    assert isinstance(ours.chat_renderer, MistralInst) and ours.chat_renderer.form == form


@pytest.mark.parametrize("form", sorted(TEMPLATES))
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_renders_and_encodes_as_transformers(pairs, form, conversation, add_generation_prompt):
    ours, hf, _ = pairs(form)
    messages = CONVERSATIONS[conversation]
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    got = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert got == expected
    # the templates have no generation prompt: the flag changes nothing
    assert expected == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=not add_generation_prompt)
    ids = hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)["input_ids"]
    assert ours.encode(got) == list(ids)


@pytest.mark.parametrize("form", sorted(TEMPLATES))
def test_system_prompt_goes_where_the_template_puts_it(pairs, form):
    """v1: into the first user turn; v3 and Tekken: into the last message if it is a user turn, else nowhere."""
    ours, hf, _ = pairs(form)
    ending_with_user = [S("SYS"), U("q1"), A("a1"), U("q2")]
    ending_with_reply = ending_with_user + [A("a2")]
    for messages in (ending_with_user, ending_with_reply):
        expected = hf.apply_chat_template(messages, tokenize=False)
        assert ours.apply_chat_template(messages) == expected
    at_first = "SYS\n\nq1" in hf.apply_chat_template(ending_with_user, tokenize=False)
    at_last = "SYS\n\nq2" in hf.apply_chat_template(ending_with_user, tokenize=False)
    dropped = "SYS" not in hf.apply_chat_template(ending_with_reply, tokenize=False)
    assert (at_first, at_last, dropped) == ((True, False, False) if form == "v1" else (False, True, True))


@pytest.mark.parametrize("form", sorted(TEMPLATES))
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refuses_what_the_template_raises_on(pairs, form, case):
    ours, hf, _ = pairs(form)
    messages, message = REFUSED[case]
    with pytest.raises(jinja2.exceptions.TemplateError):
        hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(ValueError, match=message):
        ours.apply_chat_template(messages)


@pytest.mark.parametrize("form", ["v3", "tekken"])
def test_tool_calls_even_empty_are_refused(pairs, form):
    """An empty tool_calls list makes the v3/Tekken templates write a dangling "[TOOL_CALLS][" turn."""
    ours, hf, _ = pairs(form)
    messages = [U("q"), {"role": "assistant", "content": "a", "tool_calls": []}]
    assert "[TOOL_CALLS]" in hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(ValueError, match=r"messages\[1\]: tool_calls"):
        ours.apply_chat_template(messages)


@pytest.mark.parametrize("form", sorted(TEMPLATES))
@pytest.mark.parametrize("prefix", ["Thought: The first step is", "Thought: ", "  spaced prefix \n"])
@pytest.mark.parametrize("system", [False, True])
def test_continue_final_message_as_transformers(pairs, form, prefix, system):
    """The agent's first-thought prefix: the assistant turn is left open (no </s>) after a forced beginning."""
    ours, hf, _ = pairs(form)
    messages = ([S("Be terse.")] if system else []) + [U("What is 6*7?"), A(prefix)]
    expected = hf.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    assert ours.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True) == expected


@pytest.mark.parametrize("form", sorted(TEMPLATES))
@pytest.mark.parametrize("conversation", ["system_multi_turn_sft", "agent_steps", "whitespace", "empty",
                                          "special_text"])
def test_sft_trains_exactly_transformers_assistant_mask(pairs, form, conversation):
    """Each assistant turn is trained with its </s> (and the leading space the reply's first token carries), nothing
    of the [INST] turns; the ids are those of the whole rendered text."""
    ours, hf, _ = pairs(form)
    template = TEMPLATES[form]
    assert template.count(REPLIES[form]) == 1
    tagged = template.replace(REPLIES[form], "{% generation %}" + REPLIES[form] + "{% endgeneration %}")
    messages = CONVERSATIONS[conversation]
    assert hf.apply_chat_template(messages, tokenize=False, chat_template=tagged) == \
        hf.apply_chat_template(messages, tokenize=False)
    oracle = hf.apply_chat_template(messages, chat_template=tagged, return_dict=True,
                                    return_assistant_tokens_mask=True)
    ids, trainable = encode_trajectory(ours, messages)
    assert ids == list(oracle["input_ids"])
    assert [int(t) for t in trainable] == list(oracle["assistant_masks"])
    runs, run = [], []  # the trained stretches: one per assistant turn, each ending with </s>
    for i, t in zip(ids + [None], trainable + [False]):
        if t:
            run.append(i)
        elif run:
            runs, run = runs + [run], []
    assert len(runs) == sum(m["role"] == "assistant" for m in messages)
    assert all(r[-1] == hf.eos_token_id for r in runs)


@pytest.mark.parametrize("form", sorted(TEMPLATES))
def test_one_bos_although_the_tokenizer_adds_one(pairs, form):
    """The template writes <s>; the tokenizer's post-processor would add another with add_special_tokens=True.
    The prompt chat.py and the agent encode has exactly one, as transformers' tokenized apply_chat_template."""
    ours, hf, _ = pairs(form)
    messages = CONVERSATIONS["agent_steps"]
    text = ours.apply_chat_template(messages, add_generation_prompt=True)
    bos = hf.bos_token_id
    assert hf(text)["input_ids"][:2] == [bos, bos]  # the trap: encoding the prompt with special tokens
    ids = ours.encode(text)  # what chat_reply does
    assert ids == list(hf.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
    assert ids[0] == bos and ids[1] != bos
    assert MinagentLLM(None, ours).prompt_ids(messages) == ids


AGENT_RUN = [S("You are an agent. Answer with code."), U("Task: what is 6*7?"),
             A("Thought: compute.\nCode:\n```py\nprint(6*7)\n```<end_code>"),
             T("Observation:\nExecution logs:\n42"),
             A("Thought: check.\nCode:\n```py\nprint(42)\n```<end_code>"),
             {"role": "observation", "content": "Observation:\nExecution logs:\n42"}]


@pytest.mark.parametrize("form", sorted(TEMPLATES))
@pytest.mark.parametrize("prefix", ["", "Thought:"])
def test_agent_conversation_prompt_as_transformers(pairs, form, prefix):
    """system, task, step, observation, step, observation: with observations as user turns (the default) the
    agent's prompt ids are transformers' for the same messages."""
    ours, hf, _ = pairs(form)
    messages = render_messages(AGENT_RUN, "user")
    if prefix:
        expected = hf.apply_chat_template(messages + [A(prefix)], continue_final_message=True)["input_ids"]
    else:
        expected = hf.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert MinagentLLM(None, ours).prompt_ids(AGENT_RUN, prefix) == list(expected)


@pytest.mark.parametrize("form", sorted(TEMPLATES))
def test_agent_with_tool_observations_fails_clearly(pairs, form):
    """--observation-role tool: the templates raise (v1 knows no tool role; v3/Tekken need a tool_call_id)."""
    ours, hf, _ = pairs(form)
    with pytest.raises(jinja2.exceptions.TemplateError):
        hf.apply_chat_template(render_messages(AGENT_RUN, "tool"), tokenize=False, add_generation_prompt=True)
    with pytest.raises(ValueError, match=r"messages\[3\]: role 'tool'.*observation_role 'user'"):
        MinagentLLM(None, ours, observation_role="tool").prompt_ids(AGENT_RUN)


def test_stop_ids_include_eos(pairs):
    ours, hf, _ = pairs("v3")
    assert hf.eos_token_id in ours.stop_token_ids


# ---- recognition ---------------------------------------------------------------------------------------------------

# Mistral-7B-Instruct-v0.1/v0.2's original template (no system prompt, the reply glued to [/INST]), and a v0.3 copy
# edited in the wild to put the system prompt into the last *user* turn: transformers renders both differently
# from the published templates, so neither may be rendered as one of them.
ORIGINAL_V01 = ("{{ bos_token }}{% for message in messages %}"
                "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
                "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
                "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
                "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
                "{% endfor %}")
LAST_USER_V3 = templates.MISTRAL_V3.replace('{%- if loop.last and system_message is defined %}',
                                            '{%- if (message == user_messages[-1]) and system_message is defined %}')
EDITED = {"original_v01": ("v1", ORIGINAL_V01), "system_in_last_user_v3": ("v3", LAST_USER_V3)}


@pytest.mark.parametrize("name", sorted(EDITED))
def test_other_inst_templates_are_refused_by_name(pairs, tmp_path, name):
    form, template = EDITED[name]
    ours, hf, spec = pairs(form)
    assert template != TEMPLATES[form]
    messages = [U("q1"), A("a1"), U("q2"), A("a2")]
    if name == "system_in_last_user_v3":
        messages = [S("sys")] + messages
    assert hf.apply_chat_template(messages, tokenize=False, chat_template=template) != \
        hf.apply_chat_template(messages, tokenize=False)
    edited = _write(tmp_path, spec, template)
    with pytest.raises(ValueError, match=r"Mistral's \[INST\] format is implemented for the exact published"):
        edited.apply_chat_template(messages)


@pytest.mark.parametrize("form", sorted(TEMPLATES))
def test_recognised_with_crlf_line_ends(pairs, tmp_path, form):
    """A copy saved with Windows line ends renders as the original in Jinja: still recognised."""
    ours, hf, spec = pairs(form)
    template = TEMPLATES[form].replace("\n", "\r\n")
    messages = CONVERSATIONS["agent_steps"]
    expected = hf.apply_chat_template(messages, tokenize=False, chat_template=template)
    assert expected == hf.apply_chat_template(messages, tokenize=False)
    assert _write(tmp_path, spec, template).apply_chat_template(messages) == expected


def test_template_without_eos_token_is_refused(pairs, tmp_path):
    _, _, spec = pairs("v3")
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": templates.MISTRAL_V3, "bos_token": "<s>", "eos_token": None}), encoding="utf-8")
    with pytest.raises(ValueError, match="lacks eos_token"):
        load_tokenizer(tmp_path).apply_chat_template([U("q")])


# ---- the SentencePiece backend (what real Mistral checkpoints load: their tokenizer.model) -------------------------

def test_v1_prompt_ids_on_the_real_sentencepiece_model(tmp_path):
    """Mistral-7B's tokenizer.model with the published v1 template: the prompt ids must be transformers' and Mistral's
    own reference (each turn a separate sp.encode: bos + "[INST] ... [/INST]" + reply + eos + ...)."""
    pytest.importorskip("google.protobuf", reason="transformers needs protobuf to convert a SentencePiece model")
    import shutil

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    import tokenizer_assets as assets

    shutil.copy(assets.mistral_sentencepiece_model(), tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": templates.MISTRAL_V1, "bos_token": "<s>", "eos_token": "</s>"}), encoding="utf-8")
    ours = load_tokenizer(tmp_path)
    hf = LlamaTokenizer.from_pretrained(str(tmp_path), legacy=False)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    messages = [S("Be terse."), U("hi"), A("yo there"), U("q")]
    reference = [1] + sp.encode("[INST] Be terse.\n\nhi [/INST]") + sp.encode("yo there") + [2] + \
        sp.encode("[INST] q [/INST]")
    assert list(hf.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]) == reference
    assert ours.encode(ours.apply_chat_template(messages)) == reference
