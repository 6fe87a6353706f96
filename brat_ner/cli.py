"""Command lines: options from a JSON file plus command-line overrides, and one way to fail (a line naming the
problem, exit status 2) for every script."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from dataset_script.formats import AnnotationFormatError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Options renamed since: option files (and run records) written with the former name still read.
FORMER_NAMES = {"max_chars": "window_chars"}
USAGE_ERROR = 2
HELP_PAGES = Path(__file__).with_name("help_pages")
HELP_WIDTH = 100  # columns of the stored help pages, whatever the terminal that wrote them
# Trainer options that --help shows beside the project's own; --help-all shows Trainer's hundred. (Not bf16:
# its default depends on the machine's GPU, and the stored page must not.)
SHOWN_TRAINER_OPTIONS = {
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "warmup_steps", "weight_decay", "seed", "use_cpu",
    "save_total_limit", "eval_strategy", "save_strategy", "resume_from_checkpoint", "report_to",
}


class UsageError(ValueError):
    """A user's mistake (a refused option, folder, file or value): ``run_main`` prints its message on one line and
    exits with status 2. Raise it for whatever the user can fix; any other exception is a bug and keeps its
    traceback. A ``ValueError``, so that a dataclass's ``__post_init__`` may raise either (``parse_arguments``)."""


def exit_early_for_help(module_name: str, script: str) -> None:
    """``script --help`` prints the script's stored help page and exits, before the script imports torch and
    transformers (seconds that --help should not cost). The page is ``help_page`` of the script's parser, stored
    in ``HELP_PAGES`` under the line of the transformers version it was made with (``stored_help_page``); a test
    keeps it equal to what the parser prints (``tests/test_cli.py``). With another version of transformers
    installed (whose Trainer options may differ), the script goes on and its parser answers."""
    if module_name == "__main__" and sys.argv[1:] in (["-h"], ["--help"]):
        made_with, _, page = help_page_path(script).read_text(encoding="utf-8").partition("\n")
        if made_with == _made_with():
            print(page, end="")
            sys.exit(0)


def help_page_path(script: str) -> Path:
    return HELP_PAGES / f"{Path(script).stem}.txt"


def stored_help_page(parser) -> str:
    """What ``HELP_PAGES`` holds for a script: the transformers version it was made with, then its help page."""
    return f"{_made_with()}\n{help_page(parser)}"


def _made_with() -> str:
    """The installed transformers, as the first line of a stored help page names it (read without importing it)."""
    return f"made with transformers {importlib.metadata.version('transformers')}"


def help_page(parser, all_options: bool = False) -> str:
    """The parser's help: the project's options and the Trainer options people set (``SHOWN_TRAINER_OPTIONS``),
    or with ``all_options`` every one of Trainer's as well."""
    hidden = set() if all_options else _trainer_options(parser) - SHOWN_TRAINER_OPTIONS
    saved = {action: action.help for action in parser._actions}
    os.environ["COLUMNS"], columns = str(HELP_WIDTH), os.environ.get("COLUMNS")
    try:
        for action in parser._actions:
            if action.dest in hidden:
                action.help = argparse.SUPPRESS
        page = parser.format_help()
    finally:
        for action, text in saved.items():
            action.help = text
        os.environ.pop("COLUMNS") if columns is None else os.environ.update(COLUMNS=columns)
    if not all_options and hidden:
        page += f"\n{len(hidden)} more Trainer options (transformers' TrainingArguments): --help-all lists them.\n"
    return page


def _trainer_options(parser) -> set[str]:
    """The destinations of the parser's options that are fields of transformers' ``TrainingArguments`` (found
    among its dataclasses' bases, so this module never imports transformers)."""
    for kind in parser.dataclass_types:
        for base in kind.__mro__:
            if base.__name__ == "TrainingArguments" and base.__module__.startswith("transformers."):
                return {field.name for field in dataclasses.fields(base)}
    return set()


def parse_arguments(parser, command_line: list[str] | None = None):
    """The parser's dataclasses from the command line (``sys.argv[1:]`` by default). A first argument ending in
    ``.json`` gives the values, which the options after it override (``train.py configs/quickstart.json
    --output_dir other/``). A refused argument (argparse's own errors, or a dataclass's ``__post_init__``
    raising ``ValueError``) ends the script with one line and exit status 2, as ``run_main`` does."""
    parser.error = lambda message: fail(f"{parser.prog}: {message} (--help lists the options)")
    command_line = sys.argv[1:] if command_line is None else command_line
    for flag, all_options in (("--help-all", True), ("--help", False), ("-h", False)):
        if flag in command_line:
            print(help_page(parser, all_options), end="")
            sys.exit(0)
    if command_line and command_line[0].endswith(".json"):
        values = read_json_arguments(command_line[0], parser)
        parser.set_defaults(**values)
        for action in parser._actions:  # a required option given in the file is given
            action.required = action.required and action.dest not in values
        command_line = command_line[1:]
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(args=command_line, return_remaining_strings=True)
    except ValueError as error:
        parser.error(str(error))
    if unknown:
        parser.error(f"unknown options {' '.join(unknown)}")
    return parsed


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
    values = {FORMER_NAMES.get(name, name) if FORMER_NAMES.get(name) in known else name: value
              for name, value in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"{path}: unknown options {', '.join(unknown)}")
    return values


def check_at_least(minimum: float, **options) -> None:
    """Refuse (``UsageError``, which the parser reports in one line) each option below ``minimum``; ``None``
    means the option's default, decided later. For the ``__post_init__`` of argument dataclasses, so a bad
    number stops the script before any work or any folder is made."""
    for name, value in options.items():
        if value is not None and value < minimum:
            raise UsageError(f"--{name} must be at least {minimum:g}, got {value}")


def check_positive(**options) -> None:
    """Refuse (``UsageError``) each option that is not above zero (``None``: the default, decided later)."""
    for name, value in options.items():
        if value is not None and not value > 0:
            raise UsageError(f"--{name} must be positive, got {value}")


def offline_without_network() -> None:
    """The Hub client's offline mode when the Hub's host cannot even be resolved (no network): a Hub id is then
    read from the cache or refused at once, in the command's one line, instead of after half a minute of retries
    and two dozen warning lines. With a network, nothing changes."""
    from huggingface_hub import constants  # here: --help must not import it

    if constants.HF_HUB_OFFLINE:
        return
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"  # and in the processes this one starts


def run_main(main, script: str) -> None:
    """Run ``main``; a user's mistake (``UsageError``) or a malformed annotation file (``BratFormatError``) ends it
    with one line ``script: message`` and exit status 2 instead of a traceback. Any other exception is a bug to
    report and keeps its traceback."""
    try:
        main()
    except (UsageError, AnnotationFormatError) as error:  # a malformed annotation file of any format
        fail(f"{script}: {error}")


def fail(message: str) -> None:
    """End the script the one way a user's mistake ends it: ``message`` on one line of standard error, exit
    status 2 (argparse's status for a refused command line)."""
    print(" ".join(message.splitlines()), file=sys.stderr)
    sys.exit(USAGE_ERROR)
