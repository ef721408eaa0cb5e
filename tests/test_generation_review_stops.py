"""Stop conditions: several stop ids, max_new_tokens exactly, rows of a batch that stop at different steps, and
chat_reply stopping at every eos id of a generation_config.json list.

Oracle: transformers' generate (greedy, left padding, eos_token_id a list) on the tiny random checkpoints of
tests/hf_tiny.py, and on a tiny model with SmolLM2's vocabulary for chat_reply, whose prompt AutoTokenizer's
apply_chat_template writes. transformers pads a finished row with pad_token_id and keeps the eos token; ours
returns the ids before the stop id, so a row's expected ids are transformers' up to its first eos.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from hf_tiny import VARIANTS, randomize
from minagent import load_model, load_tokenizer
from minagent.chat import chat_reply
from minagent.generation import SamplingParams, generate

SMOLLM2 = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct"


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(map(len, prompts))
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):], mask[b, T - len(p):] = torch.tensor(p), 1
    return ids, mask


def until_first(row: list[int], stops) -> tuple[list[int], str]:
    cut = next((i for i, t in enumerate(row) if t in stops), None)
    return (row, "length") if cut is None else (row[:cut], "stop_id")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_batched_rows_stop_like_transformers_generate_and_like_their_own_runs(hf_checkpoint, variant):
    path, hf = hf_checkpoint(variant)
    model = load_model(path)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 257, (n,), generator=g).tolist() for n in (3, 11, 1, 7, 16)]
    N = 20
    free = [generate(model, [p], SamplingParams(max_new_tokens=N))[0].token_ids for p in prompts]
    eos = sorted({free[0][4], free[1][9], free[3][14]})  # three ids that end rows at different steps
    ids, mask = left_padded(prompts)
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=mask, max_new_tokens=N, do_sample=False, eos_token_id=eos,
                           pad_token_id=0)[:, ids.shape[1]:]
    params = SamplingParams(max_new_tokens=N, stop_ids=eos)
    batched = generate(model, prompts, params)
    expected = [until_first(row, eos) for row in want.tolist()]
    assert [(c.token_ids, c.finish_reason) for c in batched] == expected
    assert [(c.token_ids, c.finish_reason) for p in prompts for c in generate(model, [p], params)] == expected
    reasons = [r for _, r in expected]
    assert "length" in reasons and reasons.count("stop_id") >= 2
    assert len({len(t) for t, _ in expected}) >= 3  # the rows really stop at different steps


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_max_new_tokens_is_exact(hf_checkpoint, n):
    path, hf = hf_checkpoint("qwen3")
    model = load_model(path)
    prompts = [[5, 6, 7], [9]]
    ids, mask = left_padded(prompts)
    got = generate(model, prompts, SamplingParams(max_new_tokens=n))
    assert [len(c.token_ids) for c in got] == [n, n] and {c.finish_reason for c in got} == {"length"}
    if n:
        with torch.no_grad():
            want = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
        assert [c.token_ids for c in got] == want[:, ids.shape[1]:].tolist()


def test_chat_reply_stops_at_every_eos_id_of_generation_config(tmp_path):
    """generation_config.json's eos_token_id as a list: chat_reply must stop at whichever comes first, as
    transformers' generate does with the GenerationConfig it reads from the same directory."""
    if not (SMOLLM2 / "tokenizer.json").is_file():
        pytest.skip("models/SmolLM2-135M-Instruct not fetched (python infer.py fetch)")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SMOLLM2 / name, tmp_path / name)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = randomize(transformers.LlamaForCausalLM(cfg).eval(), std=0.3, embed_std=0.5)  # replies of varied ids
    hf.save_pretrained(tmp_path)
    messages = [{"role": "user", "content": "Which port does the gateway use?"}]
    prompt = transformers.AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    prompt = torch.tensor([list(prompt)])
    with torch.no_grad():
        free = hf.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    free = free[0, prompt.shape[1]:].tolist()
    extra = next(t for t in free[3:] if t not in free[:3])  # an id the reply reaches after a few tokens
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, extra]}), encoding="utf-8")
    gen_config = transformers.GenerationConfig.from_pretrained(tmp_path)
    with torch.no_grad():
        want = hf.generate(prompt, generation_config=gen_config, max_new_tokens=12, do_sample=False,
                           pad_token_id=0)[0, prompt.shape[1]:].tolist()
    want, _ = until_first(want, gen_config.eos_token_id)
    assert len(want) < 12 and len(want) == free.index(extra)
    streamed = []
    tok = load_tokenizer(tmp_path)
    reply = chat_reply(load_model(tmp_path), tok, messages, SamplingParams(max_new_tokens=12),
                       on_text=streamed.append)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reply == hf_tok.decode(want, skip_special_tokens=False) == "".join(streamed)
