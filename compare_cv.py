#!/usr/bin/env python
"""Compare cross-validation runs of the same folds, fold by fold.

    python compare_cv.py --runs outputs/cv-recipe outputs/cv-classic outputs/cv-no-fgm
    python compare_cv.py --runs outputs/cv-recipe outputs/cv-augment --types SideEff Reason Treatment

Each folder is one ``cross_validate.py --output_dir`` (finished). The table gives each run's mean ± standard
deviation over folds (strict and overlap, micro- and macro-F1), then every later run minus the first, paired by
fold: the mean difference ± its standard error and the folds in which it is ahead. The folds' documents differ
more from each other than two settings usually do, and pairing takes that spread out of the comparison; runs
that did not validate on the same documents in each fold (another ``--folds``, ``--fold_seed`` or corpus) are
refused. With ``--types``, a second table does the same for each of those entity types' F1, a row per type, strict
and overlap (the rare types, which macro-F1 averages in with the rest). Nothing is written.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "compare_cv.py")  # --help from its stored page

from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from brat_ner import cross_validation
from brat_ner.cli import UsageError, parse_arguments, run_main


@dataclass
class ComparisonArguments:
    runs: list[str] = field(metadata={"help": "Output folders of finished cross_validate.py runs on the same folds; "
                                              "the first is the reference the others are compared with."})
    types: list[str] = field(default_factory=list,
                             metadata={"help": "Entity types whose F1 to compare as well, strict and overlap, fold by "
                                               "fold (e.g. the rare ones: SideEff Reason Treatment)."})

    def __post_init__(self):
        if len(self.runs) < 2:
            raise UsageError(f"--runs needs at least two cross-validation folders, got {len(self.runs)}")


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(ComparisonArguments, prog="compare_cv.py",
                            usage="compare_cv.py --runs DIR DIR [DIR ...] [--types TYPE ...]",
                            description="Compare cross-validation runs of the same folds, fold by fold.")


def main():
    (args,) = parse_arguments(argument_parser())
    runs = [cross_validation.read_results(Path(folder), per_type=bool(args.types)) for folder in args.runs]
    print(cross_validation.comparison_table(args.runs, runs))
    if args.types:
        print()
        print(cross_validation.type_comparison_table(args.runs, runs, args.types))


if __name__ == "__main__":
    run_main(main, "compare_cv.py")
