"""Errors for bad training input. They subclass ValueError; every message names the file (and line) at fault
and says what was expected, so a user with a 10k-line trajectory file can go straight to the problem."""


class TrainingDataError(ValueError):
    """Training data that cannot be used: an empty corpus, a malformed JSONL line, an unusable trajectory."""


class CheckpointStateError(ValueError):
    """A training checkpoint that cannot be resumed (missing files, a different configuration)."""


class CorruptCheckpointError(CheckpointStateError):
    """A checkpoint file that is missing or cannot be read (damage on disk: checkpoints are written atomically)."""
