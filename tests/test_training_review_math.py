"""The training loop's arithmetic against independent oracles: transformers' model in float64, run on every packed
document alone, and torch's own clip_grad_norm_ / schedules.

- one optimizer step's gradient (grad accumulation over micro-batches with unequal numbers of trained tokens) is
  the gradient of the token-mean loss over every trained token of the step (transformers >= 4.46's
  num_items_in_batch convention), not a mean of micro-batch means;
- clipping scales that gradient as torch.nn.utils.clip_grad_norm_ does, and the logged grad_norm is its norm;
- packed rows give, position for position, the logits each document gives alone (attention and RoPE restart);
  a token never predicts the next packed document's first token;
- the eval loss is the per-token mean over the whole held-out set, in eval mode (no LoRA dropout).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from minagent.tokenizer import load_tokenizer
from minagent.training import TrainConfig
from minagent.training import trainer
from minagent.training.data import build_rows
from minagent.training.distributed import DistEnv, micro_batches, step_rows
from minagent.training.objective import PackedLMLoss
from minagent.training.packing import IGNORE, pack_stream
from training_tiny import TRAJECTORIES

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(tiny_dir, out, **kw):
    base = dict(model=str(tiny_dir), out=str(out), progress=False, seed=3, stage="sft", data=str(TRAJECTORIES),
                max_length=1024, batch_size=1, grad_accum=3, method="full", lr=1e-3, eval_fraction=0.0,
                max_steps=1, warmup_steps=0, export=False, clip=0.0, device="cpu")
    return TrainConfig(**{**base, **kw})


def _doc_runs(doc_ids_row):
    """[start, end) of every run of equal document ids in one packed row."""
    cuts = [0] + [i for i in range(1, len(doc_ids_row)) if doc_ids_row[i] != doc_ids_row[i - 1]] + [len(doc_ids_row)]
    return list(zip(cuts[:-1], cuts[1:]))


def _hf_loss_sum(hf, rows, index):
    """Sum of the next-token cross-entropy of packed row `index`, each document run through transformers alone."""
    total = 0.0
    for a, b in _doc_runs(rows.doc_ids[index].tolist()):
        targets = torch.from_numpy(rows.targets[index, a:b])
        if (targets == IGNORE).all():
            continue
        logits = hf(torch.from_numpy(rows.tokens[index, a:b])[None]).logits[0]
        total = total + torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
    return total


def _hf64(tiny_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float64).eval()


def _first_step_gradients(monkeypatch, cfg):
    """Run one optimizer step of the real loop; return ({name: grad as the optimizer sees it}, metrics line)."""
    seen = {}
    make = trainer.make_optimizer

    def recording(model, c):
        opt = make(model, c)
        names = {id(p): n for n, p in model.named_parameters()}

        def hook(optimizer, *_):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        seen[names[id(p)]] = p.grad.detach().double().clone()
        opt.register_step_pre_hook(hook)
        return opt

    monkeypatch.setattr(trainer, "make_optimizer", recording)
    trainer.run(cfg)
    record = json.loads((Path(cfg.out) / "metrics.jsonl").read_text().splitlines()[0])
    return seen, record


def _reference_step(tiny_dir, cfg):
    """Float64 transformers: the loss summed over the step's trained tokens / their count, its gradient, and the
    gradient a mean of micro-batch means would give instead (to show the test tells the two apart)."""
    rows, _ = build_rows(cfg, load_tokenizer(tiny_dir), log=lambda *_: None)
    G = cfg.batch_size * cfg.grad_accum
    picked = step_rows(len(rows), cfg.seed, 0, len(rows) // G, G)
    hf = _hf64(tiny_dir)
    names, params = zip(*hf.named_parameters())
    sums, counts, grads = [], [], []
    for mb in micro_batches(picked, cfg.batch_size, cfg.grad_accum, DistEnv()):
        s = sum(_hf_loss_sum(hf, rows, int(i)) for i in mb)
        sums.append(s.item())
        counts.append(int((rows.targets[mb] != IGNORE).sum()))
        grads.append(torch.autograd.grad(s, params))
    assert len(set(counts)) > 1, counts  # unequal micro-batches: the two conventions differ
    token_mean = {n: sum(g[j] for g in grads) / sum(counts) for j, n in enumerate(names)}
    mean_of_means = {n: sum(g[j] / c for g, c in zip(grads, counts)) / len(counts) for j, n in enumerate(names)}
    return sum(sums) / sum(counts), token_mean, mean_of_means


def test_accumulated_gradient_is_the_token_mean_over_the_whole_step(tiny_dir, tmp_path, monkeypatch):
    cfg = _settings(tiny_dir, tmp_path / "run")
    ref_loss, ref, mean_of_means = _reference_step(tiny_dir, cfg)

    got, record = _first_step_gradients(monkeypatch, cfg)
    assert record["loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert set(got) == set(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)
    assert record["grad_norm"] == pytest.approx(float(torch.linalg.vector_norm(
        torch.cat([g.flatten() for g in ref.values()]))), rel=1e-5)
    # the test can tell the conventions apart: a mean of micro-batch means is far outside the tolerance
    assert max(float((mean_of_means[n] - ref[n]).abs().max() / ref[n].abs().max()) for n in ref) > 1e-2


def test_clipping_is_torchs_clip_grad_norm(tiny_dir, tmp_path, monkeypatch):
    cfg = _settings(tiny_dir, tmp_path / "run", clip=0.05, grad_accum=2)
    _, ref, _ = _reference_step(tiny_dir, cfg)
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in ref.values()]
    for p, g in zip(params, ref.values()):
        p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, 0.05)
    assert norm > 0.05  # the clip bites
    got, record = _first_step_gradients(monkeypatch, cfg)
    assert record["grad_norm"] == pytest.approx(float(norm), rel=1e-5)  # logged: the norm before clipping
    for (name, _), p in zip(ref.items(), params):
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-8, msg=name)


def test_packed_logits_equal_each_document_alone(tiny_dir):
    """SFT and CPT rows, several rows per batch with different layouts, both attention paths of PackedLMLoss."""
    import minagent

    hf = _hf64(tiny_dir)
    ours = minagent.load_model(tiny_dir, dtype="float32").double().eval()
    cfg = _settings(tiny_dir, "unused")
    sft, _ = build_rows(cfg, load_tokenizer(tiny_dir), log=lambda *_: None)
    rng = np.random.default_rng(0)
    stream = rng.integers(3, 1900, size=150)
    owner = np.repeat(np.arange(6), [7, 40, 13, 30, 25, 35])
    cpt = pack_stream(stream, owner, 64, pad_id=0)
    for rows in (sft.select(np.arange(min(3, len(sft)))), cpt):
        assert any(len(_doc_runs(r.tolist())) > 2 for r in rows.doc_ids)
        batch = [torch.from_numpy(a) for a in (rows.tokens, rows.positions, rows.doc_ids)]
        for native in (True, False):
            loss = PackedLMLoss(ours)
            loss._native_doc_ids = native  # False: the reference block-diagonal mask path
            with torch.no_grad():
                logits = ours.lm_head(loss.hidden(*batch))
            for r in range(len(rows)):
                for a, b in _doc_runs(rows.doc_ids[r].tolist()):
                    with torch.no_grad():
                        want = hf(torch.from_numpy(rows.tokens[r, a:b])[None]).logits[0]
                    # 1e-6: transformers computes RoPE's cos/sin in float32 even for a float64 model (~1e-7 in
                    # the logits of a document run alone); a token seeing another document moves them by ~1e-2
                    torch.testing.assert_close(logits[r, a:b], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage", ["sft", "cpt"])
def test_no_target_crosses_a_document_boundary(tiny_dir, tmp_path, stage):
    """Every trained target is the next input token of the same document: never the first token of the next
    packed document, never padding (oracle: the rows' own inputs)."""
    from training_tiny import MANUALS

    kw = dict(stage="cpt", data=str(MANUALS), max_length=48, cache_dir=str(tmp_path / "cache")) if stage == "cpt" \
        else {}
    rows, _ = build_rows(_settings(tiny_dir, tmp_path, **kw), load_tokenizer(tiny_dir), log=lambda *_: None)
    trained = rows.targets[:, :-1] != IGNORE
    same_doc = rows.doc_ids[:, :-1] == rows.doc_ids[:, 1:]
    assert not (trained & ~same_doc).any()
    assert (rows.targets[:, :-1][trained] == rows.tokens[:, 1:][trained]).all()
    assert trained.sum() > 0 and (~same_doc).any()


def test_a_micro_batch_without_trained_tokens_adds_nothing_and_backpropagates(tiny_dir):
    import minagent

    ours = minagent.load_model(tiny_dir, dtype="float32")
    for p in ours.parameters():
        p.requires_grad_(True)
    tokens = torch.arange(3, 19).reshape(2, 8)
    targets = torch.full_like(tokens, IGNORE)
    doc_ids = torch.tensor([[0] * 3 + [1] * 5, [0] * 8])
    positions = torch.cat([torch.arange(3), torch.arange(5)]).expand(2, 8).clone()
    positions[1] = torch.arange(8)
    loss = PackedLMLoss(ours)(tokens, targets, positions, doc_ids)
    assert loss.item() == 0.0
    loss.backward()  # no error; every gradient zero or absent
    assert all(p.grad is None or not p.grad.any() for p in ours.parameters())


def test_eval_loss_is_the_per_token_mean_over_the_held_out_set_without_dropout(tiny_dir, tmp_path):
    """Oracle: the exported (merged) model in float64 transformers over the held-out rows, each document alone."""
    cfg = _settings(tiny_dir, tmp_path / "run", method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.5, lr=5e-2,
                    eval_fraction=0.4, export=True, grad_accum=1)
    result = trainer.run(cfg)
    _, evals = build_rows(cfg, load_tokenizer(tiny_dir), log=lambda *_: None)
    assert len(evals) >= 2 and len({int((t != IGNORE).sum()) for t in evals.targets}) > 1
    hf = _hf64(tmp_path / "run" / "final" / "model")
    with torch.no_grad():
        sums = [_hf_loss_sum(hf, evals, i).item() for i in range(len(evals))]
    counts = [int((t != IGNORE).sum()) for t in evals.targets]
    want = sum(sums) / sum(counts)
    assert result["eval_loss"] == pytest.approx(want, rel=1e-5)
    assert abs(np.mean([s / n for s, n in zip(sums, counts)]) - want) > 1e-4  # batch means would differ


def test_logged_learning_rates_follow_transformers_cosine_with_min_lr(tiny_dir, tmp_path):
    """The rate the loop actually sets at every step (metrics.jsonl), against transformers' schedule: warmup one
    step ahead (schedule.py's documented convention: no zero-rate first step), then equal step for step."""
    total, warmup, peak = 7, 3, 1e-3
    cfg = _settings(tiny_dir, tmp_path / "run", max_steps=total, warmup_steps=warmup, lr=peak, min_lr_ratio=0.2,
                    grad_accum=1, batch_size=2)
    trainer.run(cfg)
    logged = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sch = transformers.get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=0.2)
    theirs = []
    for _ in range(total + 1):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert len(logged) == total
    assert logged[:warmup] == pytest.approx(theirs[1:warmup + 1], rel=1e-12)
    assert logged[warmup:] == pytest.approx(theirs[warmup:total], rel=1e-12)
    assert logged[warmup - 1] == peak and min(logged) > 0.2 * peak  # peak reached; the floor is the limit


@pytest.mark.parametrize("method", ["full", "lora"])
def test_weight_decay_skips_norms_biases_and_lora_b_as_documented(hf_checkpoint, tmp_path, method):
    """--weight-decay's help: 'not applied to norms, biases or LoRA B' (hand-checked against parameter names of a
    model with q/k/v/o and MLP biases and tied embeddings)."""
    import minagent
    from minagent.lora import LoraConfig, inject_lora

    directory, _ = hf_checkpoint("llama-linear-tied-bias")
    model = minagent.load_model(directory, dtype="float32")
    if method == "lora":
        inject_lora(model, LoraConfig(r=2, alpha=4, target_modules="all-linear"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    cfg = TrainConfig(weight_decay=0.1, method=method)
    opt = trainer.make_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay | no_decay == trainable and not decay & no_decay
    if method == "full":
        want_no_decay = {n for n in trainable if n.endswith("norm.weight") or n.endswith(".bias")}
        assert any(n.endswith(".bias") for n in want_no_decay) and "model.embed_tokens.weight" in decay
    else:
        want_no_decay = {n for n in trainable if n.endswith("lora_B.weight")}
        assert all(n.endswith("lora_A.weight") for n in decay)
    assert no_decay == want_no_decay
