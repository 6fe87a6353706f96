"""A run is finished only when all it writes is written and checks out: run records, a run stopped after saving
its model finished from it, changed options named, weights readable under the usual umask, the temporary files
of killed runs deleted."""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import predict
import train
from brat_ner import cli, files, runs
from conftest import REPO, SAMPLE, SCRIPT_ENVIRONMENT, run_script, small_training

USUAL_UMASK = 0o022
LATER_OUTPUTS = ("corpus.json", "training_curves.png", "test_f1_per_type.png")  # written after test_report.json


def run_under_usual_umask(arguments) -> subprocess.CompletedProcess:
    """A command line of the project run as a user with umask 022 runs it (its exit status unchecked)."""
    previous = os.umask(USUAL_UMASK)
    try:
        return subprocess.run([sys.executable, *arguments], cwd=REPO, env=SCRIPT_ENVIRONMENT, capture_output=True,
                              text=True, timeout=600)
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def stopped_and_finished(tmp_path_factory):
    """A train.py run that crashed right after writing test_report.json (a folder where its corpus.json goes
    makes that write fail), then its rerun: (folder, the crash, what the crash left, the rerun)."""
    output_dir = tmp_path_factory.mktemp("stopped") / "model"
    (output_dir / "corpus.json").mkdir(parents=True)
    crashed = run_under_usual_umask(small_training(output_dir))
    left = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in output_dir.iterdir()
            if path.is_file()}
    (output_dir / "corpus.json").rmdir()
    rerun = run_under_usual_umask(small_training(output_dir))
    return output_dir, crashed, left, rerun


@pytest.fixture
def finished_copy(stopped_and_finished, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    output_dir, *_ = stopped_and_finished
    copy = tmp_path / "finished"
    shutil.copytree(output_dir, copy, ignore=shutil.ignore_patterns("checkpoint-*"))
    return copy


def claim(output_dir: Path):
    """train.py's check of its --output_dir, in this process."""
    training_args = train.NerTrainingArguments(output_dir=str(output_dir), use_cpu=True)
    return runs.claim_output_dir("train.py", training_args, runs.RunArguments(), finished_marker="test_report.json")


def test_a_run_stopped_after_its_test_report_is_finished_from_its_saved_model(stopped_and_finished):
    output_dir, crashed, left, rerun = stopped_and_finished
    assert crashed.returncode != 0 and "IsADirectoryError" in crashed.stderr, crashed.stderr[-3000:]
    assert "test_report.json" in left and not any(name in left for name in LATER_OUTPUTS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "holds a run stopped after saving its model: finishing it" in rerun.stderr
    assert "nothing to do" not in rerun.stdout and "Resuming" not in rerun.stderr
    # Not trained again: the saved weights are untouched, and scoring them again gives the same report.
    weights = output_dir / "model.safetensors"
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == left["model.safetensors"]
    assert (output_dir / "test_report.json").read_bytes() == left["test_report.json"][0]
    assert all((output_dir / name).is_file() for name in LATER_OUTPUTS)
    record = json.loads((output_dir / runs.RECORD_NAME).read_text(encoding="utf-8"))
    assert record["stage"] == runs.FINISHED and set(LATER_OUTPUTS) <= set(record["outputs"])

    again = run_script(small_training(output_dir))
    assert f"train.py: {output_dir} holds a finished run" in again.stdout


def test_a_finished_run_rerun_with_a_changed_option_names_it(stopped_and_finished):
    output_dir, *_ = stopped_and_finished
    before = {path: path.read_bytes() for path in output_dir.rglob("*") if path.is_file()}
    arguments = small_training(output_dir)
    arguments[arguments.index("--learning_rate") + 1] = "0.01"
    refused = run_script(arguments, succeeds=False)
    assert refused.returncode == 2
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith(f"train.py: {output_dir} holds a run trained with other arguments"), message
    assert "learning_rate 0.001 -> 0.01" in message and "--overwrite_output_dir" in message
    assert {path: path.read_bytes() for path in output_dir.rglob("*") if path.is_file()} == before


def test_a_finished_run_whose_weights_changed_is_refused_naming_the_file(finished_copy):
    weights = finished_copy / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as file:  # one byte of a tensor changed: the header still reads
        file.seek(size - 1)
        last = file.read(1)
        file.seek(size - 1)
        file.write(bytes([last[0] ^ 1]))
    with pytest.raises(ValueError, match="model.safetensors is not the file run_record.json recorded"):
        claim(finished_copy)
    os.truncate(weights, size // 2)
    with pytest.raises(ValueError, match=rf"model.safetensors has {size // 2} bytes where run_record.json "
                                         rf"recorded {size}; give --overwrite_output_dir"):
        claim(finished_copy)


def test_a_run_that_lost_a_recorded_file_is_refused_naming_it(finished_copy):
    (finished_copy / "training_curves.png").unlink()
    with pytest.raises(ValueError, match=r"run_record.json lists files that are missing \(training_curves.png\)"):
        claim(finished_copy)


def test_overwrite_output_dir_deletes_the_record(finished_copy):
    training_args = train.NerTrainingArguments(output_dir=str(finished_copy), use_cpu=True)
    lock = runs.claim_output_dir("train.py", training_args, runs.RunArguments(overwrite_output_dir=True),
                                 finished_marker="test_report.json")
    lock.release()
    assert not (finished_copy / runs.RECORD_NAME).exists() and (finished_copy / "model.safetensors").is_file()


def test_predict_names_a_truncated_model_file_in_one_line(finished_copy):
    weights = finished_copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ValueError) as error:
        predict.load_tagger(predict.PredictArguments(model_name_or_path=str(finished_copy), device="cpu"))
    assert str(error.value).startswith(f"--model_name_or_path {finished_copy}: model.safetensors cannot be read")
    assert isinstance(error.value, cli.UsageError)  # so run_main ends predict.py with this one line


def test_a_folder_finished_before_run_records_counts_as_finished_when_its_weights_read(finished_copy, capsys):
    (finished_copy / runs.RECORD_NAME).unlink()  # what train.py wrote before the records
    with pytest.raises(SystemExit) as exit_info:
        claim(finished_copy)
    assert exit_info.value.code == 0
    assert "holds a finished run (test_report.json and the model are there)" in capsys.readouterr().out
    weights = finished_copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 10)
    with pytest.raises(ValueError, match="model.safetensors cannot be read"):
        claim(finished_copy)


def test_weights_are_readable_under_the_usual_umask_in_the_run_and_upload_folders(stopped_and_finished, tmp_path):
    output_dir, *_ = stopped_and_finished
    weights = [output_dir / "model.safetensors", *output_dir.glob("checkpoint-*/model.safetensors")]
    assert len(weights) > 1 and {path: mode(path) for path in weights} == {path: 0o644 for path in weights}

    model_dir = tmp_path / "private"  # a run folder whose weights are private, as safetensors writes them
    shutil.copytree(output_dir, model_dir, ignore=shutil.ignore_patterns("checkpoint-*"))
    (model_dir / "model.safetensors").chmod(0o600)
    completed = run_under_usual_umask(["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", "me/tiny",
                                       "--dry_run", str(tmp_path / "hub"), "--trust_remote_code", "true"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert mode(tmp_path / "hub" / "model.safetensors") == 0o644


def test_the_temporary_files_of_killed_runs_are_deleted_by_the_next_run(finished_copy, tmp_path, capsys):
    stale = [finished_copy / ".corpus.json.k2j4_x9q.tmp", finished_copy / ".test_report.json.0abcdefg.tmp"]
    others = [finished_copy / ".notes.tmp", finished_copy / "draft.tmp"]  # not atomic_write's: kept
    for path in stale + others:
        path.write_text("{", encoding="utf-8")
    lock_path = finished_copy / files.LOCK_NAME
    lock_path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}), encoding="utf-8")
    with pytest.raises(ValueError, match="is in use by another run"):
        claim(finished_copy)
    assert all(path.exists() for path in stale)  # a live run may still be writing them
    lock_path.unlink()
    with pytest.raises(SystemExit):
        claim(finished_copy)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in others)

    predicted = tmp_path / "predicted"
    predicted.mkdir()
    killed_write = predicted / ".01.ann.p0q1r2s3.tmp"  # a predict.py run killed while writing 01.ann
    killed_write.write_text("T1\tDisease 0 2\t", encoding="utf-8")
    run_script(["predict.py", "--model_name_or_path", str(finished_copy), "--input_dir", str(SAMPLE),
                "--output_dir", str(predicted)])
    assert not killed_write.exists() and (predicted / "01.ann").is_file()
    assert not (predicted / files.LOCK_NAME).exists()


def test_push_to_hub_refuses_a_run_that_did_not_finish(finished_copy, tmp_path):
    record = json.loads((finished_copy / runs.RECORD_NAME).read_text(encoding="utf-8"))
    (finished_copy / runs.RECORD_NAME).write_text(json.dumps({**record, "stage": runs.MODEL_SAVED}), encoding="utf-8")
    completed = run_script(["push_to_hub.py", "--model_dir", str(finished_copy), "--repo_id", "me/tiny",
                            "--dry_run", str(tmp_path / "hub")], succeeds=False)
    assert completed.returncode == 2 and completed.stderr.strip().splitlines()[-1] == (
        f"push_to_hub.py: {finished_copy}: its run stopped at stage 'model saved' (see {runs.RECORD_NAME}); rerun "
        "the same command to finish it")
    assert not (tmp_path / "hub").exists()


def test_predict_refuses_pickled_weights_in_one_line(finished_copy):
    (finished_copy / "model.safetensors").unlink()
    (finished_copy / "pytorch_model.bin").write_bytes(b"a pickle: loading it could run any code")
    with pytest.raises(ValueError, match=r"holds pytorch_model.bin, a pickle, .* loads safetensors only") as error:
        predict.load_tagger(predict.PredictArguments(model_name_or_path=str(finished_copy), device="cpu"))
    assert isinstance(error.value, cli.UsageError)  # run_main ends predict.py with this one line
