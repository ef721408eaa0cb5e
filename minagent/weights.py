"""Loading and exporting HF safetensors checkpoints.

Loading builds the model on the meta device (no memory), then streams tensors one at a time out of the
memory-mapped safetensors file(s), converts each to the wanted dtype/device and assigns it: peak memory is the
model plus one tensor, never two copies of the weights. Every tensor is checked against the shape the config
implies, so a checkpoint that does not fit its config.json fails with the file and tensor named.

Exporting writes config.json + model.safetensors (or numbered shards and model.safetensors.index.json above a
size limit) in HF's layout, each file under a temporary name renamed into place, so
`transformers.AutoModelForCausalLM.from_pretrained` loads it and an interrupted export never leaves a torn file.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .model import Transformer
from .packing import pack_state_dict

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
# Tensors some checkpoints carry that are derived, not learned: skipped on load.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the tensor or field."""


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPES))}")
    return DTYPES[str(dtype)]


def checkpoint_files(path: str | Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it (single-file or sharded checkpoint).

    model.safetensors wins over an index, as in transformers: its save_pretrained of a single file into a directory
    that held a sharded save removes the old shards but not the old index."""
    path = Path(path)
    index, single = path / INDEX_NAME, path / SINGLE_NAME
    if index.exists() and not single.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({e!r})") from None
        if not (isinstance(weight_map, dict) and all(isinstance(v, str) and v for v in weight_map.values())):
            raise CheckpointError(f"{index}: 'weight_map' must map each tensor name to a shard file name")
        files = {name: path / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.exists():
                raise CheckpointError(f"{index}: lists shard {shard.name}, which does not exist in {path}")
        return files
    if not single.exists():
        raise FileNotFoundError(f"{path}: no {SINGLE_NAME} or {INDEX_NAME} (expected a HF safetensors checkpoint)")
    with _open(single) as f:
        return {name: single for name in f.keys()}


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt")
    except Exception as e:  # safetensors raises its own error type for a bad header or a short file
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None


def iter_tensors(path: str | Path):
    """Yield (name, tensor, file) one tensor at a time from a checkpoint directory."""
    by_file: dict[Path, list[str]] = {}
    for name, file in checkpoint_files(path).items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with _open(file) as f:
            for name in names:
                try:
                    tensor = f.get_tensor(name)
                except Exception as e:
                    raise CheckpointError(f"{file}: tensor '{name}' cannot be read ({e})") from None
                yield name, tensor, file


def _checkpoint_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of this model holds, by HF name (a tied head is not stored)."""
    expected = dict(model.state_dict())
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight")
    return expected


def check_state_dict(state: dict, hf_config: dict, where: str):
    """CheckpointError unless `state` holds exactly the tensors, of exactly the shapes, that `hf_config`
    describes: a converter that wrote a config and weights that disagree would make a checkpoint transformers
    loads with randomly initialised holes."""
    cfg = ModelConfig.from_hf(hf_config)
    with torch.device("meta"), _skip_random_init():
        want = {k: tuple(v.shape) for k, v in _checkpoint_tensors(Transformer(cfg)).items()}
    have = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    if cfg.tie_word_embeddings:
        have.pop("lm_head.weight", None)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        raise CheckpointError(f"{where}: the weights do not fit the config"
                              + (f"; missing {missing[:4]}" if missing else "") + (f"; unexpected {extra[:4]}" if extra else ""))
    wrong = [(k, have[k], want[k]) for k in sorted(want) if have[k] != want[k]]
    if wrong:
        k, got, exp = wrong[0]
        raise CheckpointError(f"{where}: tensor '{k}' has shape {got}, the config says {exp}"
                              + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))


def check_device(device) -> torch.device | None:
    """A torch.device this torch can use, or ValueError saying why not (before any weight is read): torch's own
    errors for a CUDA device on a CPU-only build are an AssertionError or an index complaint. None passes
    through (load_model takes it as the CPU, where the tensors are read)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r}: not a torch device (expected cpu, cuda, cuda:N, mps): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available in this torch build or machine; use cpu")
    return dev


def load_model(path: str | Path, dtype=None, device="cpu") -> Transformer:
    """Load a HF checkpoint directory (config.json + safetensors) into a minagent `Transformer` in eval mode.

    dtype: None keeps the checkpoint's `torch_dtype`; or "float32"/"bfloat16"/"float16"/a torch.dtype.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint directory")
    device = check_device(device) or torch.device("cpu")  # (None: where safetensors reads them, the CPU)
    cfg = ModelConfig.from_hf(path)
    dtype = resolve_dtype(dtype) or DTYPES.get(cfg.torch_dtype, torch.float32)
    with torch.device("meta"), _skip_random_init():
        model = Transformer(cfg)
    expected = _checkpoint_tensors(model)
    loaded, tied_head = {}, None
    for name, tensor, file in iter_tensors(path):
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            tied_head = (tensor, file)  # the embedding's twin, or not (see _place_stored_head)
            continue
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        if name not in expected:
            raise CheckpointError(f"{file}: unexpected tensor '{name}' for {cfg.architecture} "
                                  f"(is config.json from the same model?)")
        want = tuple(expected[name].shape)
        if not tensor.is_floating_point():  # a cast would silently turn integer bytes into nonsense weights
            raise CheckpointError(f"{file}: tensor '{name}' is {tensor.dtype}, expected a floating-point weight")
        if tuple(tensor.shape) != want:
            raise CheckpointError(f"{file}: tensor '{name}' has shape {tuple(tensor.shape)}, "
                                  f"expected {want} from {path / 'config.json'}")
        loaded[name] = tensor.to(device=device, dtype=dtype)
    if tied_head is not None:
        _place_stored_head(model, loaded, tied_head, path, device, dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"{path}: checkpoint lacks tensors {missing[:5]}{more}")
    pack_state_dict(loaded, cfg.num_hidden_layers)  # q/k/v and gate/up side by side: one matmul each
    model.load_state_dict(loaded, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset_parameters(torch.device(device))
    return model.eval()


def _place_stored_head(model: Transformer, loaded: dict, tied_head: tuple, path: Path, device, dtype):
    """Use the lm_head.weight a checkpoint of a tied model stores, as transformers 5 does.

    Alone (no embedding stored) it is the shared matrix. Beside an equal embedding it is the same matrix, and the
    model stays tied. Beside a *different* embedding the config is wrong about tying: transformers then warns and
    loads the two untied, so the model is untied here too (its config then says so, and an export stores both)."""
    tensor, file = tied_head
    want = tuple(model.model.embed_tokens.weight.shape)
    if not tensor.is_floating_point() or tuple(tensor.shape) != want:
        raise CheckpointError(f"{file}: tensor 'lm_head.weight' (tied to the embedding) is {tensor.dtype} "
                              f"{tuple(tensor.shape)}, expected floating-point {want} from {path / 'config.json'}")
    head = tensor.to(device=device, dtype=dtype)
    embed = loaded.get("model.embed_tokens.weight")
    if embed is None:
        loaded["model.embed_tokens.weight"] = head
    elif not torch.equal(head, embed):
        model.config.tie_word_embeddings = False
        model.lm_head.weight = nn.Parameter(torch.empty(want, device="meta"))  # its own slot, filled on assign
        loaded["lm_head.weight"] = head


@contextlib.contextmanager
def _skip_random_init():
    """Random init of weights the checkpoint overwrites is wasted work; on the meta device it also pulls in
    torch's decomposition machinery, seconds of start-up per process. Skip it while the model is built."""
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved


# ---- export ---------------------------------------------------------------------------------------------

def save_hf_checkpoint(state_dict: dict, hf_config: dict, out_dir: str | Path,
                       max_shard_bytes: int = 4 * 1024**3, dtype=None) -> Path:
    """Write config.json and safetensors (sharded above `max_shard_bytes`) in HF's layout, atomically per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = resolve_dtype(dtype)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state_dict.items()}
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += nbytes
    shards.append(current)

    config = dict(hf_config)
    if dtype is not None:
        config["torch_dtype"] = config["dtype"] = str(dtype).removeprefix("torch.")
    _atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    if len(shards) == 1:
        _atomic_save(shards[0], out / SINGLE_NAME)
        _remove_stale(out, keep={SINGLE_NAME})
        return out
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for shard, name in zip(shards, names):
        _atomic_save(shard, out / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _atomic_write_text(out / INDEX_NAME, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                    indent=2) + "\n")
    _remove_stale(out, keep=set(names) | {INDEX_NAME})
    return out


def save_model(model: Transformer, out_dir: str | Path, max_shard_bytes: int = 4 * 1024**3, dtype=None) -> Path:
    """Export a minagent model so `transformers.AutoModelForCausalLM.from_pretrained(out_dir)` loads it."""
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # one storage, saved once under its embedding name as HF does
    cfg = model.config.to_hf_dict()
    cfg["torch_dtype"] = cfg["dtype"] = str(model.lm_head.weight.dtype).removeprefix("torch.")
    return save_hf_checkpoint(sd, cfg, out_dir, max_shard_bytes, dtype)


def _atomic_save(tensors: dict, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file private (0600); give it normal permissions
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _remove_stale(out: Path, keep: set[str]):
    """Drop weight files of an earlier export with a different sharding, so only one checkpoint is present."""
    for f in out.glob("model*.safetensors*"):
        if f.name not in keep and (f.suffix == ".safetensors" or f.name == INDEX_NAME):
            f.unlink()
