"""`train.py sft --lora-rank 8` (meaning the rank) is taken by argparse as an abbreviation of --lora-rank-pattern,
and was refused as "--lora-rank-pattern: expected a JSON object ..., got 8", a flag the user never wrote.
The refusal now names the flag meant. Oracle: argparse itself maps --lora-rank to lora_rank_pattern (checked
first), and peft's LoraConfig takes one rank for every module as `r` (our --lora-r), not in rank_pattern.
"""
import pytest

import train


def test_argparse_reads_lora_rank_as_the_pattern_flag():
    args = train.build_parser().parse_args(["sft", "--lora-rank", "8"])
    assert args.lora_rank_pattern == "8"


@pytest.mark.parametrize("argv, meant", [
    (["--lora-rank", "8"], "one rank for every module is --lora-r"),
    (["--lora-alpha-pattern", "16"], "one alpha for every module is --lora-alpha"),
])
def test_a_bare_number_names_the_flag_meant(tmp_path, argv, meant):
    (tmp_path / "t.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}, '
                                      '{"role": "assistant", "content": "a"}]}\n')
    with pytest.raises(SystemExit) as stop:
        train.main(["sft", "--model", str(tmp_path), "--data", str(tmp_path / "t.jsonl"), "--out",
                    str(tmp_path / "o"), *argv])
    assert meant in str(stop.value.code)


def test_a_json_object_is_still_taken(tmp_path):
    from minagent.training.recipe import TrainConfig
    cfg = TrainConfig(model="m", data="d", out="o", lora_rank_pattern='{"down_proj": 8}')
    assert cfg.lora_rank_pattern is not None
