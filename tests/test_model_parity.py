"""Our model against transformers on tiny random checkpoints of every architecture (CPU, fp32).

Oracle: the transformers model that wrote the checkpoint. Logits must agree under assert_close's default fp32
tolerances for a full forward pass and for incremental decoding through our KV cache; greedy continuations must
agree token for token; padded batches must equal one-by-one generation.
"""
import pytest
import torch

from minagent import load_model
from minagent.generation import SamplingParams, generate

torch.manual_seed(1234)
IDS = torch.randint(3, 257, (3, 29))


def test_forward_logits_match_transformers(hf_checkpoint, variant):
    path, hf = hf_checkpoint(variant)
    ours = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)


def test_incremental_decoding_through_cache_matches_full_forward(hf_checkpoint, variant):
    path, hf = hf_checkpoint(variant)
    ours = load_model(path)
    with torch.no_grad():
        want = hf(IDS).logits
        cache = ours.new_cache(IDS.shape[0], IDS.shape[1])
        got = [ours(IDS[:, :11], cache=cache)]  # a prefill chunk, then one token at a time
        for t in range(11, IDS.shape[1]):
            got.append(ours(IDS[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(got, dim=1), want)


def test_greedy_continuation_matches_transformers_token_for_token(hf_checkpoint, variant):
    path, hf = hf_checkpoint(variant)
    ours = load_model(path)
    prompt = IDS[:1, :9]
    want = hf.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
    got = generate(ours, [prompt[0].tolist()], SamplingParams(max_new_tokens=16))
    assert got[0].token_ids == want[0, 9:].tolist()


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_generation_equals_one_by_one(hf_checkpoint, padding_side):
    path, _ = hf_checkpoint("qwen3")
    ours = load_model(path)
    prompts = [IDS[0, :5].tolist(), IDS[1, :17].tolist(), IDS[2, :1].tolist()]
    params = SamplingParams(max_new_tokens=10)
    batched = generate(ours, prompts, params, padding_side=padding_side)
    for prompt, got in zip(prompts, batched):
        alone = generate(ours, [prompt], params)[0]
        assert got.token_ids == alone.token_ids


def test_padded_batch_logits_match_transformers_left_padding(hf_checkpoint):
    """Left-padded prefill with an attention mask, the way transformers batches prompts."""
    path, hf = hf_checkpoint("llama-gqa")
    ours = load_model(path)
    ids = IDS[:2, :12].clone()
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, positions=positions, cache=ours.new_cache(2, 12), key_valid=mask.bool())
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint_loads_in_its_dtype(tmp_path, dtype):
    from hf_tiny import build_hf_model

    hf = build_hf_model("qwen2-tied").to(dtype)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert ours.lm_head.weight.dtype == dtype
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()  # still tied
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS).float(), hf(IDS).logits.float(), atol=0.05, rtol=0.05)
    assert load_model(tmp_path, dtype="float32").lm_head.weight.dtype == torch.float32


def test_packed_documents_equal_each_document_alone(hf_checkpoint):
    """A packed training row (doc ids, positions restarting per document) computes each document's HF logits."""
    path, hf = hf_checkpoint("qwen3")
    ours = load_model(path)
    docs = [IDS[0, :7], IDS[1, :13], IDS[2, :9]]
    packed = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        got = ours(packed, doc_ids=doc_ids)[0].split([len(d) for d in docs])
        for d, g in zip(docs, got):
            torch.testing.assert_close(g, hf(d[None]).logits[0])
