#!/usr/bin/env python
"""k-fold cross-validation of a training recipe: one model per fold, scored on the documents it never saw.

    python cross_validate.py configs/quickstart.json --folds 5 --output_dir outputs/cv-quickstart
    python cross_validate.py configs/cpu-recipe.json --folds 5 --output_dir outputs/cv-recipe \
        --model_name_or_path outputs/cpu-recipe-embeddings --time_budget_minutes 21
    python cross_validate.py configs/quickstart.json --folds 5 --output_dir outputs/cv-quickstart \
        --train_fractions 0.25 0.5 0.75 1   # a learning curve

Every option other than this script's own (``--folds``, ``--fold_seed``, ``--output_dir``) goes to train.py,
which trains fold k of K in ``OUTPUT_DIR/fold-k`` with ``--folds K --fold k``: the training and validation
documents divided into K folds by document group (deterministic for ``--fold_seed``), fold k validating, the
test split untouched by every fold. Each fold's model is the last weights of its run (its epochs or
``--time_budget_minutes``): no best checkpoint and no early stopping, which would be chosen on fold k, the
documents it is scored on (``--load_best_model_at_end`` and ``--early_stopping_patience`` are refused).
Each fold's model then tags its validation documents (out of fold), and
the scores, strict and overlap at brat level as ``predict.py --gold_dir`` gives them, are printed and written
to ``OUTPUT_DIR/cross_validation.json``: per fold, mean ± standard deviation over folds, and pooled over every
out-of-fold document. A time budget applies per fold. Rerunning the command after it was stopped goes on where
it stopped: a finished fold is skipped, an interrupted one resumes from its newest checkpoint (train.py's own
run safety), and the scores are computed anew.

A model that a fold's run learns from (``--teacher``, ``--silver_model``, ``--model_name_or_path`` of a trained
model) must not have seen that fold's documents, which the fold's model is scored on (train.py refuses it,
``cross_validation.scored_fold_seen``): give each fold its own with ``{fold}`` in the option, replaced by the fold's
number, e.g. the folds of another cross-validation on the same folds::

    python cross_validate.py configs/cpu-recipe.json --folds 5 --output_dir outputs/cv-self-training \
        --silver_model outputs/cv-recipe/fold-{fold} --extra_text_dirs ../shared/data/ruijin_round1/unlabeled

With ``--train_fractions``, the cross-validation runs once per share of each fold's training documents
(``train.py --train_fraction``; share 1 in ``OUTPUT_DIR`` itself, the others in ``OUTPUT_DIR/fraction-F``), every
size scored on the same out-of-fold documents, and ``OUTPUT_DIR/learning_curve.png`` (and ``.json``) shows the
F1 scores against the number of training documents (``brat_ner/learning_curve.py``).
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "cross_validate.py")  # --help from its stored page: the imports below take seconds

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from brat_ner import cross_validation, learning_curve
from brat_ner.cli import UsageError, check_at_least, fail, run_main
from brat_ner.runs import check_run_folder

FOLD_FIELD = "{fold}"  # in train.py's options: the number of the fold being trained


@dataclass
class CrossValidationArguments:
    output_dir: str = field(metadata={"help": "Folder of the folds' model folders (fold-0, fold-1, ...) and of "
                                              "cross_validation.json."})
    folds: int = field(default=5, metadata={"help": "Number of folds (at least 2)."})
    fold_seed: int = field(default=42, metadata={"help": "Seed of the division into folds."})
    train_fractions: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "A learning curve: cross-validate once per share of each fold's training documents "
                          "(e.g. 0.25 0.5 0.75 1; whole document groups, each share inside the next), share 1 in "
                          "OUTPUT_DIR, the others in OUTPUT_DIR/fraction-F, and plot the F1 scores against the "
                          "number of training documents in OUTPUT_DIR/learning_curve.png."})
    scale_time_budget: bool = field(
        default=False,
        metadata={"help": "With --train_fractions: each share's time budget per fold is --time_budget_minutes "
                          "times the share (about equal epochs at every size) rather than the same minutes."})

    def __post_init__(self):
        check_at_least(2, folds=self.folds)
        if not all(0 < fraction <= 1 for fraction in self.train_fractions):
            raise UsageError(f"--train_fractions must be shares above 0 and at most 1, got {self.train_fractions}")


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
    # Before any fold: train.py would refuse such a folder or corpus only once the first fold starts.
    data_dir = train_option(config, training_options, "data_dir") or "data/sample"  # train.py's default
    check_run_folder(output_dir, {"--data_dir": [data_dir]},
                     markers=(cross_validation.RESULTS_FILE, learning_curve.CURVE_FILE))
    cross_validation.check_folds_fit(data_dir, args.folds, args.fold_seed)
    folders = {fraction: fraction_folder(output_dir, fraction) for fraction in sorted(set(args.train_fractions))}
    budgets = {fraction: fold_budget(config, training_options, fraction, args.scale_time_budget)
               for fraction in folders}
    announce_training_time(folders, budgets, args.folds)
    points = []
    for fraction, cv_dir in folders.items():
        options = [*training_options, *(["--train_fraction", f"{fraction:g}"] if fraction < 1 else []),
                   *(["--time_budget_minutes", f"{budgets[fraction]:g}"] if args.scale_time_budget else [])]
        results = cross_validate(config, options, args, cv_dir)
        if len(folders) > 1:
            points.append(learning_curve.curve_point(fraction, cv_dir, args.folds, results))
    if points:
        learning_curve.write_learning_curve(points, output_dir)
        print(learning_curve.curve_table(points))
        print(f"Learning curve in {output_dir / learning_curve.PLOT_FILE} and {output_dir / learning_curve.CURVE_FILE}")


def cross_validate(config: list[str], training_options: list[str], args, output_dir: Path) -> dict:
    """Every fold of one cross-validation in ``output_dir`` (finished folds skipped), scored and reported."""
    for fold in range(args.folds):
        folder = cross_validation.fold_folder(output_dir, fold)
        if (folder / cross_validation.OUT_OF_FOLD_FILE).is_file():
            problem = cross_validation.checkpoint_choice_problem(folder)
            if problem:
                raise UsageError(f"fold {fold} in {folder}: {problem}; give another --output_dir to cross-validate "
                                 "without that choice")
            print(f"cross_validate.py: fold {fold} is done ({folder})")
            continue
        print(f"cross_validate.py: fold {fold} of {args.folds} in {folder}", flush=True)
        train_fold(config, training_options, args, fold, folder)
        cross_validation.predict_out_of_fold(folder)
    results = cross_validation.cross_validation_results(output_dir, args.folds)
    cross_validation.write_results(results, output_dir)
    print(cross_validation.results_table(results))
    print(f"Scores in {output_dir / cross_validation.RESULTS_FILE}")
    return results


def fraction_folder(output_dir: Path, fraction: float) -> Path:
    """Where the cross-validation of one share of the training documents lives (share 1: ``output_dir``)."""
    return output_dir if fraction == 1 else output_dir / f"fraction-{fraction:g}"


def announce_training_time(folders: dict[float, Path], budgets: dict[float, float | None], folds: int) -> None:
    """Say before the first fold how many folds are still to train and for about how many minutes."""
    to_train = {fraction: sum(not (cross_validation.fold_folder(folder, fold) / cross_validation.OUT_OF_FOLD_FILE)
                              .is_file() for fold in range(folds)) for fraction, folder in folders.items()}
    if all(budgets.values()) and any(to_train.values()):
        print(f"cross_validate.py: {sum(to_train.values())} folds to train, at most "
              f"{', '.join(f'{budgets[fraction]:g}' for fraction in folders if to_train[fraction])} minutes each: "
              f"about {sum(to_train[fraction] * budgets[fraction] for fraction in folders):g} minutes, plus "
              "preparing the corpus and tagging each fold")


def fold_budget(config: list[str], training_options: list[str], fraction: float, scale: bool) -> float | None:
    """Minutes of training per fold at ``fraction`` of the training documents (None: no time budget), from the
    command line or else the JSON file, scaled by the share with ``--scale_time_budget``."""
    given = train_option(config, training_options, "time_budget_minutes")
    if given is None:
        if scale:
            fail("cross_validate.py: --scale_time_budget needs a --time_budget_minutes (option or JSON file)")
        return None
    return float(given) * (fraction if scale else 1)


def train_option(config: list[str], training_options: list[str], name: str):
    """The value of train.py's option ``name`` on the command line, else in the JSON file, else None."""
    given = option_value(training_options, f"--{name}")
    if given is None and config:
        try:
            given = json.loads(Path(config[0]).read_text(encoding="utf-8")).get(name)
        except (OSError, ValueError, AttributeError):
            given = None  # train.py stops on the file, naming what is wrong with it
    return given


def split_options(command_line: list[str]) -> tuple[CrossValidationArguments, list[str]]:
    """This script's options, and the rest (train.py's) in their order, each fold's model its last weights."""
    parser = argument_parser()
    parser.error = lambda message: fail(f"cross_validate.py: {message}")
    args, rest = parser.parse_args_into_dataclasses(args=command_line, return_remaining_strings=True)
    for option in cross_validation.LAST_CHECKPOINT_OPTIONS:
        given = option_value(rest, option) if option in rest else "false"
        if given is None or given.lower() not in ("false", "no", "0"):  # a bare flag: None, or "--" the next option
            parser.error(f"{option} would choose each fold's model on the documents it is scored on; each "
                         "fold's model is its last weights")
    return args, [*rest, *(word for pair in cross_validation.LAST_CHECKPOINT_OPTIONS.items() for word in pair)]


def option_value(options: list[str], name: str) -> str | None:
    """The value given to ``name`` in ``options`` (the last one wins, as argparse has it), or None."""
    values = [options[index + 1] for index, option in enumerate(options[:-1]) if option == name]
    return values[-1] if values else None


def train_fold(config: list[str], training_options: list[str], args, fold: int, folder: Path) -> None:
    """train.py for one fold, as a user would run it, ``{fold}`` in its options replaced by the fold's number; its
    one-line refusal or failure ends this run too."""
    command = [sys.executable, str(Path(__file__).with_name("train.py")), *config,
               *(option.replace(FOLD_FIELD, str(fold)) for option in training_options),
               "--folds", str(args.folds), "--fold", str(fold), "--fold_seed", str(args.fold_seed),
               "--output_dir", str(folder)]
    completed = subprocess.run(command)
    if completed.returncode:
        raise UsageError(f"train.py stopped on fold {fold} (exit status {completed.returncode}); its message is "
                         "above. Fix it and rerun this command: finished folds are kept")


if __name__ == "__main__":
    run_main(main, "cross_validate.py")
