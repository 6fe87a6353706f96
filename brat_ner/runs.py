"""Training runs: what train.py and the pretraining scripts do with their output folder. Take its lock, stop
when it holds a finished run, resume the newest checkpoint that is complete and readable, and refuse to resume
one under other arguments than it was trained with."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from brat_ner.cli import FORMER_NAMES
from brat_ner.files import OutputLock, atomic_write

logger = logging.getLogger(__name__)

ARGUMENTS_NAME = "run_arguments.json"
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")



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


def claim_output_dir(script: str, training_args, run_args: RunArguments, finished_marker: str) -> OutputLock:
    """Take ``training_args.output_dir`` for this run, before anything else, and return its lock (released at
    exit): raises ``ValueError`` (a one-line refusal) when another run holds it; exits (status 0) when it holds
    a finished run, recognised by its weights and ``finished_marker``, the file the script writes last; with
    ``--overwrite_output_dir``, clears what would make this run look resumable or finished."""
    output_dir = Path(training_args.output_dir)
    lock = OutputLock(output_dir)
    main_process = training_args.process_index == 0  # the other processes of a run follow the main one
    if main_process:
        lock.acquire()
    if run_args.overwrite_output_dir:
        if main_process:
            _clear_previous_run(output_dir, finished_marker)
    elif (output_dir / finished_marker).is_file() and _has_weights(output_dir):
        print(f"{script}: {output_dir} holds a finished run ({finished_marker} and the model are there); nothing to "
              "do. Give --overwrite_output_dir to train again, or another --output_dir")
        lock.release()
        sys.exit(0)
    return lock


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
            raise ValueError(f"--resume_from_checkpoint {checkpoint}: {problem}")
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
    weight_files = _weight_files(checkpoint)
    if not weight_files:
        return "no model.safetensors"
    for path in weight_files:
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as error:
            return f"{path.name} cannot be read ({error})"
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
    saved = {FORMER_NAMES.get(name, name): value
             for name, value in json.loads(saved_path.read_text(encoding="utf-8")).items()}
    changes = [f"{name} {saved.get(name, '(absent)')} -> {arguments.get(name, '(absent)')}"
               for name in sorted(saved.keys() | arguments.keys()) if saved.get(name) != arguments.get(name)]
    if not changes:
        return
    if allowed:
        logger.warning("Resuming %s with changed arguments: %s", checkpoint, "; ".join(changes))
        return
    raise ValueError(f"{checkpoint} was trained with other arguments ({'; '.join(changes)}); give the same ones, "
                     "--resume_with_changed_arguments to resume anyway, or --overwrite_output_dir to start afresh")

