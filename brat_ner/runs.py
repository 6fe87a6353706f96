"""Training runs: what train.py and the pretraining scripts do with their output folder. Take its lock, stop
when it holds a finished run, finish a run stopped after saving its model, resume the newest checkpoint that is
complete and readable, and refuse to resume or rerun one under other arguments than it was trained with.

A run is finished when everything it writes is written: its record (``run_record.json``), written last and
atomically, lists the files the folder then held and the size and sha256 of each weight file; a rerun checks
them all. train.py records its run twice: once its model is saved (stage ``model saved``: a rerun then finishes
the test scoring, reports and plots from the saved model without training again), and at the very end."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from brat_ner.cli import FORMER_NAMES, UsageError
from brat_ner.files import LOCK_NAME, OutputLock, atomic_write, give_umask_mode
from brat_ner.trust import pickled_weights_problem

logger = logging.getLogger(__name__)

ARGUMENTS_NAME = "run_arguments.json"
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
RECORD_NAME = "run_record.json"
MODEL_SAVED, FINISHED = "model saved", "finished"  # the stages a record names
TRAIN_AGAIN = "give --overwrite_output_dir to train again, or another --output_dir"
# Written by every run of this project before anything else in its folder (the lock, then the arguments) or at its
# end (the record): a folder holding one of them was taken by a run of this project.
RUN_MARKERS = (LOCK_NAME, ARGUMENTS_NAME, RECORD_NAME)


@dataclass
class RunArguments:
    """How train.py and pretrain_mlm.py treat an --output_dir that already holds a run."""

    _argument_group_name = "an --output_dir that holds a run (this project)"

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train afresh even when --output_dir holds a finished run or checkpoints (its "
                          "checkpoints and finished-run marker are deleted first)."},
    )
    resume_with_changed_arguments: bool = field(
        default=False,
        metadata={"help": "Resume a checkpoint although arguments that change training differ from those it "
                          "was trained with (listed in the message that refuses it otherwise)."},
    )


# Arguments that change where and how a run reports, not what it learns: a resumed run may change them.
RESUMABLE_CHANGES = {
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "resume_with_changed_arguments", "run_name",
    "report_to", "disable_tqdm", "use_cpu", "per_device_eval_batch_size", "eval_accumulation_steps",
    "time_budget_minutes",  # a resumed run starts a new budget
    "local_rank", "push_to_hub", "log_level", "log_level_replica", "project", "skip_memory_metrics",
}
RESUMABLE_PREFIXES = ("logging_", "save_", "hub_", "dataloader_", "ddp_", "trackio_")


def training_arguments(*argument_sets) -> dict:
    """The arguments of a run that change what it learns, as JSON values (dataclasses of the script's parser)."""
    merged = {}
    for arguments in argument_sets:
        merged.update(arguments.to_dict() if hasattr(arguments, "to_dict") else dataclasses.asdict(arguments))
    return {name: value for name, value in json.loads(json.dumps(merged, default=str)).items()
            if name not in RESUMABLE_CHANGES and not name.startswith(RESUMABLE_PREFIXES)}


def claim_output_dir(script: str, training_args, run_args: RunArguments, finished_marker: str,
                     arguments: dict | None = None, data_folders: dict[str, list[str]] | None = None) -> OutputLock:
    """Take ``training_args.output_dir`` for this run, before anything else, and return its lock (released at
    exit). Refuses (``UsageError``) a folder of the user's, with or without --overwrite_output_dir: one of
    ``data_folders`` (``{option: folders}``) or inside one, or one holding files that no run of this project
    wrote (``check_run_folder``). Exits (status 0) when the folder holds a finished run of these ``arguments`` (see
    ``training_arguments``); raises ``ValueError`` (a one-line refusal) when another run holds the folder, or when
    the run there was trained with other arguments, has weights other than those it recorded, or lost files it
    listed. A run stopped after saving its model is left for the script to finish (``finish_saved_model``).
    With ``--overwrite_output_dir``, clears what would make this run look resumable or finished."""
    output_dir = Path(training_args.output_dir)
    check_run_folder(output_dir, data_folders or {}, markers=(*RUN_MARKERS, finished_marker))
    lock = OutputLock(output_dir)
    main_process = training_args.process_index == 0  # the other processes of a run follow the main one
    if main_process:
        lock.acquire()
    if run_args.overwrite_output_dir:
        if main_process:
            _clear_previous_run(output_dir, finished_marker)
        return lock
    record = read_record(output_dir)
    # A run from before the records: finished when it holds the file its script wrote last, and its weights.
    if record is None and not ((output_dir / finished_marker).is_file() and _has_weights(output_dir)):
        return lock  # nothing trained to the end here: train afresh or resume a checkpoint
    problem = _weights_problem(output_dir, record)
    if problem:
        raise UsageError(f"{output_dir}: {problem}; {TRAIN_AGAIN}")
    changes = _argument_changes(output_dir / ARGUMENTS_NAME, arguments, only_common=True) if arguments else []
    if changes:
        raise UsageError(f"{output_dir} holds a run trained with other arguments ({'; '.join(changes)}); {TRAIN_AGAIN}")
    missing = missing_outputs(output_dir, record) if record else []
    if missing and set(missing) <= rewritable_outputs(record):
        logger.warning("%s: its finished run lost %s, written after its model was saved: writing them again from the "
                       "saved model, without training again", output_dir, ", ".join(missing))
        return lock
    if missing:
        raise UsageError(f"{output_dir}: {RECORD_NAME} lists files that are missing ({', '.join(missing)}); "
                         f"{TRAIN_AGAIN}")
    if record is not None and record["stage"] == MODEL_SAVED:
        logger.warning("%s holds a run stopped after saving its model: finishing it from the saved model, without "
                       "training again", output_dir)
        return lock
    found = f"{RECORD_NAME} and the files it lists" if record else f"{finished_marker} and the model"
    print(f"{script}: {output_dir} holds a finished run ({found} are there); nothing to do. Give "
          "--overwrite_output_dir to train again, or another --output_dir")
    lock.release()
    sys.exit(0)


def check_run_folder(output_dir: Path, data_folders: dict[str, list[str]], markers: tuple[str, ...],
                     option: str = "--output_dir") -> None:
    """Refuse (``UsageError``, one line) an output folder whose files a run would write over or beside the user's:
    a folder of ``data_folders`` (``{option: folders}``) or one inside it, a brat corpus (``.ann`` files), or an
    existing folder holding files but none of ``markers``, the files that a run of this project writes first or
    last. So a folder that only this project's runs wrote (an interrupted one included) is taken, and a folder of
    the user's never is, whatever its files are called: a user's ``config.json`` would be replaced by the model's."""
    resolved = output_dir.resolve()
    for data_option, folders in data_folders.items():
        for folder in map(Path, folders):
            if resolved == folder.resolve() or folder.resolve() in resolved.parents:
                where = "is" if resolved == folder.resolve() else "is inside"
                raise UsageError(f"{option} {output_dir} {where} the folder of {data_option} ({folder}): a run's files "
                                 "would join the documents; give a folder outside the data")
    if not output_dir.is_dir():
        return
    corpus = [path for path in (output_dir, *(output_dir / split for split in ("train", "validation", "dev", "test")))
              if path.is_dir() and any(path.glob("*.ann"))]
    if corpus:
        raise UsageError(f"{option} {output_dir} holds brat documents (.ann files in {corpus[0]}): a run's files "
                         "would join them; give a new or empty folder")
    # Hidden files (a killed run's temporary ones, a desktop's) are neither a run's outputs nor replaced by one.
    files = sorted(path.name for path in output_dir.iterdir() if path.is_file() and not path.name.startswith("."))
    if files and not any((output_dir / marker).exists() for marker in markers):
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        files_wrote = f"{len(files)} files" if len(files) > 1 else "a file"
        raise UsageError(f"{option} {output_dir} holds {files_wrote} that no run of this project wrote ({shown}); "
                         "a run would write over or beside them, --overwrite_output_dir included: give a new or empty "
                         "folder")


def record_run(output_dir: str | Path, script: str, stage: str) -> None:
    """Write ``output_dir``'s record of this run at ``stage`` (``MODEL_SAVED`` or ``FINISHED``), after everything
    that stage writes: the files the folder holds and the size and sha256 of each weight file, which is first
    given the mode the umask means (safetensors writes it private)."""
    output_dir = Path(output_dir)
    give_weights_umask_mode(output_dir)
    saved = read_record(output_dir) if stage == FINISHED else None
    outputs = sorted(path.name for path in output_dir.iterdir()
                     if path.is_file() and not path.name.startswith(".") and path.name not in (LOCK_NAME, RECORD_NAME))
    weights = {path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)} for path in _weight_files(output_dir)}
    record = {"script": script, "stage": stage, "weights": weights, "outputs": outputs}
    # What the run held once its model was saved: the rest can be written again from that model.
    model_saved_outputs = saved and (saved["outputs"] if saved["stage"] == MODEL_SAVED
                                     else saved.get("model_saved_outputs"))
    if model_saved_outputs is not None:
        record["model_saved_outputs"] = model_saved_outputs
    atomic_write(output_dir / RECORD_NAME, json.dumps(record, indent=2, ensure_ascii=False))


def read_record(output_dir: Path) -> dict | None:
    """``output_dir``'s run record, None if it has none."""
    path = output_dir / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not {"stage", "weights", "outputs"} <= record.keys():
        raise UsageError(f"{path} is not a run record; {TRAIN_AGAIN}")
    return record


def missing_outputs(output_dir: Path, record: dict) -> list[str]:
    """The files ``record`` lists that ``output_dir`` lacks."""
    return [name for name in record["outputs"] if not (output_dir / name).is_file()]


def rewritable_outputs(record: dict) -> set[str]:
    """The files of a finished run that it wrote after its model was saved (reports, plots, the corpus summary):
    a rerun writes them again from the saved model. None for a record from before this was recorded."""
    if record["stage"] != FINISHED or "model_saved_outputs" not in record:
        return set()
    return set(record["outputs"]) - set(record["model_saved_outputs"])


def unfinished_run_problem(output_dir: Path) -> str | None:
    """Why the run in ``output_dir`` is not finished as its record says (stopped after saving its model, weights
    other than those recorded, listed files missing), or None; a folder without a record is not judged here."""
    record = read_record(output_dir)
    if record is None:
        return None
    if record["stage"] != FINISHED:
        return f"its run stopped at stage '{record['stage']}' (see {RECORD_NAME}); rerun the same command to finish it"
    missing = missing_outputs(output_dir, record)
    if missing:
        return f"{RECORD_NAME} lists files that are missing ({', '.join(missing)})"
    return _weights_problem(output_dir, record)


def record_saved_model(trainer, script: str) -> None:
    """After ``trainer.save_model()`` and ``save_metrics("train", ...)``: save the training state (its log is what
    the plots draw) and record the run at stage ``MODEL_SAVED``, from which a rerun can finish it."""
    trainer.save_state()
    if trainer.is_world_process_zero():
        record_run(trainer.args.output_dir, script, MODEL_SAVED)


def finish_saved_model(trainer) -> dict | None:
    """For the rerun of a run stopped after saving its model (``claim_output_dir`` checked its record and
    weights): load the saved weights and training state into ``trainer`` and return the training figures saved
    with them (``train_results.json``), so that only what follows the save is done again; the same for a
    finished run that lost files written after the save (a deleted plot). None for any other folder: the model is
    still to be trained."""
    output_dir = Path(trainer.args.output_dir)
    record = read_record(output_dir)
    if record is None or (record["stage"] != MODEL_SAVED and not missing_outputs(output_dir, record)):
        return None
    trainer._load_from_checkpoint(str(output_dir))  # as Trainer loads the best checkpoint: any layout, any device
    trainer.state = TrainerState.load_from_json(str(output_dir / "trainer_state.json"))
    return json.loads((output_dir / "train_results.json").read_text(encoding="utf-8"))


class ReadableCheckpointWeights(TrainerCallback):
    """Gives each checkpoint's weights the mode the umask means, once Trainer has saved it (safetensors writes
    them private: a serving process or another user could not read them)."""

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            give_weights_umask_mode(checkpoint)


def give_weights_umask_mode(folder: Path) -> None:
    for path in _weight_files(folder):
        give_umask_mode(path)


def model_weights_problem(folder: Path) -> str | None:
    """Why the weights of the model folder ``folder`` cannot be loaded (missing, truncated: the cheap check of
    their header against their size), or None."""
    weight_files = _weight_files(folder)
    if not weight_files:
        return "no model.safetensors"
    for path in weight_files:
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as error:
            return f"{path.name} cannot be read ({error})"
    return None


def check_model_weights(model_name_or_path: str, option: str = "--model_name_or_path") -> None:
    """Refuse (``UsageError``, one line naming the file) a model folder whose weights cannot be loaded, before a
    library ends in a ``SafetensorError`` traceback, or one with only pickled weights (``pytorch_model.bin``:
    ``trust.pickled_weights_problem``, the rule of every command); a Hub id is left to the loader."""
    folder = Path(model_name_or_path)
    problem = pickled_weights_problem(folder)
    if problem is None and _weight_files(folder):
        problem = model_weights_problem(folder)
    if problem:
        raise UsageError(f"{option} {folder}: {problem}")


def check_model_folder(path: str, option: str) -> None:
    """Refuse (``UsageError``, one line) a local ``path`` given as a model that is none: missing, without a
    ``config.json``, or with weights that cannot or may not be loaded (``check_model_weights``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: no such folder")
    if not (folder / "config.json").is_file():
        raise UsageError(f"{option} {path}: not a model folder (no config.json there)")
    check_model_weights(path, option)


def _weights_problem(output_dir: Path, record: dict | None) -> str | None:
    """Why the weights of a trained run differ from those its record vouches for (a run without a record: why
    they cannot be read), or None."""
    if record is None:
        return model_weights_problem(output_dir)
    for name, recorded in record["weights"].items():
        path = output_dir / name
        if not path.is_file():
            return f"{name}, recorded in {RECORD_NAME}, is missing"
        if path.stat().st_size != recorded["bytes"]:
            return f"{name} has {path.stat().st_size} bytes where {RECORD_NAME} recorded {recorded['bytes']}"
        if _sha256(path) != recorded["sha256"]:
            return f"{name} is not the file {RECORD_NAME} recorded (its sha256 differs)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_checkpoint(training_args, run_args: RunArguments, arguments: dict) -> str | None:
    """The checkpoint to resume from (None: start afresh): an explicit --resume_from_checkpoint, which must be
    usable, else the newest complete checkpoint in --output_dir, so that rerunning an interrupted command goes
    on where it stopped. Refuses (``ValueError``) a checkpoint trained with other ``arguments`` (see
    ``training_arguments``), then records ``arguments`` as this run's."""
    output_dir = Path(training_args.output_dir)
    if training_args.resume_from_checkpoint:
        checkpoint = Path(training_args.resume_from_checkpoint)
        problem = checkpoint_problem(checkpoint, training_args.save_only_model)
        if problem:
            raise UsageError(f"--resume_from_checkpoint {checkpoint}: {problem}")
    elif run_args.overwrite_output_dir:
        checkpoint = None
    else:
        checkpoint = newest_complete_checkpoint(output_dir, training_args.save_only_model)
    if checkpoint is not None:
        _check_same_arguments(checkpoint, arguments, run_args.resume_with_changed_arguments)
        logger.warning("Resuming from %s; give --overwrite_output_dir or a new --output_dir to start afresh",
                       checkpoint)
    if training_args.process_index == 0:
        atomic_write(output_dir / ARGUMENTS_NAME, json.dumps(arguments, indent=2, ensure_ascii=False))
    return str(checkpoint) if checkpoint is not None else None


def _clear_previous_run(output_dir: Path, finished_marker: str) -> None:
    """Delete what would make this fresh run look resumable or finished if it were interrupted."""
    checkpoints = _checkpoints(output_dir)
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint)
    (output_dir / finished_marker).unlink(missing_ok=True)
    (output_dir / RECORD_NAME).unlink(missing_ok=True)
    if checkpoints:
        logger.warning("--overwrite_output_dir: deleted %d checkpoints of the previous run in %s", len(checkpoints),
                       output_dir)


def _checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-<step>`` folders, newest (highest step) first."""
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir()
             if path.is_dir() and (match := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found, reverse=True)]


def newest_complete_checkpoint(folder: Path, save_only_model: bool = False) -> Path | None:
    """The newest checkpoint of ``folder`` that Trainer can resume from; each newer one that it cannot (a
    save that was killed, a truncated file) is skipped with a warning that names it and says why."""
    for checkpoint in _checkpoints(folder):
        problem = checkpoint_problem(checkpoint, save_only_model)
        if problem is None:
            return checkpoint
        logger.warning("Skipping %s: %s", checkpoint, problem)
    return None


def checkpoint_problem(checkpoint: Path, save_only_model: bool = False) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None. Trainer writes the weights, then the optimizer and
    scheduler states, the random states and, last, trainer_state.json; each is checked the cheap way that still
    catches a truncated file (safetensors checks that its header covers the file; torch.save files are zip
    archives, whose directory is at their very end)."""
    if not checkpoint.is_dir():
        return "no such folder"
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (its save was interrupted)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json does not parse"
    problem = model_weights_problem(checkpoint)
    if problem:
        return problem
    for name in () if save_only_model else ("optimizer.pt", "scheduler.pt"):
        if not (checkpoint / name).is_file():
            return f"no {name}"
        if not zipfile.is_zipfile(checkpoint / name):
            return f"{name} is truncated or corrupt"
    return None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                                                     .values()))]
    return [folder / "model.safetensors"] if (folder / "model.safetensors").exists() else []


def _has_weights(folder: Path) -> bool:
    return any(path.is_file() for path in _weight_files(folder))


def _check_same_arguments(checkpoint: Path, arguments: dict, allowed: bool) -> None:
    """Refuse to resume ``checkpoint`` under other arguments than those saved by the run that wrote it."""
    saved_path = checkpoint.parent / ARGUMENTS_NAME
    if not saved_path.is_file():
        logger.warning("%s has no %s: cannot check that %s was trained with these arguments", checkpoint.parent,
                       ARGUMENTS_NAME, checkpoint.name)
        return
    changes = _argument_changes(saved_path, arguments)
    if not changes:
        return
    if allowed:
        logger.warning("Resuming %s with changed arguments: %s", checkpoint, "; ".join(changes))
        return
    raise UsageError(f"{checkpoint} was trained with other arguments ({'; '.join(changes)}); give the same ones, "
                     "--resume_with_changed_arguments to resume anyway, or --overwrite_output_dir to start afresh")


def _argument_changes(saved_path: Path, arguments: dict, only_common: bool = False) -> list[str]:
    """``name saved -> given`` for each argument that differs from those saved in ``saved_path`` (none when there
    is no such file). ``only_common``: only arguments both know, so that a run finished before an option existed
    is not taken for one trained otherwise."""
    if not saved_path.is_file():
        return []
    saved = {FORMER_NAMES.get(name, name): value
             for name, value in json.loads(saved_path.read_text(encoding="utf-8")).items()}
    names = saved.keys() & arguments.keys() if only_common else saved.keys() | arguments.keys()
    return [f"{name} {saved.get(name, '(absent)')} -> {arguments.get(name, '(absent)')}"
            for name in sorted(names) if saved.get(name) != arguments.get(name)]
