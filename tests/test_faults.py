"""Faults and a user's files: predict.py never writes over what the user wrote, training survives a killed
checkpoint save and runs one at a time per folder, model code runs only when trusted, pre-annotation output."""

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

import predict
from brat_ner import cli, files, runs, trust
from conftest import REPO, TINY_BERT, run_predict, run_script, small_training
from dataset_script.brat import read_annotation_conf, read_document

SAMPLE = REPO / "data" / "sample"
ENVIRONMENT = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def refused(monkeypatch, *arguments) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_predict(monkeypatch, *arguments, model_loads=False)
    assert isinstance(exit_info.value.code, str) and exit_info.value.code.startswith("predict.py: ")
    return exit_info.value.code


def run_expecting_failure(arguments) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, *arguments], cwd=REPO, env=ENVIRONMENT, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    return completed


# ----- predict.py: outputs never destroy inputs -----


def test_predict_refuses_to_write_into_its_input_gold_or_corpus_folder(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    texts = tmp_path / "texts"
    texts.mkdir()
    for path in corpus.glob("*.txt"):
        shutil.copy(path, texts / path.name)
    before = snapshot(corpus), snapshot(texts)
    model = ("--model_name_or_path", str(model_dir))
    assert "is the folder of --input_dir" in refused(monkeypatch, *model, "--input_dir", str(corpus),
                                                     "--output_dir", str(corpus))
    # The same folder spelt another way, and a gold folder: predictions would replace the gold .ann files.
    assert "is the folder of --gold_dir" in refused(monkeypatch, *model, "--input_dir", str(texts), "--gold_dir",
                                                    str(corpus), "--output_dir", str(corpus / ".." / "corpus"))
    assert "is the folder of --data_dir" in refused(monkeypatch, *model, "--data_dir", str(corpus),
                                                    "--output_dir", str(corpus))
    assert (snapshot(corpus), snapshot(texts)) == before


def test_predict_replaces_annotations_only_when_asked_and_counts_them(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    output_dir = tmp_path / "predicted"
    output_dir.mkdir()
    (output_dir / "01.ann").write_text("T1\tDisease 0 2\t2型\n", encoding="utf-8")  # corrected by hand
    (output_dir / "99.ann").write_text("", encoding="utf-8")  # from another run: not among the inputs
    before = snapshot(output_dir)
    arguments = ("--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir", str(output_dir))
    message = refused(monkeypatch, *arguments)
    assert "already holds 2 .ann files" in message and "--overwrite" in message
    assert snapshot(output_dir) == before

    run_predict(monkeypatch, *arguments, "--overwrite")
    printed = capsys.readouterr().out
    assert "Wrote 8 .ann files" in printed and "replaced 1 files" in printed
    assert "1 other .ann files there (99.ann, ...) were left as they were" in printed
    assert (output_dir / "01.ann").read_bytes() != before["01.ann"]
    assert (output_dir / "99.ann").read_bytes() == before["99.ann"]
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith(".")]  # no temporary left


def test_predict_refuses_an_unwritable_output_before_loading_the_model(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    arguments = ("--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE))
    under_a_file = tmp_path / "notes.txt" / "predicted"
    under_a_file.parent.write_text("a file, not a folder", encoding="utf-8")
    assert f"--output_dir {under_a_file}: cannot write there" in refused(monkeypatch, *arguments, "--output_dir",
                                                                          str(under_a_file))
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not os.access(read_only, os.W_OK):  # root writes there all the same: the case above is root's
            assert "cannot write there" in refused(monkeypatch, *arguments, "--output_dir", str(read_only))
    finally:
        read_only.chmod(0o700)


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


# ----- predict.py: model code only when trusted -----


def test_model_code_runs_only_when_it_is_the_projects_own_or_trusted(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    assert trust.trust_remote_code(str(model_dir), asked=False)  # written by train.py: byte-identical code
    changed = tmp_path / "changed"
    shutil.copytree(model_dir, changed, ignore=shutil.ignore_patterns("checkpoint-*"))
    with open(changed / trust.MODELING_FILE, "a", encoding="utf-8") as file:
        file.write("\n# anything could run here\n")
    arguments = ("--model_name_or_path", str(changed), "--input_file", str(SAMPLE / "01.txt"))
    message = refused(monkeypatch, *arguments)
    assert f"holds a {trust.MODELING_FILE} that differs from this project's" in message
    assert "Add --trust_remote_code if you trust that code" in message
    run_predict(monkeypatch, *arguments, "--trust_remote_code")
    assert isinstance(json.loads(capsys.readouterr().out), list)

    extra = tmp_path / "extra"
    shutil.copytree(model_dir, extra, ignore=shutil.ignore_patterns("checkpoint-*"))
    (extra / "helpers.py").write_text("import os\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"holds Python code of its own \(helpers.py\)"):
        trust.trust_remote_code(str(extra), asked=False)
    with pytest.raises(ValueError, match="is not a local folder"):
        trust.trust_remote_code("someone/chinese-medical-ner", asked=False)


# ----- predict.py --preannotate -----


def test_preannotation_folder_opens_in_brat_with_confidences_and_a_ranking(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    output_dir = tmp_path / "to_correct"
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir",
                str(output_dir), "--preannotate")
    tagger = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu"))
    documents = predict.read_texts(SAMPLE)
    predictions = dict(zip(documents, predict.tag_texts(tagger, list(documents.values()), batch_size=4)))
    assert sum(map(len, predictions.values())) > 0

    for document_id, entities in predictions.items():
        txt_path, ann_path = output_dir / f"{document_id}.txt", output_dir / f"{document_id}.ann"
        assert txt_path.read_bytes() == (SAMPLE / f"{document_id}.txt").read_bytes()
        document = read_document(txt_path, ann_path, strict=True)
        assert [(e.type, e.start, e.end) for e in document.entities] == \
               [(e["entity_group"], e["start"], e["end"]) for e in entities]
        assert document.skipped_lines["note"] == len(entities)
        notes = [line.split("\t") for line in ann_path.read_text(encoding="utf-8").splitlines() if line[0] == "#"]
        assert notes == [[f"#{n}", f"AnnotatorNotes T{n}", f"confidence {e['score']:.2f}"]
                         for n, e in enumerate(entities, start=1)]

    model_types = sorted({label[2:] for label in tagger.model.config.id2label.values() if label != "O"})
    assert list(read_annotation_conf(output_dir / "annotation.conf").entity_types) == model_types
    header, *rows = [line.split("\t") for line in (output_dir / "uncertainty.tsv").read_text().splitlines()]
    assert header == ["rank", "document_id", "min_confidence", "mean_confidence", "entities"]
    assert [row[1] for row in rows] == sorted(predictions, key=lambda d: (
        min(e["score"] for e in predictions[d]), sum(e["score"] for e in predictions[d]) / len(predictions[d]), d))
    minima = [float(row[2]) for row in rows]
    assert minima == sorted(minima) and [int(row[4]) for row in rows] == [len(predictions[row[1]]) for row in rows]


def test_preannotation_keeps_an_existing_annotation_conf_unless_overwriting(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    output_dir = tmp_path / "to_correct"
    output_dir.mkdir()
    own_conf = "[entities]\nDisease\n\n[relations]\n\n[events]\n\n[attributes]\n"
    (output_dir / "annotation.conf").write_text(own_conf, encoding="utf-8")
    arguments = ("--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir", str(output_dir),
                 "--preannotate")
    run_predict(monkeypatch, *arguments)
    assert (output_dir / "annotation.conf").read_text(encoding="utf-8") == own_conf
    run_predict(monkeypatch, *arguments, "--overwrite")
    assert len(read_annotation_conf(output_dir / "annotation.conf").entity_types) > 1


def test_documents_without_entities_rank_first_for_annotators():
    table = predict.uncertainty_table(["sure", "empty", "unsure"], [[{"score": 0.9}], [],
                                                                    [{"score": 0.5}, {"score": 0.99}]])
    assert table.splitlines()[1:] == ["1\tempty\t\t\t0", "2\tunsure\t0.5000\t0.7450\t2",
                                      "3\tsure\t0.9000\t0.9000\t1"]


# ----- training: checkpoints that survive faults, one run per folder -----


def reference_arguments(output_dir):
    """A run whose final weights are its last epoch's (not the best checkpoint's), all checkpoints kept."""
    return small_training(output_dir, "--load_best_model_at_end", "false", "--save_total_limit", "3")


@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory):
    """Two identical train.py commands started together on one --output_dir: (folder, the two processes)."""
    output_dir = tmp_path_factory.mktemp("concurrent") / "model"
    processes = [subprocess.Popen([sys.executable, *reference_arguments(output_dir)], cwd=REPO, env=ENVIRONMENT,
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
    completed = run_expecting_failure([*arguments, "--lstm_layers", "2"])
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith(f"train.py: {interrupted / 'checkpoint-'}") and "was trained with other arguments" in message
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


# ----- one-line errors -----


def test_training_scripts_end_bad_input_with_one_line(tmp_path):
    corpus = tmp_path / "three"
    corpus.mkdir()
    for name in ("01", "02", "03"):  # too few documents for the hash split to fill validation and test
        for suffix in (".txt", ".ann"):
            shutil.copy(SAMPLE / f"{name}{suffix}", corpus / f"{name}{suffix}")
    arguments = small_training(tmp_path / "model")
    arguments[arguments.index("data/sample")] = str(corpus)
    message = run_expecting_failure(arguments).stderr.strip().splitlines()[-1]
    assert message.startswith(f"train.py: {corpus}: the ") and "no text" in message
    assert not (tmp_path / "model").exists()  # the folder it created for its lock is gone with the lock

    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    with open(broken / "02.ann", "a", encoding="utf-8") as file:
        file.write("T99 Disease\n")
    completed = run_expecting_failure(
        ["pretrain_mlm.py", "--data_dir", str(broken), "--encoder_config", str(TINY_BERT / "config.json"),
         "--tokenizer_name", str(TINY_BERT), "--output_dir", str(tmp_path / "mlm"), "--window_chars", "62",
         "--use_cpu", "true"])
    assert completed.stderr.strip().splitlines()[-1].startswith(f"pretrain_mlm.py: {broken / '02.ann'}:")


def test_an_argument_that_training_arguments_refuse_is_an_argparse_error(monkeypatch, capsys):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py", "--save_strategy", "no", "--load_best_model_at_end", "true"])
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_arguments(train.argument_parser())
    assert exit_info.value.code == 2 and "train.py: error: " in capsys.readouterr().err
