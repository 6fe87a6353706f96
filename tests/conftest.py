"""What the test modules share: the corpora's paths, a brat corpus writer, the one tiny in-process model, the one
way to run a command of the project in a new process, and a tiny model trained once per session by train.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_BERT = REPO / "configs" / "tiny-bert"
SAMPLE = REPO / "data" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_CORPUS = SHARED_DATA / "ruijin_round1" / "train"
SCRIPT_ENVIRONMENT = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}


def pytest_runtest_setup(item):
    """Tests marked ``real_corpus`` skip, saying where they looked, when ../shared is not beside the checkout."""
    if item.get_closest_marker("real_corpus") and not REAL_CORPUS.is_dir():
        pytest.skip(f"real corpus not found at {REAL_CORPUS} (../shared beside the checkout)")


def run_script(arguments, cwd=REPO, *, succeeds=True, stdin=None, timeout=600) -> subprocess.CompletedProcess:
    """Run a command line of the project as a user would (a new interpreter, CPU only). ``succeeds=True``: it
    must exit 0; ``succeeds=False``: it must fail, and without a traceback (the project fails in one line)."""
    completed = subprocess.run([sys.executable, *arguments], cwd=cwd, env=SCRIPT_ENVIRONMENT, input=stdin,
                               capture_output=True, text=True, timeout=timeout)
    if succeeds:
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    else:
        assert completed.returncode != 0 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
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
    """The one line with which predict.py refuses ``arguments`` (``predict.py: ...``, exit status 2, the last
    line of standard error); fails the test if it ends any other way."""
    capsys.readouterr()  # what came before is not the refusal
    with pytest.raises(SystemExit) as exit_info:
        run_predict(monkeypatch, *arguments, model_loads=model_loads)
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and error and error[-1].startswith("predict.py: "), error
    return error[-1]


def refusal(script: str, *arguments, cwd=REPO) -> str:
    """The one line with which ``script`` refuses ``arguments``: exit status 2, no traceback."""
    completed = subprocess.run([sys.executable, script, *arguments], cwd=cwd, capture_output=True, text=True,
                               timeout=600, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert lines and lines[-1].startswith(f"{script}: "), completed.stderr[-3000:]
    return lines[-1]


def parse_error(parser, arguments, capsys) -> str:
    """The one line on standard error with which ``cli.parse_arguments`` refuses ``arguments`` (exit status 2)."""
    from brat_ner import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.parse_arguments(parser, arguments)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(error.strip().splitlines()) == 1, error
    return error.strip()


def write_corpus(folder: Path, documents: dict, conf: str | None = None, encoding="utf-8") -> Path:
    """A brat folder: ``documents`` maps an id to (text, ann), written as bytes in ``encoding`` (no newline
    translation); a ``None`` text or ann leaves that file out; ``conf`` is written as annotation.conf."""
    folder.mkdir(parents=True, exist_ok=True)
    for document_id, (text, ann) in documents.items():
        if text is not None:
            (folder / f"{document_id}.txt").write_bytes(text.encode(encoding))
        if ann is not None:
            (folder / f"{document_id}.ann").write_bytes(ann.encode(encoding))
    if conf is not None:
        (folder / "annotation.conf").write_bytes(conf.encode("utf-8"))
    return folder


def sample_texts(folder: Path) -> list[str]:
    """The texts of a brat folder's documents, in the order of their names."""
    return [path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.txt"))]


def load_corpus(folder: Path, **settings):
    """The builder's corpus of a brat folder and its statistics, cached beside the folder."""
    from dataset_script import ruijin_ner

    return ruijin_ner.load(folder, cache_dir=str(folder.parent / "cache"), return_stats=True, **settings)


def tiny_model(seed=0, **settings):
    """A BertBiLstmCrfForTokenClassification built in this process from configs/tiny-bert, the head's settings
    and any of the encoder's overridden by ``settings``, its weights drawn from ``seed``."""
    import torch

    from configuration_bert_bilstm_crf import BertBiLstmCrfConfig
    from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification

    encoder = json.loads((TINY_BERT / "config.json").read_text(encoding="utf-8"))
    encoder.pop("model_type")
    torch.manual_seed(seed)
    return BertBiLstmCrfForTokenClassification(BertBiLstmCrfConfig(**{**encoder, **settings}))


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
