"""LoRA: low-rank adapters on the linear layers of a frozen model, in PEFT's file format.

A LoRA layer keeps the pretrained weight W frozen and learns a low-rank update:

    y = x W^T + b + scale * B(A(dropout(x))),   A: [r, in], B: [out, r],   scale = alpha / r  (alpha / sqrt(r)
                                                                            with rsLoRA, which keeps the update's
                                                                            size steady as r grows)

A starts kaiming-uniform (a = sqrt 5, nn.Linear's own init) and B at zero, so a fresh adapter changes nothing.
Only A and B train, which is why LoRA fits fine-tuning of a 7B model on one GPU. The adapter is saved exactly as
peft saves it (`adapter_config.json` + `adapter_model.safetensors`, keys `base_model.model.<module>.lora_A.weight`)
so `peft.PeftModel.from_pretrained` loads ours and we load peft's. Our modules already carry HF's names, so the
key of `model.layers.0.self_attn.q_proj` is the same in both worlds. peft's module selection and per-module
settings (target_modules as names, a regex or "all-linear"; exclude_modules; layers_to_transform / layers_pattern;
rank_pattern / alpha_pattern; use_rslora; MiCA's frozen B) load and save as peft applies them; what would compute
something else (DoRA, biases, modules_to_save, embedding LoRA, inits that rewrite W, ...) is refused naming the
adapter_config.json field.

The adapter weights stay fp32 even on a bf16 base (peft does the same): the update is small next to W, and bf16
would round it away; on an fp64 base they are fp64, as in peft. `merge` folds scale * B @ A into W (for export or
fast inference); `unmerge` takes it out.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# "q" is shorthand for q_proj etc., so `--lora-targets q,v` works like peft's ["q_proj", "v_proj"].
SHORT_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
               "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


class AdapterError(ValueError):
    """An adapter directory that cannot be loaded; the message names the file and what is wrong."""


@dataclass
class LoraConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"  # names (suffix match), a regex string, or "all-linear"
    use_rslora: bool = False
    base_model_name_or_path: str | None = None
    extra: dict = field(default_factory=dict)  # other adapter_config.json fields, written back unchanged
    # peft's per-module overrides: {regex matching the end of a module name: r / alpha}; the first key that
    # matches wins (in the dict's order, as peft reads it)
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    # peft's layer selection (list targets only): adapt only these block indices; the index is the number after
    # the first `<layers_pattern>.` in the module name (any name segment when layers_pattern is None)
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    # peft's exclusions, applied after target_modules: names (suffix match) or a regex string (whole name)
    exclude_modules: list[str] | str | None = None

    @property
    def scale(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r

    def rank_of(self, module: str) -> int:
        return _pattern_value(self.rank_pattern, module, self.r)

    def alpha_of(self, module: str) -> float:
        return _pattern_value(self.alpha_pattern, module, self.alpha)

    def scale_of(self, module: str) -> float:
        """The update's scale for one module, after rank_pattern and alpha_pattern."""
        r, alpha = self.rank_of(module), self.alpha_of(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def __post_init__(self):
        if int(self.r) != self.r or self.r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = [SHORT_NAMES.get(t, t) for t in self.target_modules]
        for key, value in self.rank_pattern.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LoRA rank_pattern[{key!r}] must be a positive integer, got {value!r}")
        if isinstance(self.target_modules, str) and (self.layers_to_transform is not None or self.layers_pattern):
            raise ValueError("LoRA layers_to_transform / layers_pattern need target_modules as a list of names, "
                             f"not the string {self.target_modules!r} (as in peft)")
        self._check_regexes()
        refusal = unsupported_field(self.extra)  # written back by save_adapter: peft would compute them
        if refusal:
            raise ValueError(f"LoraConfig.extra: {refusal}")

    def _check_regexes(self):
        """Every setting that peft reads as a regex must compile: a broken one is an error naming the setting,
        not a bare re.error in the middle of matching module names. (Each is compiled as it is used.)"""
        regexes = [(f"rank_pattern key {k!r}", _pattern_regex(k)) for k in self.rank_pattern]
        regexes += [(f"alpha_pattern key {k!r}", _pattern_regex(k)) for k in self.alpha_pattern]
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "all-linear":
                regexes.append((f"{name} {value!r}", value))
        patterns = [self.layers_pattern] if isinstance(self.layers_pattern, str) else self.layers_pattern or []
        regexes += [(f"layers_pattern {p!r}", _layer_regex(p)) for p in patterns]
        for what, regex in regexes:
            try:
                re.compile(regex)
            except re.error as e:
                raise ValueError(f"LoRA {what} is not a valid regular expression ({e})") from None


def _pattern_regex(key: str) -> str:
    """A rank_pattern / alpha_pattern key as peft matches it (re.match): the end of a name, at a dot boundary."""
    return rf"(.*\.)?({key})$"


def _layer_regex(layers_pattern: str) -> str:
    """peft's layer index lookup for one layers_pattern entry (re.match): the first number after `<pattern>.`."""
    return rf"(?:^|.*?\.){layers_pattern}\.(\d+)\."


def _pattern_value(pattern: dict, module: str, default):
    """peft's rank_pattern / alpha_pattern lookup: the value of the first key that, as a regex, matches the end of
    the module name at a dot boundary ("v_proj" matches "model.layers.0.self_attn.v_proj")."""
    for key, value in pattern.items():
        if re.match(_pattern_regex(key), module):
            return value
    return default


def dropout_keep_mask(shape, p: float) -> tuple[torch.Tensor, float]:
    """(bool mask on CPU, True with probability q; q) for dropout rate p, from the global RNG (a resumed run
    draws the same masks). Divide kept values by q.

    On CPU, drawing the mask costs as much as a LoRA layer's base matmul (the RNG makes one draw per element), so
    each 64-bit draw is cut into four 16-bit uniforms: 4x fewer draws, and p rounded to a multiple of 1/65536
    (q is the exact keep probability after rounding, so the layer stays unbiased). GPUs use torch's own fused
    dropout instead (see _dropout)."""
    n = math.prod(shape)
    drop = round(p * 65536)
    draws = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    uniform16 = draws.view(torch.int16)[:n]  # each in [-32768, 32767], equally likely
    return (uniform16 >= drop - 32768).view(shape), 1.0 - drop / 65536


class LoRAUpdate(torch.autograd.Function):
    """y + scale * B(A(dropout(x))), the base layer's output y plus the update, with a lean plan for training.

    Memory: autograd on the plain expression keeps, per adapted layer, dropout(x) (a full [tokens, in] copy) and
    the dropout mask (another, in x's dtype). q, k and v read the same x, as do gate and up, so a model with all
    linear layers adapted holds several copies of each layer input. This Function keeps x itself (one tensor
    however many adapters read it), a bool mask (a quarter of an fp32 copy), the small [tokens, r] product and
    A, B in the compute dtype (tiny), and recomputes dropout(x) in the backward (one op).
    Launches: with every linear layer adapted, a small model's step is seven of these per layer, and on a GPU
    each op is a kernel launch the host must issue. So the scale and the add to y ride in one addmm, the
    backward applies the scale to [tokens, r] and [out, r] products instead of to dy, and dropout is one fused
    op each way. Gradients, with xd = dropout(x):
        dy_base = dy     dB = scale * dy^T (xd A^T)     dA = (scale * dy B)^T xd     dx = dropout(scale * dy B A)
    (dx uses the forward's mask). The frozen base layer's own gradient flows through `base` as usual.
    """

    @staticmethod
    def forward(ctx, x, y, a, b, scale, p):
        # The products run in the adapter's dtype (fp32), or under autocast in autocast's dtype, as two plain
        # linear layers would (peft's). Autocast is off inside, so every cast is explicit and the backward (which
        # autocast never reaches) uses the same dtype: a bf16 step then makes no fp32 copies of the activations.
        dev = x.device.type
        c = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else a.dtype
        with torch.autocast(dev, enabled=False):
            xd, keep, q = _dropout(x.to(c), p)
            a_c, b_c = a.to(c), b.to(c)
            xa = xd.reshape(-1, a.shape[1]) @ a_c.T  # [tokens, r]
            y2 = y.reshape(-1, b.shape[0])
            if y.dtype == c:  # the usual case: scale and add in the product's epilogue
                out = torch.addmm(y2, xa, b_c.T, alpha=scale)
            else:  # y in another dtype (a bf16 base without autocast): added in the wider dtype, rounded once
                out = torch.add(y2, xa @ b_c.T, alpha=scale).to(y.dtype)  # (as peft: y + update, then to y's)
        ctx.save_for_backward(x, keep, a_c, b_c, xa)
        ctx.scale, ctx.q, ctx.c, ctx.dtypes = scale, q, c, (a.dtype, b.dtype)
        return out.view(y.shape)

    @staticmethod
    def backward(ctx, dy):
        x, keep, a_c, b_c, xa = ctx.saved_tensors
        dy2 = dy.reshape(-1, b_c.shape[0]).to(ctx.c)
        gb = (dy2 @ b_c).mul_(ctx.scale)  # [tokens, r]
        da = db = dx = None
        if ctx.needs_input_grad[3]:
            db = (dy2.T @ xa).mul_(ctx.scale).to(ctx.dtypes[1])
        if ctx.needs_input_grad[2]:
            xd = _redo_dropout(x.to(ctx.c), keep, ctx.q)
            da = (gb.T @ xd.reshape(-1, a_c.shape[1])).to(ctx.dtypes[0])
        if ctx.needs_input_grad[0]:
            dx = _redo_dropout((gb @ a_c).view(x.shape), keep, ctx.q).to(x.dtype)
        return dx, dy if ctx.needs_input_grad[1] else None, da, db, None, None


def _dropout(t: torch.Tensor, p: float):
    """(dropout(t), bool keep mask or None, keep probability q). One fused op on a GPU; on CPU the mask comes
    from dropout_keep_mask (its cheaper draws)."""
    if p == 0:
        return t, None, 1.0
    if t.device.type != "cpu":
        out, keep = torch.native_dropout(t, p, True)
        return out, keep, 1.0 - p
    keep, q = dropout_keep_mask(t.shape, p)
    return _redo_dropout(t, keep, q), keep, q


def _redo_dropout(t: torch.Tensor, keep: torch.Tensor | None, q: float) -> torch.Tensor:
    """t * keep / q in one op (dropout's own backward is exactly that product)."""
    return t if keep is None else torch.ops.aten.native_dropout_backward(t, keep, 1.0 / q)


def adapter_dtype(base_dtype: torch.dtype) -> torch.dtype:
    """The dtype of A and B on a base of `base_dtype`, peft's rule: fp32 on a half-precision (or fp32) base, where
    bf16 would round the small update away, and the base's own dtype when it is wider (an fp64 model keeps fp64
    precision end to end, so gradient and merge checks in fp64 are exact)."""
    return torch.promote_types(base_dtype, torch.float32) if base_dtype.is_floating_point else torch.float32


class LoRALinear(nn.Module):
    """An nn.Linear plus a low-rank update. `base` keeps its name so the state dict reads
    `...q_proj.base.weight`; `base_state_dict()` of the model maps it back to HF names."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        self.base = base
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scale = alpha / math.sqrt(r) if use_rslora else alpha / r
        device, dtype = base.weight.device, adapter_dtype(base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    @property
    def weight(self):  # so code that reads `.weight` (the fused loss, tied heads) sees the (merged or not) base
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        """scale * B @ A in the merge's dtype (fp32, fp64 for an fp64 base), the [out, in] update that merging
        adds to W."""
        dtype = self._merge_dtype()
        return (self.lora_B.weight.to(dtype) @ self.lora_A.weight.to(dtype)) * self.scale

    def _merge_dtype(self) -> torch.dtype:
        """The wider of W's and the adapter's dtypes: a half-precision W merges in fp32 (then rounds once), an fp64
        W in fp64 (fp32 arithmetic would round W itself, so unmerge could not give it back)."""
        return torch.promote_types(self.base.weight.dtype, self.lora_A.weight.dtype)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        a, b = self.lora_A.weight, self.lora_B.weight
        p = self.dropout.p if self.training and isinstance(self.dropout, nn.Dropout) else 0.0
        if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or x.requires_grad):
            return LoRAUpdate.apply(x, y, a, b, self.scale, p)
        update = F.linear(F.linear(self.dropout(x.to(a.dtype)), a), b)
        # added in the wider of the two dtypes and rounded once, as peft does (a bf16 y + an fp32 update)
        return torch.add(y, update, alpha=self.scale).to(y.dtype)

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            w = self.base.weight
            w.copy_((w.to(self._merge_dtype()) + self.delta_weight()).to(w.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            w = self.base.weight
            w.copy_((w.to(self._merge_dtype()) - self.delta_weight()).to(w.dtype))
            self.merged = False

    def extra_repr(self):
        return f"r={self.r}, alpha={self.alpha}, scale={self.scale:g}, merged={self.merged}"


# ---- finding targets and injecting ----------------------------------------------------------------------

def _output_layer_names(model: nn.Module) -> set[str]:
    """The LM head, which peft's "all-linear" leaves out (it is the output layer, and often tied)."""
    return {"lm_head"} if hasattr(model, "lm_head") else set()


def _matches(name: str, targets, layers=None, layers_pattern=None) -> bool:
    """peft's rule for one module name: a list entry equals the name or is its dotted suffix; a string (other than
    "all-linear", which callers handle) is a regex that must match the whole name. `layers` (layers_to_transform)
    keeps a suffix match only in those blocks (an entry equal to the whole name is kept anyway, as in peft)."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    keys = [SHORT_NAMES.get(t, t) for t in targets]
    if name in keys:
        return True
    if not any(name.endswith("." + k) for k in keys):
        return False
    return layers is None or layers == [] or _layer_index(name, layers_pattern) in (
        [layers] if isinstance(layers, int) else layers)


def _layer_index(name: str, layers_pattern) -> int | None:
    """The block index in a module name as peft finds it: the first number after `<pattern>.`, or after any
    segment when no pattern is given ("model.layers.3.mlp.up_proj" -> 3); None when there is none."""
    if not layers_pattern:
        m = re.match(r".*?\.[^.]*\.(\d+)\.", name)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
        m = next(filter(None, (re.match(_layer_regex(p), name) for p in patterns)), None)
    return int(m.group(1)) if m else None


def target_names(model: nn.Module, targets, layers_to_transform=None, layers_pattern=None,
                 exclude_modules=None) -> list[str]:
    """Names of the nn.Linear modules that `targets` selects, with peft's matching rules:
    a list matches a module whose name equals an entry or ends with "." + entry (only in the blocks
    `layers_to_transform` lists, when given); a string is a regex that must match the whole name; "all-linear" is
    every linear layer except the output layer. Modules that `exclude_modules` matches (by the same name rules)
    are left out. A target that selects an embedding layer is refused: peft would give it an embedding LoRA
    (lora_embedding_A/B), which we do not have, so skipping it would train or load another adapter than the
    config says."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _inside_lora(n)
              and not (exclude_modules and _matches(n, exclude_modules))]
    if targets == "all-linear":
        skip = _output_layer_names(model)
        return [n for n in linear if n not in skip]
    select = (lambda n: _matches(n, targets, layers_to_transform, layers_pattern)
              and not (exclude_modules and _matches(n, exclude_modules)))
    embeddings = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding) and select(n)]
    if embeddings:
        raise ValueError(f"LoRA target_modules {targets!r} selects the embedding layer '{embeddings[0]}': LoRA on "
                         "embeddings (peft's lora_embedding_A/B) is not supported; target linear layers only")
    chosen = [n for n in linear if select(n)]
    if not chosen:
        raise ValueError(f"LoRA target_modules {targets!r} (layers_to_transform={layers_to_transform!r}) match no "
                         f"linear layer; the model has e.g. {sorted({n.rsplit('.', 1)[-1] for n in linear})}")
    return chosen


def _inside_lora(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B", ".base"))


def init_method(config: LoraConfig):
    """The adapter's `init_lora_weights` (True unless the config's extra fields say otherwise), lower-cased as peft
    compares it."""
    init = config.extra.get("init_lora_weights", True)
    return init.lower() if isinstance(init, str) else init


def uses_mica(config: LoraConfig) -> bool:
    """MiCA (peft's init_lora_weights="mica") trains A only: B holds the base weight's minor singular directions
    and stays frozen, also when a saved MiCA adapter is loaded to train on."""
    return init_method(config) == "mica"


@torch.no_grad()
def _mica_init(layer: LoRALinear):
    """B = the r left singular vectors of W with the smallest singular values, A = 0 (so B @ A = 0 and W stays
    as it is), B frozen: peft's MiCA initialisation."""
    w = layer.base.weight.float()
    if layer.r > min(w.shape):
        raise ValueError(f"MiCA needs r <= min(in, out) = {min(w.shape)}, got r={layer.r}")
    u = torch.linalg.svd(w, full_matrices=False)[0]
    layer.lora_B.weight.copy_(u[:, -layer.r:])
    layer.lora_A.weight.zero_()


@torch.no_grad()
def _fresh_init(layer: LoRALinear, method):
    """A and B of a new adapter as peft initialises them for `init_lora_weights`. The LoRALinear starts as True's
    (A kaiming-uniform, B zero: a no-op). "eva" starts so too (peft then fits A to activations, a separate step)."""
    if method == "gaussian":  # A ~ N(0, 1/r), B zero
        nn.init.normal_(layer.lora_A.weight, std=1 / layer.r)
    elif method is False:  # nn.Linear's own init for both: B is not zero, the fresh adapter changes the model
        nn.init.kaiming_uniform_(layer.lora_B.weight, a=math.sqrt(5))
    elif method == "orthogonal":
        _orthogonal_init(layer)
    elif method == "mica":
        _mica_init(layer)


@torch.no_grad()
def _orthogonal_init(layer: LoRALinear):
    """peft's orthogonal init: A's and B's r-dim sides use the odd and the even rows of one random orthogonal
    [r, r] matrix, so B @ A = 0 (W unchanged) while neither is zero."""
    r = layer.r
    if r % 2:
        raise ValueError(f"init_lora_weights='orthogonal' needs an even rank, got r={r}")
    q = torch.linalg.qr(torch.randn(r, r))[0]
    a = (torch.randn(layer.in_features, r // 2) @ q[0::2]).T / 10.0
    b = torch.randn(r // 2, layer.out_features).T @ q[1::2] / 10.0
    layer.lora_A.weight.copy_(a)
    layer.lora_B.weight.copy_(b)


def inject_lora(model: nn.Module, config: LoraConfig, init_weights: bool = True) -> list[str]:
    """Replace the targeted nn.Linear modules by LoRALinear, freeze everything else. Returns the names wrapped.
    init_weights=False skips a costly initialisation (MiCA's SVD of every W) when the weights come from a file."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = target_names(model, config.target_modules, config.layers_to_transform, config.layers_pattern,
                         config.exclude_modules)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = LoRALinear(getattr(parent, child), config.rank_of(name), config.alpha_of(name), config.dropout,
                           config.use_rslora)
        if init_weights:
            _fresh_init(layer, init_method(config))
        if uses_mica(config):
            layer.lora_B.weight.requires_grad_(False)
        setattr(parent, child, layer.train(model.training))  # an eval-mode model must not get active dropout
    model.lora_config = config
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module):
    """Add every adapter's update into its base weight. An adapter on a head tied to the input embeddings must not
    change the embeddings too: the head gets its own copy first and the model (and its export) is untied."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if isinstance(head, LoRALinear) and not head.merged and embed is not None and head.base.weight is embed.weight:
        head.base.weight = nn.Parameter(head.base.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
    for m in lora_modules(model).values():
        m.merge()


def unmerge_lora(model: nn.Module):
    for m in lora_modules(model).values():
        m.unmerge()


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under HF names, without the adapter (`q_proj.base.weight` -> `q_proj.weight`).
    After merge_lora this is the merged checkpoint."""
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_A." in k or ".lora_B." in k:
            continue
        out[k.replace(".base.", ".")] = v
    return out


# ---- PEFT file format -----------------------------------------------------------------------------------

def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights under peft's saved key names."""
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight.detach()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight.detach()
    return out


def save_adapter(model: nn.Module, out_dir: str | Path, config: LoraConfig | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors as peft does (each file atomically)."""
    config = config or model.lora_config
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA layers to save")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # As peft records them: "all-linear" as the leaf names it wrapped, a regex or a list as given (a list entry
    # may be a dotted path like "layers.0.self_attn.q_proj": its leaf name alone would re-target every layer).
    targets = config.target_modules
    if targets == "all-linear":
        targets = sorted({n.rsplit(".", 1)[-1] for n in modules})
    elif not isinstance(targets, str):
        targets = sorted(set(targets))
    cfg = {**config.extra, "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.r,
           "lora_alpha": config.alpha, "lora_dropout": config.dropout, "target_modules": targets,
           "use_rslora": config.use_rslora, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
           "init_lora_weights": config.extra.get("init_lora_weights", True),  # (MiCA: peft then freezes B)
           "modules_to_save": None, "use_dora": False, "rank_pattern": config.rank_pattern,
           "alpha_pattern": config.alpha_pattern, "layers_to_transform": config.layers_to_transform,
           "layers_pattern": config.layers_pattern, "exclude_modules": config.exclude_modules,
           "base_model_name_or_path": config.base_model_name_or_path}
    # fp32 (an fp64 adapter, on an fp64 base, as it is: peft writes its tensors in their own dtype)
    tensors = {k: v.to(adapter_dtype(v.dtype)).cpu().contiguous() for k, v in adapter_state_dict(model).items()}
    tmp = out / (ADAPTER_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / ADAPTER_WEIGHTS)
    tmp = out / (ADAPTER_CONFIG + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / ADAPTER_CONFIG)
    return out


# peft LoraConfig fields that, when set, make the adapter compute something other than W x + scale * B A x (or train
# extra tensors): refused by name rather than loaded into a silently different model.
UNSUPPORTED_PEFT_FIELDS = ("alora_invocation_tokens", "velora_config", "monteclora_config", "kasa_config",
                           "use_bdlora", "arrow_config", "target_parameters", "lora_bias",
                           "trainable_token_indices", "layer_replication", "megatron_config", "loftq_config",
                           "corda_config", "lora_ga_config", "use_qalora")
# initialisations that leave the base weights as they are (the adapter file alone then defines the model)
PLAIN_INITS = (True, False, "gaussian", "orthogonal", "mica", "eva")  # (EVA: A from activations, base untouched)


def unsupported_field(fields: dict) -> str | None:
    """Why an adapter with these adapter_config.json fields cannot be computed here (naming the field), or None.
    read_adapter_config refuses such a file; LoraConfig refuses them in `extra`, which save_adapter writes back, so
    an adapter we save never tells peft to compute something else (PiSSA's init, layer replication, ...)."""
    for key, ok in (("bias", "none"), ("use_dora", False), ("fan_in_fan_out", False)):
        if fields.get(key, ok) not in (ok, None):
            return f"{key}={fields[key]!r} is not supported (expected {ok!r})"
    if fields.get("modules_to_save"):
        return (f"'modules_to_save' is set ({fields['modules_to_save']!r:.60}); adapters that carry whole trained "
                "modules besides LoRA are not supported")
    for key in UNSUPPORTED_PEFT_FIELDS:  # variants whose forward is not W x + scale B A x
        if fields.get(key):
            return f"'{key}' is set ({fields[key]!r:.60}); only plain LoRA (W x + scale B A x) is supported"
    init = fields.get("init_lora_weights", True)
    init = init.lower() if isinstance(init, str) else init  # (peft compares the names case-insensitively)
    if init not in PLAIN_INITS:  # PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA: peft rewrites the base weights on load
        return (f"init_lora_weights={init!r} is not supported: only initialisations that leave the base weights as "
                f"they are ({', '.join(map(repr, PLAIN_INITS))}); PiSSA, OLoRA, CorDA, LoftQ and LoRA-GA rewrite "
                "them, which peft redoes on load")
    return None


def read_adapter_config(adapter_dir: str | Path) -> LoraConfig:
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a PEFT LoRA adapter directory)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{path}: expected a JSON object of LoRA settings, got {type(raw).__name__}")
    if raw.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}: peft_type is {raw.get('peft_type')!r}; only LORA adapters are supported")
    refusal = unsupported_field(raw)
    if refusal:
        raise AdapterError(f"{path}: {refusal}")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in raw:
            raise AdapterError(f"{path}: missing field '{key}'")
    targets = raw["target_modules"]  # a string is a regex (or "all-linear"), as peft treats it
    if not isinstance(targets, str):
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise AdapterError(f"{path}: target_modules={targets!r:.80} (expected a list of module names, a regex "
                               "string or \"all-linear\")")
    _check_types(raw, path)
    patterns = {key: _read_pattern(raw, key, path) for key in ("rank_pattern", "alpha_pattern")}
    layers = raw.get("layers_to_transform")
    if not (layers is None or isinstance(layers, int) or
            isinstance(layers, list) and all(isinstance(i, int) for i in layers)):
        raise AdapterError(f"{path}: layers_to_transform={layers!r} (expected a block index or a list of them)")
    known = {"r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "base_model_name_or_path",
             "rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern", "exclude_modules"}
    try:
        return LoraConfig(r=int(raw["r"]), alpha=float(raw["lora_alpha"]),
                          dropout=float(raw.get("lora_dropout") or 0), target_modules=targets,
                          use_rslora=bool(raw.get("use_rslora", False)),
                          base_model_name_or_path=raw.get("base_model_name_or_path"), **patterns,
                          layers_to_transform=layers, layers_pattern=raw.get("layers_pattern") or None,
                          exclude_modules=raw.get("exclude_modules") or None,
                          extra={k: v for k, v in raw.items() if k not in known})
    except ValueError as e:
        raise AdapterError(f"{path}: {e}") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_names(value) -> bool:
    return isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)


# adapter_config.json fields read here: (accepts the value, what is expected). A JSON null is peft's default for
# all but r and lora_alpha. (A wrong type used to surface as a bare TypeError, or worse: r=4.5 read as 4, r=true
# as 1, use_rslora="false" as True.)
FIELD_TYPES = {
    "r": (lambda v: _is_number(v) and v == int(v) and v >= 1, "a positive integer"),
    "lora_alpha": (_is_number, "a number"),
    "lora_dropout": (lambda v: v is None or _is_number(v), "a number in [0, 1)"),
    "use_rslora": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "layers_pattern": (lambda v: v is None or _is_names(v), "a name or a list of names"),
    "exclude_modules": (lambda v: v is None or _is_names(v), "a list of module names or a regex string"),
}


def _check_types(raw: dict, path: Path):
    for key, (ok, expected) in FIELD_TYPES.items():
        if key in raw and not ok(raw[key]):
            raise AdapterError(f"{path}: {key}={raw[key]!r:.60} (expected {expected})")


def _read_pattern(raw: dict, key: str, path: Path) -> dict:
    """rank_pattern / alpha_pattern of an adapter_config.json: {} when absent or null, else a dict of numbers."""
    pattern = raw.get(key) or {}
    if not isinstance(pattern, dict) or not all(_is_number(v) for v in pattern.values()):
        raise AdapterError(f"{path}: {key}={pattern!r:.80} (expected an object of module pattern -> number)")
    return pattern


def _parse_adapter_key(key: str, weights: Path, config: LoraConfig) -> tuple[str, str]:
    """(module name, "lora_A" | "lora_B" | "base_layer") of a tensor in a peft adapter file.

    "base_layer" is the frozen weight of an adapted layer that peft writes as well when target_modules names an
    embedding-like layer (lm_head, embed_tokens: its save_embedding_layers="auto"); peft loads it back into the
    model, and so do we."""
    m = re.fullmatch(r"base_model\.model\.(.+)\.(lora_[AB])(?:\.[^.]+)?\.weight", key)
    if m:
        return m.group(1), m.group(2)
    m = re.fullmatch(r"base_model\.model\.(.+)\.base_layer\.weight", key)
    if m:
        return m.group(1), "base_layer"
    if re.fullmatch(r"base_model\.model\..+\.lora_embedding_[AB](?:\.[^.]+)?", key):
        raise AdapterError(f"{weights}: tensor '{key}' is an embedding LoRA (target_modules="
                           f"{config.target_modules!r} selects an embedding layer), which is not supported")
    raise AdapterError(f"{weights}: unexpected tensor '{key}' (expected '{PEFT_PREFIX}<module>.lora_A.weight' / "
                       "'.lora_B.weight', or '.base_layer.weight' of an adapted layer)")


def _open_safetensors(weights: Path):
    """safe_open, with a damaged file (truncated, not safetensors) reported as an AdapterError naming it."""
    try:
        return safe_open(str(weights), framework="pt")
    except (SafetensorError, OSError) as e:
        raise AdapterError(f"{weights}: not a readable safetensors file ({e})") from None


def _read_tensor(f, key: str, weights: Path) -> torch.Tensor:
    try:
        return f.get_tensor(key)
    except (SafetensorError, OSError) as e:
        raise AdapterError(f"{weights}: tensor '{key}' cannot be read ({e})") from None


def load_adapter(model: nn.Module, adapter_dir: str | Path, inject: bool = True) -> LoraConfig:
    """Load a PEFT LoRA adapter (ours or peft's) into `model`, injecting LoRA layers first when `inject`.

    With inject=False the model's existing LoRA layers receive the weights, so they must compute what the adapter
    does: a layer whose scale (lora_alpha, use_rslora) differs from the adapter's, or that is merged (its old update
    sits in the base weight), is refused rather than loaded into different logits."""
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: not found (peft's .bin adapters are not supported; re-save with "
                                "safe_serialization=True)")
    if inject:
        try:
            inject_lora(model, config, init_weights=False)  # (every A and B is read from the file below)
        except ValueError as e:  # targets that select nothing, or an embedding layer
            raise AdapterError(f"{adapter_dir / ADAPTER_CONFIG}: {e}") from None
    modules = lora_modules(model)
    for name, m in modules.items():
        if m.merged:
            raise AdapterError(f"{adapter_dir}: LoRA layer '{name}' is merged; unmerge_lora(model) before loading")
        if m.scale != config.scale_of(name):
            raise AdapterError(f"{adapter_dir / ADAPTER_CONFIG}: lora_alpha={config.alpha_of(name):g}, "
                               f"r={config.rank_of(name)}, use_rslora={config.use_rslora} (scale "
                               f"{config.scale_of(name):g}) for '{name}' but that LoRA layer has scale "
                               f"{m.scale:g}; load with inject=True into a model without LoRA")
        if uses_mica(config):
            m.lora_B.weight.requires_grad_(False)
    seen = set()
    with _open_safetensors(weights) as f:
        for key in f.keys():
            name, which = _parse_adapter_key(key, weights, config)
            if name not in modules:
                raise AdapterError(f"{weights}: tensor '{key}' is for module '{name}', which is not a LoRA layer "
                                   f"of this model (target_modules={config.target_modules!r})")
            layer = modules[name]
            param = layer.base.weight if which == "base_layer" else getattr(layer, which).weight
            t = _read_tensor(f, key, weights)
            if not t.is_floating_point():  # a cast would silently turn integer bytes into nonsense weights
                raise AdapterError(f"{weights}: tensor '{key}' is {t.dtype}, expected a floating-point weight")
            if tuple(t.shape) != tuple(param.shape):
                why = "the model's own weight" if which == "base_layer" else f"r={config.rank_of(name)}"
                raise AdapterError(f"{weights}: tensor '{key}' has shape {tuple(t.shape)}, expected "
                                   f"{tuple(param.shape)} ({why})")
            with torch.no_grad():
                # A saved base weight is nearly always the model's own: copying it would write into a tied one.
                if which != "base_layer" or not torch.equal(param, t.to(param.dtype)):
                    param.copy_(t)
            seen.add((name, which))
    missing = [f"{n}.{w}" for n in modules for w in ("lora_A", "lora_B") if (n, w) not in seen]
    if missing:
        raise AdapterError(f"{weights}: no weights for {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return config
