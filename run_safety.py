"""What keeps a user's files and runs safe: the one place for writing files, guarding output folders,
trusting model code and resuming training.

* :func:`atomic_write`: every file the project writes is written to a temporary file beside it and renamed
  over the target, so an interrupted run never leaves half a file.
* :class:`OutputLock`: one run per output folder; a lock file names its owner (pid, host), and a lock whose
  owner died is taken over.
* :func:`claim_output_dir` and :func:`resume_checkpoint`: what train.py and pretrain_mlm.py do with their
  output folder: take its lock, stop when it holds a finished run, resume the newest checkpoint that is
  complete and readable, and refuse to resume one under other arguments than it was trained with.
* :func:`trust_remote_code`: a model folder's Python code runs only when the user asked for it, or when it is
  this project's own modelling file.
* :func:`run_main`: bad input and refused arguments end a script with one line naming the problem.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from dataset_script.brat import BratFormatError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent
MODELING_FILE = "modeling_bert_bilstm_crf.py"
LOCK_NAME = "run.lock"
ARGUMENTS_NAME = "run_arguments.json"
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


# ----- files -----


def atomic_write(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8, nothing translated) to ``path`` all at once: into a hidden temporary
    file in the same folder, then renamed over ``path``. A crash leaves the old file or the new one, never half
    of one; the hidden leftover of a crash is no document to brat or to the corpus reader."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it an ordinary file's mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_folder(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and write a file there, so an output that cannot be written fails now, not
    after the work (``os.access`` would not do: it says yes to root on a read-only folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{option} {folder}: cannot write there ({error.strerror or error})") from None


# ----- remote code -----


def trust_remote_code(model_name_or_path: str, asked: bool) -> bool:
    """Whether loading ``model_name_or_path`` may run the Python code it comes with: when the user asked
    (``--trust_remote_code``), or when it is a local folder whose only code is this project's own modelling
    file, byte for byte (a folder written by train.py). Anything else raises ``ValueError`` telling the user
    how to allow it, rather than running code they never saw."""
    if asked:
        return True
    folder = Path(model_name_or_path)
    problem = _foreign_code(folder) if folder.is_dir() else "is not a local folder (a Hub repository?)"
    if problem is None:
        return True
    raise ValueError(f"{model_name_or_path} {problem}; loading it runs that repository's Python code. Add "
                     "--trust_remote_code if you trust that code")


def _foreign_code(folder: Path) -> str | None:
    """Why the code of a model folder is not this project's own, or None when it is."""
    for path in sorted(folder.glob("*.py")):
        if path.name != MODELING_FILE:
            return f"holds Python code of its own ({path.name})"
        if path.read_bytes() != (PROJECT_ROOT / MODELING_FILE).read_bytes():
            return f"holds a {MODELING_FILE} that differs from this project's"
    for name in ("config.json", "tokenizer_config.json"):
        references = _code_references(folder / name)
        foreign = sorted(reference for reference in references
                         if reference.partition(".")[0] != MODELING_FILE.removesuffix(".py"))
        if foreign:
            return f"names code outside {MODELING_FILE} in its {name} ({foreign[0]})"
    return None


def _code_references(config_path: Path) -> set[str]:
    """The ``module.Class`` names a config's ``auto_map`` and ``custom_pipelines`` load code from."""
    if not config_path.is_file():
        return set()
    config = json.loads(config_path.read_text(encoding="utf-8"))
    references = set()
    for value in (config.get("auto_map") or {}).values():
        references.update([value] if isinstance(value, str) else [name for name in value if name])
    for task in (config.get("custom_pipelines") or {}).values():
        references.add(task.get("impl", ""))
    return references


# ----- one run per output folder -----


class OutputLock:
    """``<folder>/run.lock``, holding the owner's pid and host, while a run writes ``folder``.

    The lock file is written complete under a temporary name and hard-linked into place, which fails when a lock
    exists: so two runs cannot both take it, and a lock is never seen half-written. A lock left by a process
    that is gone (same host, dead pid: a killed run) is taken over with a warning. Released at exit; a folder
    the run created and left empty (it stopped before writing anything) is removed with it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
        self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{LOCK_NAME}.")
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(self.owner, file)
        try:
            for _ in range(2):  # a second try after removing a dead owner's lock
                try:
                    self._put_in_place(temporary)
                    break
                except FileExistsError:
                    self._remove_stale_lock()
            else:
                raise ValueError(f"{self.path} was taken again while a stale lock was removed; try again")
        finally:
            os.unlink(temporary)
        atexit.register(self.release)

    def _put_in_place(self, temporary: str) -> None:
        """The lock file, complete, at ``self.path``; ``FileExistsError`` when a lock is there."""
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create exclusively, then write
            with open(self.path, "x", encoding="utf-8") as file:
                json.dump(self.owner, file)

    def _remove_stale_lock(self) -> None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return  # released meanwhile
        except ValueError:
            owner = {}
        pid, host = owner.get("pid"), owner.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _process_alive(pid):
            logger.warning("Taking over %s: its owner, process %d, is gone", self.path, pid)
            self.path.unlink(missing_ok=True)
            return
        raise ValueError(f"{self.folder} is in use by another run (process {pid} on {host}: "
                         f"{owner.get('command', '?')}); wait for it to end or give another --output_dir. If "
                         f"that run is over, delete {self.path}")

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.path.unlink()
        except (FileNotFoundError, ValueError):
            pass
        if self.created_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# ----- training runs: finished, resumable, same arguments -----


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
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    changes = [f"{name} {saved.get(name, '(absent)')} -> {arguments.get(name, '(absent)')}"
               for name in sorted(saved.keys() | arguments.keys()) if saved.get(name) != arguments.get(name)]
    if not changes:
        return
    if allowed:
        logger.warning("Resuming %s with changed arguments: %s", checkpoint, "; ".join(changes))
        return
    raise ValueError(f"{checkpoint} was trained with other arguments ({'; '.join(changes)}); give the same ones, "
                     "--resume_with_changed_arguments to resume anyway, or --overwrite_output_dir to start afresh")


# ----- command lines -----


def parse_arguments(parser, command_line: list[str] | None = None):
    """The parser's dataclasses from the command line (``sys.argv[1:]`` by default). A first argument ending in
    ``.json`` gives the values, which the options after it override (``train.py configs/quickstart.json
    --output_dir other/``). An argument that a dataclass refuses (its ``__post_init__`` raises ``ValueError``)
    ends the script as argparse errors do."""
    command_line = sys.argv[1:] if command_line is None else command_line
    if command_line and command_line[0].endswith(".json"):
        parser.set_defaults(**read_json_arguments(command_line[0], parser))
        command_line = command_line[1:]
    try:
        return parser.parse_args_into_dataclasses(args=command_line)
    except ValueError as error:
        parser.error(str(error))


def read_json_arguments(path: str, parser) -> dict:
    """The JSON file's values, checked like the command line's: an unknown name is an error, not ignored."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        parser.error(f"{path}: cannot read it ({error.strerror})")
    except json.JSONDecodeError as error:
        parser.error(f"{path}, line {error.lineno}: not valid JSON ({error.msg})")
    if not isinstance(values, dict):
        parser.error(f"{path}: a JSON object of option names and values is expected")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"{path}: unknown options {', '.join(unknown)} (--help lists them)")
    return values


def run_main(main, script: str) -> None:
    """Run ``main``; bad input files and this project's own checks end it with one line ``script: message``
    instead of a traceback. A ``ValueError`` raised inside a library keeps its traceback: that is a bug to
    report, not a message written for the user."""
    try:
        main()
    except BratFormatError as error:
        sys.exit(f"{script}: {error}")
    except ValueError as error:
        if not _raised_by_project(error):
            raise
        sys.exit(f"{script}: {error}")


def _raised_by_project(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    path = Path(frames[-1].filename).resolve()
    return PROJECT_ROOT in path.parents and "site-packages" not in path.parts
