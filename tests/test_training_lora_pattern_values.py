"""A rank pattern value that is not a finite number (Python's json reads Infinity, NaN and 1e400 as floats) is
refused naming the flag, like any other bad rank; it was an OverflowError traceback (train.py catches ValueError
only) or "cannot convert float NaN to integer". Expected messages written by hand."""
import pytest

from minagent.training.recipe import TrainConfig


@pytest.mark.parametrize("value", ['{"down_proj": Infinity}', '{"down_proj": -Infinity}', '{"down_proj": NaN}',
                                   '{"down_proj": 1e400}'])
def test_a_rank_that_is_not_a_finite_number_names_the_flag(tmp_path, value):
    cfg = TrainConfig(model=str(tmp_path), data=str(tmp_path), out=str(tmp_path / "out"), lora_rank_pattern=value)
    with pytest.raises(ValueError, match=r"--lora-rank-pattern: the rank for 'down_proj' must be a positive integer"):
        cfg.validate()
