#!/usr/bin/env python
"""Combine trained models of one label set (the folds of cross_validate.py, or seeds) into one model folder,
and score it beside its members on their test split.

    python ensemble.py --members outputs/cv-recipe/fold-* --output_dir outputs/cv-recipe-ensemble
    python ensemble.py --members A B C --output_dir OUT --min_votes 2      # entity-level voting instead

The folder loads like any model of the project (``AutoModelForTokenClassification.from_pretrained(...,
trust_remote_code=True)``, the pipeline, predict.py, push_to_hub.py, the Space, ``--quantize int8``). By default
the ensemble averages its members' CRF potentials (emissions and transitions) and decodes them in one Viterbi
pass, its scores the marginals of that averaged CRF; ``--min_votes N`` keeps instead each entity that N members
predict. The members and the ensemble are scored on the test split of the corpus the first member was trained on
(read from its run_arguments.json, at brat level, strict and overlap): the table is printed, the ensemble's
reports are its ``test_report*.json`` (the model card's) and every figure is in ``ensemble_members.json``;
``--compare_min_votes 1 2 3`` scores those vote thresholds too.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "ensemble.py")  # --help from its stored page: the imports below take seconds

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from brat_ner import ensembles, fast_inference
from brat_ner.cli import UsageError, check_at_least, parse_arguments, run_main
from brat_ner.evaluation import reports_to_markdown, write_reports
from brat_ner.files import atomic_write, umask
from brat_ner.runs import FINISHED, read_record, record_run


@dataclass
class EnsembleArguments:
    members: list[str] = field(metadata={"help": "The member model folders (at least 2), e.g. the fold-* folders "
                                                 "of cross_validate.py."})
    output_dir: str = field(metadata={"help": "The ensemble's model folder (new, or one this command wrote, with "
                                              "--overwrite_output_dir)."})
    min_votes: int = field(default=0, metadata={"help": "0: average the members' CRF potentials (the default). "
                                                        "N: keep each entity that at least N members predict."})
    compare_min_votes: list[int] = field(default_factory=list, metadata={
        "help": "Vote thresholds to score on the test split beside the ensemble's own decoding (and averaging)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an ensemble this command wrote."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Load members whose Python code is not this project's own."})
    batch_size: int = field(default=32, metadata={"help": "Windows per batch when tagging the test split."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads (default: the idle cores)."})

    def __post_init__(self):
        check_at_least(2, members=len(self.members))
        check_at_least(0, min_votes=self.min_votes, compare_min_votes=min(self.compare_min_votes, default=0))
        check_at_least(1, batch_size=self.batch_size)
        if max([self.min_votes, *self.compare_min_votes]) > len(self.members):
            raise UsageError(f"a vote threshold above the number of members ({len(self.members)}) keeps nothing")


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(EnsembleArguments, prog="ensemble.py",
                            usage="ensemble.py --members DIR DIR ... --output_dir DIR [--min_votes N]")


def main():
    (args,) = parse_arguments(argument_parser())
    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, args.overwrite_output_dir)
    fast_inference.set_num_threads(args.num_threads)
    ensemble = ensembles.combine(args.members, args.min_votes, args.trust_remote_code)
    tokenizer = ensembles.load_tokenizer(args.members[0], args.trust_remote_code)
    print(f"ensemble.py: {len(args.members)} members; scoring them and the ensemble on their test split")
    scores = ensembles.test_scores(ensemble, args.members, tokenizer, args.compare_min_votes, args.batch_size)
    # Written whole in a hidden folder beside the output folder, then moved in: a stopped run leaves no
    # half-written model where the next one (or a user) would take it for a finished one.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        ensembles.write_ensemble(ensemble, tokenizer, args.members, staging)
        write_reports(scores["reports"], staging / "test_report")
        atomic_write(staging / ensembles.MEMBERS_FILE, ensembles.members_record(scores))
        record_run(staging, "ensemble.py", FINISHED)
        staging.chmod(0o777 & ~umask())  # mkdtemp's folder is private
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(ensembles.scores_table(scores))
    print(f"\nThe ensemble on the test split ({scores['documents']} documents), per type:\n")
    print(reports_to_markdown(scores["reports"]))
    print(f"Ensemble model in {output_dir}")


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """A new folder, or (with --overwrite_output_dir) one this command wrote: never a folder of the user's."""
    if not output_dir.exists() or (output_dir.is_dir() and not any(output_dir.iterdir())):
        return
    record = read_record(output_dir) if output_dir.is_dir() else None
    if not overwrite:
        raise UsageError(f"{output_dir} exists and is not empty; give another --output_dir"
                         + (" or --overwrite_output_dir" if record and record.get("script") == "ensemble.py" else ""))
    if not record or record.get("script") != "ensemble.py":
        raise UsageError(f"{output_dir} was not written by ensemble.py; give another --output_dir")


if __name__ == "__main__":
    run_main(main, "ensemble.py")
