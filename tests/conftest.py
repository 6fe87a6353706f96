"""Shared fixtures: a tiny model trained once per test session by the real train.py on the sample corpus."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_BERT = REPO / "configs" / "tiny-bert"


def run_script(arguments, cwd=REPO, timeout=600):
    """Run a command line of the project as a user would (CPU only) and return the completed process."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True,
                               text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    return completed


def run_predict(monkeypatch, *arguments, model_loads=True):
    """predict.py's command line, run in this process as ``python predict.py`` runs it (``run_main``), which
    saves the seconds of a new interpreter; ``model_loads=False`` makes loading the model an error, to show a
    refusal comes before it."""
    import predict
    from brat_ner import cli

    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["predict.py", *arguments])
        if not model_loads:
            patch.setattr(predict, "pipeline", lambda *args, **kwargs: pytest.fail("the model was loaded"))
        cli.run_main(predict.main, "predict.py")


def predict_error(monkeypatch, capsys, *arguments, model_loads=True) -> str:
    """The message with which predict.py refuses ``arguments``: one line ``predict.py: ...`` (a project check),
    or argparse's usage error; fails the test if it ends any other way."""
    with pytest.raises(SystemExit) as exit_info:
        run_predict(monkeypatch, *arguments, model_loads=model_loads)
    code = exit_info.value.code
    if code == 2:  # argparse printed its error
        return capsys.readouterr().err
    assert isinstance(code, str) and code.startswith("predict.py: ") and "\n" not in code, code
    return code


def small_training(output_dir, *extra, encoder=("--encoder_config", str(TINY_BERT))):
    """train.py arguments for a tiny BERT-BiLSTM-CRF on the sample corpus (seconds on a CPU)."""
    return [
        "train.py", "--data_dir", "data/sample", *encoder, "--tokenizer_name", str(TINY_BERT),
        "--output_dir", str(output_dir), "--window_chars", "62", "--num_train_epochs", "3",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--lstm_hidden_size", "16",
        "--use_cpu", "true", "--seed", "7", *extra,
    ]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """(output folder, completed process) of one small training run."""
    output_dir = tmp_path_factory.mktemp("train") / "model"
    return output_dir, run_script(small_training(output_dir))
