#!/usr/bin/env python
"""k-fold cross-validation of a training recipe: one model per fold, scored on the documents it never saw.

    python cross_validate.py configs/quickstart.json --folds 5 --output_dir outputs/cv-quickstart
    python cross_validate.py configs/cpu-recipe.json --folds 5 --output_dir outputs/cv-recipe \
        --model_name_or_path outputs/cpu-recipe-embeddings --time_budget_minutes 21

Every option other than this script's own (``--folds``, ``--fold_seed``, ``--output_dir``) goes to train.py,
which trains fold k of K in ``OUTPUT_DIR/fold-k`` with ``--folds K --fold k``: the training and validation
documents divided into K folds by document group (deterministic for ``--fold_seed``), fold k validating, the
test split untouched by every fold. Each fold's model then tags its validation documents (out of fold), and
the scores, strict and overlap at brat level as ``predict.py --gold_dir`` gives them, are printed and written
to ``OUTPUT_DIR/cross_validation.json``: per fold, mean ± standard deviation over folds, and pooled over every
out-of-fold document. A time budget applies per fold. Rerunning the command after it was stopped goes on where
it stopped: a finished fold is skipped, an interrupted one resumes from its newest checkpoint (train.py's own
run safety), and the scores are computed anew.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "cross_validate.py")  # --help from its stored page: the imports below take seconds

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from brat_ner import cross_validation
from brat_ner.cli import check_at_least, fail, run_main


@dataclass
class CrossValidationArguments:
    output_dir: str = field(metadata={"help": "Folder of the folds' model folders (fold-0, fold-1, ...) and of "
                                              "cross_validation.json."})
    folds: int = field(default=5, metadata={"help": "Number of folds (at least 2)."})
    fold_seed: int = field(default=42, metadata={"help": "Seed of the division into folds."})

    def __post_init__(self):
        check_at_least(2, folds=self.folds)


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(
        CrossValidationArguments, prog="cross_validate.py", allow_abbrev=False,  # --fold is train.py's
        usage="cross_validate.py [CONFIG.json] --output_dir DIR [--folds K] [train.py options ...]",
        description="Train one model per fold with train.py and score each on its fold's documents. Options other "
                    "than these go to train.py (python train.py --help lists them).")


def main():
    command_line = sys.argv[1:]
    config = command_line[:1] if command_line and command_line[0].endswith(".json") else []
    args, training_options = split_options(command_line[len(config):])
    output_dir = Path(args.output_dir)
    minutes = option_value(training_options, "--time_budget_minutes")
    if minutes:
        print(f"cross_validate.py: {args.folds} folds of at most {minutes} minutes of training each: about "
              f"{args.folds * float(minutes):g} minutes, plus preparing the corpus and tagging each fold")
    for fold in range(args.folds):
        folder = cross_validation.fold_folder(output_dir, fold)
        if (folder / cross_validation.OUT_OF_FOLD_FILE).is_file():
            print(f"cross_validate.py: fold {fold} is done ({folder})")
            continue
        print(f"cross_validate.py: fold {fold} of {args.folds} in {folder}", flush=True)
        train_fold(config, training_options, args, fold, folder)
        cross_validation.predict_out_of_fold(folder)
    results = cross_validation.cross_validation_results(output_dir, args.folds)
    cross_validation.write_results(results, output_dir)
    print(cross_validation.results_table(results))
    print(f"Scores in {output_dir / cross_validation.RESULTS_FILE}")


def split_options(command_line: list[str]) -> tuple[CrossValidationArguments, list[str]]:
    """This script's options, and the rest (train.py's) in their order."""
    parser = argument_parser()
    parser.error = lambda message: fail(f"cross_validate.py: {message}")
    args, rest = parser.parse_args_into_dataclasses(args=command_line, return_remaining_strings=True)
    return args, rest


def option_value(options: list[str], name: str) -> str | None:
    """The value given to ``name`` in ``options`` (the last one wins, as argparse has it), or None."""
    values = [options[index + 1] for index, option in enumerate(options[:-1]) if option == name]
    return values[-1] if values else None


def train_fold(config: list[str], training_options: list[str], args, fold: int, folder: Path) -> None:
    """train.py for one fold, as a user would run it; its one-line refusal or failure ends this run too."""
    command = [sys.executable, str(Path(__file__).with_name("train.py")), *config, *training_options,
               "--folds", str(args.folds), "--fold", str(fold), "--fold_seed", str(args.fold_seed),
               "--output_dir", str(folder)]
    completed = subprocess.run(command)
    if completed.returncode:
        raise ValueError(f"train.py stopped on fold {fold} (exit status {completed.returncode}); its message is "
                         "above. Fix it and rerun this command: finished folds are kept")


if __name__ == "__main__":
    run_main(main, "cross_validate.py")
