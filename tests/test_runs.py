"""brat_ner/runs.py and brat_ner/files.py: one run per output folder (locks, dead owners), resumption from the
last sound checkpoint, finished runs kept, and files replaced whole or not at all (atomic_write)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brat_ner import cli, files, runs
from conftest import REPO, SCRIPT_ENVIRONMENT, run_script, small_training

# ----- atomic writes -----


def test_atomic_write_replaces_the_whole_file_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    files.atomic_write(target, "新的\r\n")
    assert target.read_bytes() == "新的\r\n".encode()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # a failure at the last moment leaves the old file whole
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, "never")
    assert target.read_bytes() == "新的\r\n".encode() and os.listdir(tmp_path) == ["report.json"]


# ----- training: checkpoints that survive faults, one run per folder -----


def reference_arguments(output_dir):
    """A run whose final weights are its last epoch's (not the best checkpoint's), all checkpoints kept. One
    thread: the sums of a step are then added in the same order in every run, so a resumed run can end with the
    very weights of an uninterrupted one (by default the threads follow the idle cores, which differ between a
    run started beside another and one alone)."""
    return small_training(output_dir, "--load_best_model_at_end", "false", "--save_total_limit", "3",
                          "--num_threads", "1")


@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory):
    """Two identical train.py commands started together on one --output_dir: (folder, the two processes)."""
    output_dir = tmp_path_factory.mktemp("concurrent") / "model"
    processes = [subprocess.Popen([sys.executable, *reference_arguments(output_dir)], cwd=REPO, env=SCRIPT_ENVIRONMENT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    return output_dir, [(process.pid, process.returncode, *output) for process, output in zip(processes, outputs)]


def test_a_second_run_on_a_folder_in_use_stops_with_the_owners_name(concurrent_runs):
    output_dir, runs = concurrent_runs
    finished = [run for run in runs if run[1] == 0]
    stopped = [run for run in runs if run[1] != 0]
    assert len(finished) == 1 and len(stopped) == 1, [run[3][-2000:] for run in runs]
    stderr = stopped[0][3]
    assert f"train.py: {output_dir} is in use by another run (process {finished[0][0]} on " in stderr, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("train.py: ")
    assert (output_dir / "test_report.json").is_file() and not (output_dir / files.LOCK_NAME).exists()


def test_a_finished_run_is_not_trained_again(concurrent_runs):
    output_dir, _ = concurrent_runs
    weights = output_dir / "model.safetensors"
    before = weights.read_bytes(), weights.stat().st_mtime_ns
    completed = run_script(reference_arguments(output_dir))
    assert f"train.py: {output_dir} holds a finished run" in completed.stdout
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == before
    assert not (output_dir / files.LOCK_NAME).exists()


def copy_checkpoints(source: Path, destination: Path) -> None:
    """What a run killed before its final save leaves: its checkpoints and recorded arguments."""
    destination.mkdir()
    for checkpoint in source.glob("checkpoint-*"):
        shutil.copytree(checkpoint, destination / checkpoint.name)
    shutil.copy(source / runs.ARGUMENTS_NAME, destination)


def test_a_killed_checkpoint_save_is_skipped_and_the_rerun_ends_with_the_same_weights(concurrent_runs, tmp_path):
    reference, _ = concurrent_runs
    steps = sorted(int(path.name.split("-")[1]) for path in reference.glob("checkpoint-*"))
    assert len(steps) == 3
    interrupted = tmp_path / "interrupted"
    copy_checkpoints(reference, interrupted)
    # Killed while Trainer._save_checkpoint wrote the scheduler state: weights and optimizer state are there,
    # the scheduler file is cut short, the random states and trainer_state.json (written last) never came.
    last = interrupted / f"checkpoint-{steps[-1]}"
    (last / "trainer_state.json").unlink()
    (last / "rng_state.pth").unlink()
    os.truncate(last / "scheduler.pt", 100)
    # And the one before lost the end of its weights (a crash before the file reached the disk).
    middle = interrupted / f"checkpoint-{steps[1]}"
    os.truncate(middle / "model.safetensors", (middle / "model.safetensors").stat().st_size // 2)

    completed = run_script(reference_arguments(interrupted))
    assert f"Skipping {last}: no trainer_state.json (its save was interrupted)" in completed.stderr
    assert f"Skipping {middle}: model.safetensors cannot be read" in completed.stderr
    assert f"Resuming from {interrupted / f'checkpoint-{steps[0]}'}" in completed.stderr
    expected, resumed = load_file(reference / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def test_resuming_under_other_arguments_is_refused_and_names_them(concurrent_runs, tmp_path):
    reference, _ = concurrent_runs
    interrupted = tmp_path / "interrupted"
    copy_checkpoints(reference, interrupted)
    before = {path: path.read_bytes() for path in interrupted.rglob("*") if path.is_file()}
    arguments = reference_arguments(interrupted)
    arguments[arguments.index("--learning_rate") + 1] = "2e-3"
    completed = run_script([*arguments, "--lstm_layers", "2"], succeeds=False)
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith(f"train.py: {interrupted / 'checkpoint-'}")
    assert "was trained with other arguments" in message
    assert "learning_rate 0.001 -> 0.002" in message and "lstm_layers 1 -> 2" in message
    assert {path: path.read_bytes() for path in interrupted.rglob("*") if path.is_file()} == before


def test_overwrite_output_dir_clears_what_would_resume_or_look_finished(concurrent_runs, tmp_path):
    import train

    reference, _ = concurrent_runs
    previous = tmp_path / "previous"
    copy_checkpoints(reference, previous)
    shutil.copy(reference / "model.safetensors", previous)
    shutil.copy(reference / "test_report.json", previous)
    training_args = train.NerTrainingArguments(output_dir=str(previous), use_cpu=True)
    lock = runs.claim_output_dir("train.py", training_args, runs.RunArguments(overwrite_output_dir=True),
                                       finished_marker="test_report.json")
    try:
        assert not list(previous.glob("checkpoint-*")) and not (previous / "test_report.json").exists()
        assert (previous / "model.safetensors").is_file()  # replaced when the new run saves, not before
        assert runs.resume_checkpoint(training_args, runs.RunArguments(overwrite_output_dir=True),
                                            {"learning_rate": 1.0}) is None
    finally:
        lock.release()
    assert not (previous / files.LOCK_NAME).exists()


def test_checkpoint_problems_are_found_the_cheap_way(concurrent_runs, tmp_path):
    reference, _ = concurrent_runs
    source = min(reference.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert runs.checkpoint_problem(source) is None
    damages = {
        "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
        "trainer_state.json does not parse": lambda c: os.truncate(c / "trainer_state.json", 10),
        "no model.safetensors": lambda c: (c / "model.safetensors").unlink(),
        "model.safetensors cannot be read": lambda c: os.truncate(c / "model.safetensors", 7),
        "no optimizer.pt": lambda c: (c / "optimizer.pt").unlink(),
        "optimizer.pt is truncated or corrupt": lambda c: os.truncate(c / "optimizer.pt", 1000),
        "scheduler.pt is truncated or corrupt": lambda c: (c / "scheduler.pt").write_bytes(b""),
    }
    for expected, damage in damages.items():
        checkpoint = tmp_path / expected.replace(" ", "_") / "checkpoint-1"
        shutil.copytree(source, checkpoint)
        damage(checkpoint)
        assert runs.checkpoint_problem(checkpoint).startswith(expected)
        assert runs.newest_complete_checkpoint(checkpoint.parent) is None


def test_a_lock_left_by_a_dead_process_is_taken_over_and_a_live_one_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    lock_path = folder / files.LOCK_NAME
    host = socket.gethostname()
    lock_path.write_text(json.dumps({"pid": exited_process_id(), "host": host}))  # as a killed run leaves it
    lock = files.OutputLock(folder)
    lock.acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path.exists() and folder.is_dir()  # a folder it did not create stays

    lock_path.write_text(json.dumps({"pid": os.getppid(), "host": host, "command": "train.py ..."}))
    with pytest.raises(ValueError, match=rf"is in use by another run \(process {os.getppid()} on {host}"):
        files.OutputLock(folder).acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getppid()


def exited_process_id() -> int:
    """The pid of a process that has ended (and been reaped), so no process has it for now."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# ----- the output folder: never a folder of the user's -----


def claim_for_train(output_dir: Path, overwrite: bool = False, data_dir: str = "data/sample"):
    """train.py's claim of ``output_dir``, in this process, with the sample corpus as --data_dir."""
    import train

    training_args = train.NerTrainingArguments(output_dir=str(output_dir), use_cpu=True)
    return runs.claim_output_dir("train.py", training_args, runs.RunArguments(overwrite_output_dir=overwrite),
                                 finished_marker="test_report.json", data_folders={"--data_dir": [data_dir]})


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_holding_the_users_files_is_refused_with_or_without_overwrite(tmp_path, overwrite):
    users = tmp_path / "thesis"
    users.mkdir()
    (users / "config.json").write_text('{"mine": true}', encoding="utf-8")
    (users / "thesis.docx").write_bytes(b"chapter one")
    with pytest.raises(cli.UsageError, match=rf"--output_dir {users} holds 2 files that no run of this project wrote "
                                             r"\(config.json, thesis.docx\)"):
        claim_for_train(users, overwrite)
    assert sorted(path.name for path in users.iterdir()) == ["config.json", "thesis.docx"]
    assert (users / "config.json").read_text(encoding="utf-8") == '{"mine": true}'


@pytest.mark.parametrize("inside", ["", "model"])
def test_the_data_folder_or_a_folder_inside_it_is_refused(tmp_path, inside):
    corpus = shutil.copytree(REPO / "data" / "sample", tmp_path / "corpus")
    before = sorted(path.name for path in corpus.iterdir())
    output_dir = corpus / inside if inside else corpus
    with pytest.raises(cli.UsageError, match="the folder of --data_dir"):
        claim_for_train(output_dir, overwrite=True, data_dir=str(corpus))
    assert sorted(path.name for path in corpus.iterdir()) == before


def test_a_brat_corpus_is_refused_as_an_output_folder(tmp_path):
    other_corpus = shutil.copytree(REPO / "data" / "sample", tmp_path / "other" / "train")
    with pytest.raises(cli.UsageError, match=r"holds brat documents \(\.ann files in "):
        claim_for_train(other_corpus.parent, overwrite=True)


def test_a_folder_only_this_projects_runs_wrote_is_taken(tmp_path):
    interrupted = tmp_path / "interrupted"  # killed before its first checkpoint: its lock and arguments
    interrupted.mkdir()
    (interrupted / files.LOCK_NAME).write_text(json.dumps({"pid": exited_process_id(), "host": socket.gethostname()}))
    (interrupted / runs.ARGUMENTS_NAME).write_text("{}", encoding="utf-8")
    (interrupted / ".model.safetensors.abcd1234.tmp").write_bytes(b"half")
    claim_for_train(interrupted).release()
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_for_train(empty).release()


def test_train_py_refuses_its_data_folder_in_one_line_and_adds_nothing(tmp_path):
    corpus = shutil.copytree(REPO / "data" / "sample", tmp_path / "corpus")
    before = sorted(path.name for path in corpus.iterdir())
    arguments = small_training(corpus)
    arguments[arguments.index("data/sample")] = str(corpus)
    completed = run_script(arguments, succeeds=False)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        f"train.py: --output_dir {corpus} is the folder of --data_dir ({corpus}): a run's files would join the "
        "documents; give a folder outside the data")
    assert sorted(path.name for path in corpus.iterdir()) == before
