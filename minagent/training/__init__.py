"""Training: continual pretraining (CPT) on manuals and SFT on agent trajectories, full or LoRA.

    cpt_data.py      manuals (.txt/.md/.html dir or JSONL {"text"}) -> token stream with EOS, cached on disk
    trajectories.py  trajectory JSONL -> chat-templated token ids with an assistant-only loss mask
    packing.py       fixed-length rows with targets, document ids and per-document positions
    schedule.py      cosine learning rate with linear warmup
    checkpoint.py    atomic training checkpoints: trainable weights, optimizer, RNG, data position
    distributed.py   torchrun/DDP setup and the deterministic per-rank batch order
    trainer.py       the loop: grad accumulation, clipping, autocast, eval, metrics, resume, export
    recipe.py        TrainConfig (every flag) and named recipes such as the agent-distillation one
"""
from .errors import CheckpointStateError, TrainingDataError
from .recipe import TrainConfig

__all__ = ["TrainConfig", "TrainingDataError", "CheckpointStateError", "train"]


def train(config: "TrainConfig"):
    """Run one training stage end to end (see trainer.run)."""
    from .trainer import run

    return run(config)
