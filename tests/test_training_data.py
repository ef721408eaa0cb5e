"""Training data: the assistant-only loss mask (vs HF tokenizers' offsets), trajectory and corpus errors, packing
(vs the HF model run on each document alone), CPT reading and its on-disk cache."""
import json

import numpy as np
import pytest
import torch
import transformers

from minagent.tokenizer import load_tokenizer
from minagent.training.cpt_data import read_cpt_documents, tokenize_corpus
from minagent.training.errors import TrainingDataError
from minagent.training.objective import PackedLMLoss
from minagent.training.packing import IGNORE, example_targets, pack_examples, pack_stream
from minagent.training.trajectories import encode_trajectories, encode_trajectory, read_trajectories
from training_tiny import MANUALS, TRAJECTORIES, write_jsonl

THREE_TURNS = [
    {"role": "system", "content": "You solve tasks with code. Answer with final_answer."},
    {"role": "user", "content": "How many commits does `git log --oneline | wc -l` count?"},
    {"role": "assistant", "content": "Thought: I will run it.\nCode:\n```py\nprint(run('git log --oneline'))\n"
                                     "```<end_code>"},
    {"role": "tool", "content": "Observation:\nExecution logs:\nabc123 first\ndef456 second\n"
                                "Last output from code snippet:\nNone"},
    {"role": "assistant", "content": "Thought: Two lines; let me check with len.\nCode:\n```py\n"
                                     "print(len(['abc123', 'def456']))\n```<end_code>"},
    {"role": "observation", "content": "Observation:\nExecution logs:\n2\nLast output from code snippet:\nNone"},
    {"role": "assistant", "content": "Thought: It counts 2 commits.\nCode:\n```py\nfinal_answer(2)\n```<end_code>"},
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smollm2_tokenizer_dir(smollm2_gguf):
    from tokenizer_assets import smollm2_hf_export

    return smollm2_hf_export(smollm2_gguf)


def _as_user(messages):
    return [{**m, "role": "user"} if m["role"] in ("tool", "observation") else m for m in messages]


@pytest.mark.parametrize("which", ["smollm2", "tiny-qwen2.5-template"])
def test_loss_mask_is_exactly_the_assistant_tokens(which, request, tmp_path_factory):
    directory = request.getfixturevalue("smollm2_tokenizer_dir" if which == "smollm2" else "tiny_dir")
    ours = load_tokenizer(directory)
    hf = transformers.AutoTokenizer.from_pretrained(str(directory))
    messages = _as_user(THREE_TURNS)
    text = hf.apply_chat_template(messages, tokenize=False)
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, trainable = encode_trajectory(ours, messages)
    assert ids == enc["input_ids"]  # same ids as the oracle encoding the whole rendered text
    # the oracle's trained spans: each assistant content and the <|im_end|> right after it, found in the text
    spans, at = [], 0
    for m in messages:
        if m["role"] == "assistant":
            start = text.index("<|im_start|>assistant\n" + m["content"] + "<|im_end|>", at) + len(
                "<|im_start|>assistant\n")
            at = start + len(m["content"]) + len("<|im_end|>")
            spans.append((start, at))
    assert len(spans) == 3
    want = [any(s <= a and b <= e for s, e in spans) for a, b in enc["offset_mapping"]]
    assert trainable == want
    runs = "".join(hf.decode([i]) if t else "\0" for i, t in zip(ids, trainable)).split("\0")
    assert [r for r in runs if r] == [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    # targets: position i is trained to predict token i+1 exactly when token i+1 is an assistant token
    targets = example_targets(ids, trainable)
    assert [i for i, t in enumerate(targets) if t != IGNORE] == [i - 1 for i, t in enumerate(trainable) if t and i]
    assert all(targets[i] == ids[i + 1] for i in range(len(ids) - 1) if targets[i] != IGNORE)


def test_observation_role_tool_uses_the_templates_tool_turn(tiny_dir):
    ours = load_tokenizer(tiny_dir)
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_dir))
    messages = [{**m, "role": "tool"} if m["role"] == "observation" else m for m in THREE_TURNS]
    ids, _ = encode_trajectory(ours, messages)
    assert ours.decode(ids) == hf.apply_chat_template(messages, tokenize=False)  # Qwen2.5: <tool_response>
    assert "<tool_response>" in ours.decode(ids)


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ('{"messages": "hi"}', r'expected \{"messages": \[\.\.\.\]\} or a JSON list of messages'),
    ('{"messages": []}', "the messages list is empty"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}',
     r"messages\[1\].role is 'bot'"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}',
     r"messages\[1\].content must be a string"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "obs"}]}',
     "no assistant turn with content"),
    # OpenAI's format: a call's content is null; the message must say what is wrong (the call), not the null
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": '
     '[{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]}]}',
     r"messages\[1\]\.tool_calls: tool calls are not supported"),
]


@pytest.mark.parametrize("line,message", BAD_LINES)
def test_malformed_trajectory_line_names_file_and_line(tmp_path, line, message):
    good = json.dumps({"messages": THREE_TURNS})
    path = write_jsonl(tmp_path / "t.jsonl", [good, "", line, good])
    with pytest.raises(TrainingDataError, match=rf"t\.jsonl:3: {message}"):
        read_trajectories(path, on_bad_line="fail")
    logged = []
    got = read_trajectories(path, on_bad_line="skip", log=logged.append)
    assert [t.where for t in got] == [f"{path}:1", f"{path}:4"]
    assert len(logged) == 2 and f"{path}:3" in logged[0]
    assert logged[1] == f"WARNING: {path}: 1 malformed line skipped (--on-bad-line skip), 2 trajectories read"


def test_file_of_only_bad_lines_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", ["[]", "{}"])
    with pytest.raises(TrainingDataError, match=r"no usable trajectory \(2 malformed lines skipped\)"):
        read_trajectories(path, on_bad_line="skip", log=lambda *_: None)
    with pytest.raises(FileNotFoundError, match="no such trajectory file"):
        read_trajectories(tmp_path / "missing.jsonl")
    with pytest.raises(TrainingDataError, match=r"a directory; sft --data is a trajectory JSONL file"):
        read_trajectories(MANUALS)  # it exists: not "no such file"


def test_truncation_policies(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    trajs = read_trajectories(TRAJECTORIES)
    lengths = [len(encode_trajectory(tok, t.messages)[0]) for t in trajs]
    limit = sorted(lengths)[len(lengths) // 2]
    too_long = [t.where for t, n in zip(trajs, lengths) if n > limit]
    logged = []
    kept = encode_trajectories(trajs, tok, limit, "drop", log=logged.append)
    assert len(kept) == len(trajs) - len(too_long)
    assert all(any(w in line for line in logged) for w in too_long)
    cut = encode_trajectories(trajs, tok, limit, "truncate", log=lambda *_: None)
    assert len(cut) == len(trajs) and max(len(e.ids) for e in cut) == limit
    full = {e.where: e for e in encode_trajectories(trajs, tok, 10**6, "fail")}
    for e in cut:  # a truncated example is the start of the full one, mask included
        assert e.ids == full[e.where].ids[:len(e.ids)] and e.trainable == full[e.where].trainable[:len(e.ids)]
    with pytest.raises(TrainingDataError, match=rf"{too_long[0]}: \d+ tokens, more than --max-length {limit}"):
        encode_trajectories(trajs, tok, limit, "fail")
    with pytest.raises(TrainingDataError, match="every trajectory was longer than max length 5"):
        encode_trajectories(trajs, tok, 5, "drop", log=lambda *_: None)


def test_packed_rows_compute_each_document_as_if_alone(tiny_dir):
    """Oracle: transformers runs every document on its own; the packed loss must equal the sum of theirs."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    import minagent

    ours = minagent.load_model(tiny_dir, dtype="float32")
    tok = load_tokenizer(tiny_dir)
    examples = [(e.ids, e.trainable) for e in encode_trajectories(read_trajectories(TRAJECTORIES)[:5], tok, 4096)]
    rows = pack_examples(examples, 1024, pad_id=0)
    assert len(rows) < len(examples)  # several documents share a row
    want = 0.0
    for ids, trainable in examples:
        logits = hf(torch.tensor([ids])).logits[0]
        t = torch.from_numpy(example_targets(ids, trainable))
        want += torch.nn.functional.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum").item()
    with torch.no_grad():
        got = PackedLMLoss(ours)(*[torch.from_numpy(a) for a in (rows.tokens, rows.targets, rows.positions,
                                                                 rows.doc_ids)])
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert rows.num_targets() == sum(int((example_targets(i, t) != IGNORE).sum()) for i, t in examples)
    # a row holding exactly one document takes the unmasked causal path: same loss as the oracle's
    ids, trainable = examples[0]
    one = pack_examples([examples[0]], len(ids), pad_id=0)
    assert (one.doc_ids == 0).all()
    logits = hf(torch.tensor([ids])).logits[0]
    want = torch.nn.functional.cross_entropy(logits, torch.from_numpy(example_targets(ids, trainable)),
                                             ignore_index=IGNORE, reduction="sum").item()
    with torch.no_grad():
        got = PackedLMLoss(ours)(*[torch.from_numpy(a) for a in (one.tokens, one.targets, one.positions,
                                                                one.doc_ids)])
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_pack_stream_by_hand():
    # docs: [10 11 12 EOS=2] [20 21 EOS=2], rows of 3 inputs
    stream = np.array([10, 11, 12, 2, 20, 21, 2])
    owner = np.array([0, 0, 0, 0, 1, 1, 1])
    rows = pack_stream(stream, owner, 3, pad_id=0)
    assert rows.tokens.tolist() == [[10, 11, 12], [2, 20, 21]]
    assert rows.targets.tolist() == [[11, 12, 2], [IGNORE, 21, 2]]  # EOS never predicts the next document
    assert rows.doc_ids.tolist() == [[0, 0, 0], [0, 1, 1]]
    assert rows.positions.tolist() == [[0, 1, 2], [0, 0, 1]]
    rows = pack_stream(stream, owner, 4, pad_id=0)  # last row padded: pad is its own document, never trained
    assert rows.tokens.tolist() == [[10, 11, 12, 2], [20, 21, 2, 0]]
    assert rows.targets.tolist() == [[11, 12, 2, IGNORE], [21, 2, IGNORE, IGNORE]]
    assert rows.doc_ids[1].tolist() == [1, 1, 1, 2]


def test_cpt_reads_manuals_html_as_text_and_caches_tokens(tiny_dir, tmp_path):
    docs = read_cpt_documents(MANUALS)
    assert [d.source for d in docs] == ["git-branch.html", "git-log.txt", "git-stash.md"]
    html = docs[0].text
    assert "git-branch - List, create, or delete branches" in html and "<p>" not in html and "var x" not in html
    assert "-d | Delete a branch." in html  # a table row stays one readable line
    tok = load_tokenizer(tiny_dir)
    stream, owner = tokenize_corpus(docs, tok, tiny_dir, tmp_path / "cache", log=lambda *_: None)
    want = []
    for d in docs:
        want += tok.encode(d.text, add_special_tokens=True, parse_special=False) + [tok.eos_token_id]
    assert stream.tolist() == want and owner.tolist() == sorted(owner.tolist())
    assert len(list((tmp_path / "cache").iterdir())) == 1
    logged = []

    class NoEncode:  # the second run must not tokenise at all
        eos_token_id = tok.eos_token_id

        def encode(self, *a, **k):
            raise AssertionError("tokenised again despite the cache")

    again, _ = tokenize_corpus(docs, NoEncode(), tiny_dir, tmp_path / "cache", log=logged.append)
    assert again.tolist() == want and "loaded from cache" in logged[0]
    docs[1].text += " changed"  # a changed corpus gets a new cache entry
    tokenize_corpus(docs, tok, tiny_dir, tmp_path / "cache", log=lambda *_: None)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_cpt_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match=r"empty.*has no files ending in \.txt"):
        read_cpt_documents(tmp_path / "empty")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("  \n")
    with pytest.raises(TrainingDataError, match="every .txt/.md/.html file is empty"):
        read_cpt_documents(tmp_path / "blank")
    path = write_jsonl(tmp_path / "c.jsonl", ['{"text": "ok"}', "nope", '{"body": "x"}'])
    with pytest.raises(TrainingDataError, match=r"c\.jsonl:2: not valid JSON"):
        read_cpt_documents(path)
    logged = []
    assert [d.text for d in read_cpt_documents(path, "skip", logged.append)] == ["ok"]
    assert any(r"c.jsonl:3: expected an object with a string field" in m for m in logged)
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        read_cpt_documents(tmp_path / "nothing")
