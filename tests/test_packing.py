"""Packed projections (minagent/packing.py): q/k/v and gate/up loaded side by side, read as one matrix.

Oracles: transformers' logits (the packed model must match them exactly as the separate-matmul model does) and
an unpacked copy of the same weights for gradients. The tests also pin the cases where packing must switch
itself off: weights that need a gradient, LoRA, a dtype change.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM

from minagent import load_model
from minagent.lora import LoraConfig, inject_lora
from minagent.model import Linear, Transformer
from minagent.packing import pack_state_dict, packed_projection

torch.manual_seed(7)
IDS = torch.randint(3, 257, (2, 13))


def packed(group):
    return packed_projection(group, Linear)


def groups(model):
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        yield (a.q_proj, a.k_proj, a.v_proj)
        yield (m.gate_proj, m.up_proj)


def unpacked_copy(model):
    """The same weights, each parameter in its own tensor (a model built directly, as training does)."""
    other = Transformer(model.config)
    other.load_state_dict(model.state_dict())
    return other.eval()


@pytest.mark.parametrize("variant", ["llama-linear-tied-bias", "qwen2-tied", "qwen3", "mistral"])
def test_loaded_model_is_packed_and_matches_transformers(hf_checkpoint, variant):
    path, hf = hf_checkpoint(variant)
    ours = load_model(path)
    plain = unpacked_copy(ours)
    with torch.no_grad():
        for g in groups(ours):
            weight, bias = packed(g)
            assert weight.shape[0] == sum(m.out_features for m in g)
            torch.testing.assert_close(weight, torch.cat([m.weight for m in g]), rtol=0, atol=0)
            assert (bias is None) == (g[0].bias is None)
        assert all(packed(g) is None for g in groups(plain))
        want = hf(IDS).logits
        torch.testing.assert_close(ours(IDS), want)
        torch.testing.assert_close(plain(IDS), want)
        cache = ours.new_cache(2, 13)  # decoding: one row of q/k/v per step through the packed matrix
        steps = [ours(IDS[:, :5], cache=cache)] + [ours(IDS[:, t:t + 1], cache=cache) for t in range(5, 13)]
        torch.testing.assert_close(torch.cat(steps, dim=1), want)


def test_in_place_weight_updates_reach_the_packed_matrix(hf_checkpoint):
    path, _ = hf_checkpoint("qwen2-tied")
    ours = load_model(path)
    with torch.no_grad():
        ours.model.layers[1].self_attn.v_proj.weight.mul_(-2)  # what an optimizer step or a LoRA merge does
        ours.model.layers[0].mlp.up_proj.bias is None or ours.model.layers[0].mlp.up_proj.bias.add_(1)
        ours.model.layers[0].self_attn.k_proj.bias.add_(0.5)
        assert packed(tuple(groups(ours))[2]) is not None
        torch.testing.assert_close(ours(IDS), unpacked_copy(ours)(IDS))


def test_weight_gradients_never_go_through_the_packed_view(hf_checkpoint):
    path, _ = hf_checkpoint("llama-gqa")
    ours = load_model(path).train()
    plain = unpacked_copy(ours).train()
    assert all(packed(g) is None for g in groups(ours))  # grad enabled, weights require grad
    for model in (ours, plain):
        model(IDS).logsumexp(-1).mean().backward()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    with torch.no_grad():
        assert all(packed(g) is not None for g in groups(ours))


def test_lora_and_dtype_changes_switch_packing_off(hf_checkpoint):
    path, hf = hf_checkpoint("qwen2-tied")
    ours = load_model(path)
    inject_lora(ours, LoraConfig(r=4, alpha=8, target_modules=["k_proj"]))
    with torch.no_grad():
        for layer in ours.model.layers:
            assert packed((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)) is None
            assert packed((layer.mlp.gate_proj, layer.mlp.up_proj)) is not None  # frozen, not wrapped
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)  # LoRA B starts at zero
    wide = load_model(path).double()  # every parameter becomes its own new tensor
    with torch.no_grad():
        assert all(packed(g) is None for g in groups(wide))
        torch.testing.assert_close(wide(IDS).float(), hf(IDS).logits)  # fp64 compute, fp32 tolerances


def test_pack_state_dict_makes_views_of_one_buffer_per_group():
    a, b, c = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2, 3)
    state = {"model.layers.0.self_attn.q_proj.weight": a, "model.layers.0.self_attn.k_proj.weight": b,
             "model.layers.0.self_attn.v_proj.weight": c, "model.layers.0.mlp.gate_proj.weight": a,
             "other": c}
    pack_state_dict(state, num_layers=1)
    q, k, v = (state[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkv")
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
    assert (q.storage_offset(), k.storage_offset(), v.storage_offset()) == (0, 12, 18)
    for got, want in ((q, a), (k, b), (v, c)):
        assert torch.equal(got, want)
    assert state["model.layers.0.mlp.gate_proj.weight"] is a  # gate without up: nothing to pack
    assert state["other"] is c


def test_hooks_and_subclasses_keep_the_separate_calls(hf_checkpoint):
    path, hf = hf_checkpoint("llama-gqa")
    ours = load_model(path)
    attn, mlp = ours.model.layers[0].self_attn, ours.model.layers[1].mlp
    seen = []
    handle = attn.k_proj.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    with torch.no_grad():
        assert packed((attn.q_proj, attn.k_proj, attn.v_proj)) is None
        assert packed((mlp.gate_proj, mlp.up_proj)) is not None
        torch.testing.assert_close(ours(IDS), hf(IDS).logits)
    assert seen == [(2, 13, attn.k_proj.out_features)]  # the hooked projection ran as a module call
    handle.remove()

    class Doubled(Linear):  # a subclass computes something else: it must be called, not bypassed
        def forward(self, x):
            return 2 * super().forward(x)

    up = Doubled(mlp.up_proj.in_features, mlp.up_proj.out_features, bias=False)
    up.weight = mlp.up_proj.weight  # the same packed view
    mlp.up_proj = up
    x = torch.randn(2, 3, mlp.gate_proj.in_features)
    with torch.no_grad():
        want = mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * 2 * torch.nn.functional.linear(x, up.weight))
        torch.testing.assert_close(mlp(x), want)


def test_backward_hooks_fire_as_in_transformers(hf_checkpoint):
    """LoRA (or any training of other weights) runs the backward through frozen, still packed q/k/v and gate/up:
    a full backward hook on one of them, per module or global, must fire there as it does in transformers (the
    packed product never called the module, so its hooks were silently skipped)."""
    path, _ = hf_checkpoint("llama-gqa")
    seen = {}
    for name in ("hf", "ours"):
        model = AutoModelForCausalLM.from_pretrained(path) if name == "hf" else load_model(path)
        for p in model.parameters():
            p.requires_grad_(False)
        model.model.layers[0].self_attn.o_proj.weight.requires_grad_(True)  # one trained weight below them
        calls = seen[name] = []
        model.model.layers[1].self_attn.k_proj.register_full_backward_hook(lambda *a: calls.append("k"))
        model.model.layers[1].mlp.up_proj.register_full_backward_pre_hook(lambda *a: calls.append("up"))
        out = model(IDS)
        (out.logits if name == "hf" else out).sum().backward()
        handle = torch.nn.modules.module.register_module_full_backward_hook(
            lambda mod, *a: calls.append("global") if mod is model.model.layers[1].mlp.gate_proj else None)
        try:
            out = model(IDS)
            (out.logits if name == "hf" else out).sum().backward()
        finally:
            handle.remove()
    assert sorted(seen["hf"]) == ["global", "k", "k", "up", "up"]
    assert sorted(seen["ours"]) == sorted(seen["hf"])


def test_torch_func_transforms_run_on_a_packed_model(hf_checkpoint):
    path, _ = hf_checkpoint("llama-gqa")
    mlp = load_model(path).model.layers[0].mlp
    for p in mlp.parameters():
        p.requires_grad_(False)
    params = dict(mlp.named_parameters())
    x = torch.randn(3, mlp.gate_proj.in_features)
    stacked = {k: torch.stack([v, 2 * v]) for k, v in params.items()}
    got = torch.func.vmap(lambda p: torch.func.functional_call(mlp, p, (x,)))(stacked)
    for i, scale in enumerate((1, 2)):
        want = torch.func.functional_call(mlp, {k: scale * v for k, v in params.items()}, (x,))
        torch.testing.assert_close(got[i], want)
