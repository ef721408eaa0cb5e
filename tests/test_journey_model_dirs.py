"""A --model that is not a checkpoint directory is refused up front, naming the flag and what to pass instead.

The README's own-domain walk-through writes `train.py ... --out runs/my-cpt` and then passes
`runs/my-cpt/final/model` on; passing `runs/my-cpt` itself is the likely slip. That directory holds a config.json
of its own (the run's settings), which used to surface as "config.json: field 'architectures' is None" (infer.py)
or "no tokenizer found in runs/my-cpt" (train.py). Oracle: the hand-built layout below is what train.py --out and
a recipe stage write (checked against a real run: config.json with "stage", final/model/config.json), so the
expected model path is known by construction.
"""
import json
from pathlib import Path

import pytest

import infer
import train
from cli_errors import infer_usage_error

MODEL_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}


@pytest.fixture
def run_dir(tmp_path):
    """What `train.py sft --out RUN` leaves: the run's settings as config.json, the model in final/model."""
    run = tmp_path / "my-sft"
    (run / "final" / "model").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"stage": "sft", "model": "base", "out": str(run)}))
    (run / "final" / "model" / "config.json").write_text(json.dumps(MODEL_CONFIG))
    return run


def test_chat_names_the_model_inside_a_training_run(capsys, run_dir):
    err = infer_usage_error(capsys, ["chat", "--prompt", "hi", "--model", str(run_dir)])
    assert f"chat --model {run_dir}: a training run's directory" in err
    assert f"its model is {run_dir / 'final' / 'model'}" in err


@pytest.mark.parametrize("argv", [
    ["ask", "--question", "q", "--no-search", "--model", "{m}"],
    ["exam", "--exam", "{own}/exam.jsonl", "--no-search", "--out", "{t}/r.jsonl", "--model", "{m}"],
    ["serve", "--model", "{m}"],
    ["distill", "--questions", "{own}/exam.jsonl", "--no-search", "--out", "{t}/t.jsonl", "--teacher", "{m}"],
])
def test_the_agent_commands_name_the_model_inside_a_training_run(tmp_path, run_dir, argv):
    """ask/exam/serve/distill load their model through load_llm (a URL or a directory): it says it there, as
    the ValueError infer.py prints as `error: ...`, before any question runs."""
    own = Path(__file__).parent / "data" / "own_domain"
    argv = [a.replace("{m}", str(run_dir)).replace("{t}", str(tmp_path)).replace("{own}", str(own)) for a in argv]
    with pytest.raises(ValueError) as error:
        infer.main(argv)
    assert f"{argv[-2]} {run_dir}: a training run's directory" in str(error.value)
    assert f"its model is {run_dir / 'final' / 'model'}" in str(error.value)
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "r.jsonl").exists()


def test_a_recipe_stage_directory_names_its_run_model(capsys, tmp_path):
    stage = tmp_path / "runs" / "tiny" / "sft"          # the recipe's layout: the run lives in stage/run
    (stage / "run" / "final" / "model").mkdir(parents=True)
    (stage / "run" / "final" / "model" / "config.json").write_text(json.dumps(MODEL_CONFIG))
    err = infer_usage_error(capsys, ["chat", "--prompt", "hi", "--model", str(stage)])
    assert f"its model is {stage / 'run' / 'final' / 'model'}" in err


def test_a_directory_without_config_json_is_named(capsys, tmp_path):
    err = infer_usage_error(capsys, ["chat", "--prompt", "hi", "--model", str(tmp_path)])
    assert f"chat --model {tmp_path}: no config.json" in err


def test_a_missing_directory_and_a_file_are_named(capsys, tmp_path):
    err = infer_usage_error(capsys, ["chat", "--prompt", "hi", "--model", str(tmp_path / "nope")])
    assert f"chat --model {tmp_path / 'nope'}: no such directory" in err
    a_file = tmp_path / "model.gguf"
    a_file.write_bytes(b"GGUF")
    err = infer_usage_error(capsys, ["index", "--corpus", str(tmp_path), "--out", str(tmp_path / "i"), "--dense",
                               "--lm", str(a_file)])
    assert f"index --lm {a_file}: a file, not a directory" in err


def test_an_unfinished_run_says_its_model_is_not_there(capsys, run_dir):
    (run_dir / "final" / "model" / "config.json").unlink()
    err = infer_usage_error(capsys, ["chat", "--prompt", "hi", "--model", str(run_dir)])
    assert f"{run_dir / 'config.json'} holds a training run's settings" in err
    assert "--export false" in err


def test_a_url_is_left_to_the_client(capsys, tmp_path):
    """ask/distill take a server URL where a directory would be: no directory check applies to it."""
    from minagent.cli_paths import model_dir_problem
    assert model_dir_problem("--teacher", "http://127.0.0.1:8000/v1") is None


def test_a_real_checkpoint_passes(tmp_path, run_dir):
    from minagent.cli_paths import model_dir_problem
    assert model_dir_problem("--model", run_dir / "final" / "model") is None


@pytest.mark.parametrize("argv", [
    ["sft", "--data", "traj.jsonl", "--out", "{t}/out", "--model", "{m}"],
    ["cpt", "--data", "manuals", "--out", "{t}/out", "--model", "{m}"],
    ["recipe", "--tier", "smollm2", "--work", "{t}/work", "--base-model", "{m}"],
])
def test_train_names_the_model_inside_a_training_run(tmp_path, run_dir, argv):
    (tmp_path / "traj.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}, '
                                         '{"role": "assistant", "content": "a"}]}\n')
    (tmp_path / "manuals").mkdir()
    argv = [a.replace("{m}", str(run_dir)).replace("{t}", str(tmp_path)) for a in argv]
    argv = [str(tmp_path / a) if a in ("traj.jsonl", "manuals") else a for a in argv]
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    message = str(stop.value.code)
    assert f"train.py: {argv[-2]} {run_dir}: a training run's directory" in message
    assert f"its model is {run_dir / 'final' / 'model'}" in message
    assert not (tmp_path / "work").exists()   # the recipe stopped before its first stage
