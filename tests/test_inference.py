"""The inference plan (minagent/inference.py): generation's forward without module dispatch.

Oracles: the module forward of the same model (the plan must give the same logits and KV cache bit for bit,
which is what lets generation use it) and transformers' logits. The tests also pin where the plan must not
run: gradients on, LoRA, hooks, a subclassed module, an unpacked model.
"""
import pytest
import torch

import kernels
from minagent import load_model
from minagent.generation import SamplingParams, generate
from minagent.inference import InferencePlan, inference_forward
from minagent.lora import LoraConfig, inject_lora
from minagent.model import Linear

torch.manual_seed(11)
IDS = torch.randint(3, 257, (2, 12))


def run_steps(forward, model, ids, key_valid=None, positions=None):
    """Prefill 5 tokens, then decode one token at a time; returns each call's logits and the final cache."""
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    pos = (lambda a, b: None) if positions is None else (lambda a, b: positions[:, a:b])
    outs = [forward(ids[:, :5], positions=pos(0, 5), cache=cache,
                    key_valid=None if key_valid is None else key_valid[:, :5])]
    outs += [forward(ids[:, t:t + 1], positions=pos(t, t + 1), cache=cache) for t in range(5, ids.shape[1])]
    return outs, cache


def assert_same_run(model, ids, **kw):
    plan = InferencePlan.of(model)
    assert plan is not None
    ours, cache_a = run_steps(plan, model, ids, **kw)
    want, cache_b = run_steps(model, model, ids, **kw)
    for step, (a, b) in enumerate(zip(ours, want)):
        assert torch.equal(a, b), f"call {step}: plan logits differ from the module forward's"
    for layer in range(len(cache_a.k)):
        assert torch.equal(cache_a.k[layer], cache_b.k[layer]) and torch.equal(cache_a.v[layer], cache_b.v[layer])
    assert cache_a.length == cache_b.length == ids.shape[1]
    return torch.cat(ours, dim=1)


@torch.inference_mode()
def test_plan_equals_module_forward_and_transformers(hf_checkpoint, variant):
    path, hf = hf_checkpoint(variant)
    model = load_model(path)
    logits = assert_same_run(model, IDS)
    torch.testing.assert_close(logits, hf(IDS).logits)
    plan = InferencePlan.of(model)
    assert torch.equal(plan(IDS, last_only=True), model(IDS, last_only=True))  # no cache, head on the last token


@pytest.mark.parametrize("variant", ["qwen3", "llama-linear-tied-bias"])
@torch.inference_mode()
def test_plan_equals_module_forward_on_a_left_padded_batch(hf_checkpoint, variant):
    model = load_model(hf_checkpoint(variant)[0])
    key_valid = torch.ones(2, 12, dtype=torch.bool)
    key_valid[1, :3] = False  # row 1: three pad slots, then its prompt
    positions = (key_valid.long().cumsum(dim=1) - 1).clamp(min=0)
    assert_same_run(model, IDS, key_valid=key_valid, positions=positions)


@torch.inference_mode()
def test_plan_runs_only_where_it_equals_the_module_forward(hf_checkpoint):
    path, _ = hf_checkpoint("llama-gqa")
    assert InferencePlan.of(load_model(path)) is not None
    with torch.enable_grad():
        assert InferencePlan.of(load_model(path)) is None  # gradients wanted: the modules run

    lora = load_model(path)
    with torch.enable_grad():
        inject_lora(lora, LoraConfig(r=4, alpha=8, target_modules=["q_proj"]))
    assert InferencePlan.of(lora) is None

    hooked = load_model(path)
    hooked.model.layers[1].mlp.down_proj.register_forward_hook(lambda *a: None)
    assert InferencePlan.of(hooked) is None

    class Scaled(Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    sub = load_model(path)
    sub.lm_head.__class__ = Scaled
    assert InferencePlan.of(sub) is None
    assert inference_forward(sub) is sub

    moved = load_model(path).double()  # each parameter its own new tensor: nothing packed
    assert InferencePlan.of(moved) is None

    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert InferencePlan.of(load_model(path)) is None
    finally:
        handle.remove()


@torch.inference_mode()
def test_plan_follows_the_modules_own_settings_and_refuses_patched_ones(hf_checkpoint):
    """The modules, not the config, decide: a norm swapped for one with another eps is followed, a config edited
    after loading changes nothing (as in the modules); a forward replaced on an instance (accelerate-style
    wrapping) or a half-present Qwen3 q/k norm turns the plan off."""
    from minagent.model import RMSNorm

    path = hf_checkpoint("qwen3")[0]
    model = load_model(path)
    layer = model.model.layers[1]
    swapped = RMSNorm(layer.input_layernorm.weight.shape[0], eps=0.5)
    swapped.weight.copy_(layer.input_layernorm.weight)
    layer.input_layernorm = swapped
    model.config.rms_norm_eps = 0.25
    assert_same_run(model, IDS)

    patched = load_model(path)
    mlp = patched.model.layers[0].mlp
    mlp.forward = lambda x, orig=mlp.forward: 0 * orig(x)
    assert InferencePlan.of(patched) is None

    half = load_model(path)
    del half.model.layers[0].self_attn.k_norm
    assert InferencePlan.of(half) is None


def test_calling_a_plan_with_gradients_on_is_an_error(hf_checkpoint):
    model = load_model(hf_checkpoint("llama-gqa")[0])
    with torch.no_grad():
        plan = InferencePlan.of(model)
    with pytest.raises(RuntimeError, match="no_grad"):
        plan(IDS)


@torch.inference_mode()
def test_plan_sees_in_place_weight_updates(hf_checkpoint):
    model = load_model(hf_checkpoint("qwen2-tied")[0])
    plan = InferencePlan.of(model)
    before = plan(IDS)
    model.model.layers[0].self_attn.k_proj.weight.mul_(1.5)  # what merging an adapter does
    after = plan(IDS)
    assert not torch.equal(before, after)
    assert torch.equal(after, model(IDS))


@pytest.mark.parametrize("variant", ["mistral", "qwen3"])
def test_generate_is_the_same_with_and_without_the_plan(hf_checkpoint, variant):
    """A hook switches the plan off: the two generation paths must give the same tokens, sampled or greedy,
    on a ragged batch."""
    model = load_model(hf_checkpoint(variant)[0])
    prompts = [IDS[0, :9].tolist(), IDS[1, :4].tolist()]
    params = SamplingParams(max_new_tokens=6, temperature=0.8, top_k=20, seed=3)
    with torch.inference_mode():
        assert InferencePlan.of(model) is not None
    fast = [c.token_ids for c in generate(model, prompts, params)]
    handle = model.model.norm.register_forward_hook(lambda *a: None)
    slow = [c.token_ids for c in generate(model, prompts, params)]
    handle.remove()
    assert fast == slow and all(len(t) == 6 for t in fast)


def test_joint_rope_picks_the_same_path_as_apply_rope(monkeypatch):
    """On a GPU, `auto` sends small calls to torch and large ones to Triton. The plan's joint call must choose as
    the module forward's apply_rope does for the same q, or the two would round differently. Faked on CPU: the
    dispatcher is told Triton is usable, and the Triton entry point only records that it was chosen."""
    from kernels import rope

    chosen = []
    monkeypatch.setattr(kernels, "use_triton", lambda *t: True)
    monkeypatch.setattr(rope, "apply_rope_triton", lambda q, k, c, s: chosen.append(True) or (q, k))
    H, K, D = 9, 3, 64
    for T in (80, 100, 120):  # q below / across / above kernels.AUTO_MIN_ELEMENTS while q + k crosses it
        qk = torch.randn(1, H + K, T, D)
        cos, sin = torch.ones(T, D), torch.zeros(T, D)
        chosen.clear()
        kernels.apply_rope(qk[:, :H], qk[:, H:], cos, sin)
        kernels.apply_rope_joint(qk, H, cos, sin)
        assert chosen in ([], [True, True]), (T, chosen)


def test_joint_rope_equals_rotating_q_and_k_apart():
    qkv = torch.randn(2, 5, 4 + 2 + 2, 16).transpose(1, 2)  # [B, H, T, D] view of a packed product
    pos = torch.arange(5.0)[:, None] / (10.0 ** (torch.arange(0, 16, 2) / 16))
    cos, sin = torch.cat((pos, pos), -1).cos(), torch.cat((pos, pos), -1).sin()
    with kernels.use_backend("torch"):
        q, k = kernels.apply_rope_joint(qkv[:, :6], 4, cos, sin)
        q2, k2 = kernels.apply_rope(qkv[:, :4], qkv[:, 4:6], cos, sin)
    assert torch.equal(q, q2) and torch.equal(k, k2)
