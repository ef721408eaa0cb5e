"""`torchrun --nproc_per_node 2 train.py sft ...` printed the run's summary once per process, the second copy
without the exported paths (only rank 0 exports). Oracle: torchrun's documented RANK variable (0 on the process
that writes the checkpoints and the export, as minagent.training.distributed reads it too).
"""
import pytest

import minagent.training
import train

SUMMARY = {"steps": 1, "loss": 1.0}


@pytest.mark.parametrize("rank, printed", [(None, True), ("0", True), ("1", False)])
def test_only_rank_zero_prints_the_summary(monkeypatch, capsys, tmp_path, rank, printed):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(minagent.training, "train", lambda cfg: dict(SUMMARY))
    data = tmp_path / "traj.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    train.main(["sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out")])
    assert (str(SUMMARY) in capsys.readouterr().out) is printed
