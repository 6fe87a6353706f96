"""k-fold cross-validation: each fold's out-of-fold predictions, their scores per fold (mean and standard
deviation over folds) and pooled over every out-of-fold document, and paired comparisons of runs on the same
folds.

``cross_validate.py`` trains one model per fold with ``train.py --folds K --fold k`` (``ruijin_ner``'s
``cross_validation_split``: the training and validation documents divided by document group, the test split
untouched); this module tags each fold's validation documents with that fold's model and scores them at brat
level, strict and overlap, as ``predict.py --gold_dir`` does.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from brat_ner.cli import UsageError
from brat_ner.evaluation import AVERAGE_ROWS, score_against_gold, summary
from brat_ner.files import atomic_write
from brat_ner.runs import ARGUMENTS_NAME, read_record
from brat_ner.tagging import tag_texts
from brat_ner.trust import trust_remote_code

OUT_OF_FOLD_FILE = "out_of_fold_entities.json"  # written last in a fold's folder: the fold is done
RESULTS_FILE = "cross_validation.json"
SCORES = (("strict", "f1"), ("strict", "macro_f1"), ("overlap", "f1"), ("overlap", "macro_f1"))
"""The figures a comparison reports: micro- and macro-F1, strict and overlap."""
# From the fold's run_arguments.json.
CORPUS_OPTIONS = ("data_dir", "data_format", "event_triggers", "folds", "fold", "fold_seed", "train_fraction")


# Each fold's model is its run's last weights: train.py's best checkpoint and early stopping would choose them on
# the fold's validation documents, which are the documents the fold is scored on.
LAST_CHECKPOINT_OPTIONS = {"--load_best_model_at_end": "false", "--early_stopping_patience": "0"}
CHECKPOINT_CHOICE = "last weights of a fixed budget (no choice on the scored fold)"

# The models a train.py run learned from, in its run_arguments.json: its start, its teacher, its silver tagger.
LEARNED_FROM = ("model_name_or_path", "teacher", "silver_model")


def run_arguments(model_dir: Path) -> dict:
    """The arguments that train.py recorded for the run in ``model_dir`` (its ``run_arguments.json``)."""
    return json.loads((model_dir / ARGUMENTS_NAME).read_text(encoding="utf-8"))


def fold_folder(output_dir: Path, fold: int) -> Path:
    return output_dir / f"fold-{fold}"


def check_folds_fit(data_dir: str, folds: int, fold_seed: int) -> None:
    """Refuse (``BratFormatError``, naming the corpus) more folds than the corpus has document groups, before a fold
    is trained: the division into folds is read from the files alone, in a moment."""
    from dataset_script import ruijin_ner  # here, not at the top: compare_cv.py starts without datasets

    ruijin_ner.split_corpus(Path(data_dir), ruijin_ner.BratNerConfig(name="brat", folds=folds, fold_seed=fold_seed))


def checkpoint_choice_problem(model_dir: Path) -> str | None:
    """Why the finished fold in ``model_dir`` cannot be scored out of fold: its model was chosen on its validation
    documents (best checkpoint, early stopping: a fold trained by an earlier version of cross_validate.py), or
    None."""
    arguments = run_arguments(model_dir)
    chosen = [option for option, value in (("--load_best_model_at_end", arguments.get("load_best_model_at_end")),
                                           ("--early_stopping_patience", arguments.get("early_stopping_patience")))
              if value]
    if chosen:
        return (f"its model was chosen on the documents it is scored on ({' and '.join(chosen)} on its validation "
                "split, as cross_validate.py trained folds before it took each fold's last weights)")
    return None


def scored_fold_seen(model: str, data_dir: str, folds: int, fold: int, fold_seed: int) -> str | None:
    """Why a fold's run (fold ``fold`` of ``folds``, ``fold_seed``, corpus ``data_dir``) may not learn from
    ``model`` (its --model_name_or_path, --teacher or --silver_model): ``model``, or a model it learned from (the
    model it was trained further from, its teacher, its silver tagger, an ensemble's members), was trained by
    this project on the same corpus with other folds or none, so its tags carry the fold's own documents, which
    the run is scored on. None otherwise: models of other corpora, pretrained encoders and skip-gram vectors
    (written by other scripts, no tags) learned nothing of the fold's annotations. Relative folders in a run's
    records are read from the current folder, as the runs were started."""
    from brat_ner.ensembles import MEMBERS_FILE  # ensembles.py imports this module

    corpus, seen, to_read = Path(data_dir).resolve(), set(), [(Path(model), None)]
    while to_read:
        folder, learner = to_read.pop()
        if not folder.is_dir() or folder.resolve() in seen:
            continue  # a Hub name, or a folder whose models were read already
        seen.add(folder.resolve())
        via = f" learned from {folder}, which" if learner else ""
        script = (read_record(folder) or {}).get("script")
        if script == "ensemble.py":
            members = [Path(member["folder"]) for member in
                       json.loads((folder / MEMBERS_FILE).read_text(encoding="utf-8"))["members"]]
            gone = [member for member in members if not member.is_dir()]
            if gone:
                return (f"{model}{via} is an ensemble whose member {gone[0]} is gone: which documents it was "
                        "trained on cannot be told")
            to_read += [(member, folder) for member in members]
        elif script == "train.py":
            arguments = run_arguments(folder)
            trained = (arguments.get("folds") or 0, arguments.get("fold") or 0, arguments.get("fold_seed", 42))
            if Path(arguments["data_dir"]).resolve() == corpus and trained != (folds, fold, fold_seed):
                documents = (f"fold {trained[1]} of {trained[0]} (fold seed {trained[2]}) as its validation"
                             if trained[0] else "its training split")
                return (f"{model}{via} was trained on {data_dir} with {documents}, so it saw the documents of fold "
                        f"{fold} of {folds}, which this run is scored on; give a model of fold {fold} "
                        "(cross_validate.py: {fold} in the option)")
            to_read += [(Path(arguments[name]), folder) for name in LEARNED_FROM if arguments.get(name)]
    return None


def out_of_fold_documents(model_dir: Path) -> list[dict]:
    """The validation documents of the fold that ``model_dir`` was trained on (``brat`` layout)."""
    return split_documents(model_dir, "validation")


def split_documents(model_dir: Path, split: str) -> list[dict]:
    """The documents of ``split`` of the corpus that ``model_dir`` was trained on (``brat`` layout), read with the
    corpus options recorded in its ``run_arguments.json``."""
    from dataset_script import ruijin_ner  # datasets: seconds to import, which compare_cv.py never needs

    arguments = run_arguments(model_dir)
    options = {name: arguments[name] for name in CORPUS_OPTIONS if arguments.get(name) is not None}
    return list(ruijin_ner.load(options.pop("data_dir"), name="brat", **options)[split])


def predict_out_of_fold(model_dir: Path, batch_size: int = 32) -> dict[str, list[dict]]:
    """Tag the fold's validation documents with the fold's model and save the entities (``OUT_OF_FOLD_FILE``,
    written whole or not at all, so a killed run redoes this fold's tagging and nothing else)."""
    from transformers import pipeline  # here, not at import: the command's --help stays fast

    documents = out_of_fold_documents(model_dir)
    tagger = pipeline("token-classification", model=str(model_dir), device="cpu",
                      trust_remote_code=trust_remote_code(str(model_dir), asked=False))
    entities = tag_texts(tagger, [document["text"] for document in documents], batch_size)
    predictions = {document["document_id"]: found for document, found in zip(documents, entities, strict=True)}
    atomic_write(model_dir / OUT_OF_FOLD_FILE, json.dumps(predictions, ensure_ascii=False))
    return predictions


def cross_validation_results(output_dir: Path, folds: int) -> dict:
    """Scores of every fold's out-of-fold predictions: per fold, mean and standard deviation over folds, and
    pooled over all out-of-fold documents (with per-type reports), strict and overlap."""
    per_fold, gold_documents, predictions = [], [], {}
    for fold in range(folds):
        folder = fold_folder(output_dir, fold)
        fold_gold = out_of_fold_documents(folder)
        fold_predictions = json.loads((folder / OUT_OF_FOLD_FILE).read_text(encoding="utf-8"))
        reports = score_against_gold(fold_gold, fold_predictions)
        per_fold.append({"fold": fold, "documents": len(fold_gold),
                         **{rule: summary(report) for rule, report in reports.items()},
                         "types": {rule: {name: row["f1-score"] for name, row in report.items()
                                          if name not in AVERAGE_ROWS} for rule, report in reports.items()}})
        gold_documents += fold_gold
        predictions.update(fold_predictions)
    pooled = score_against_gold(gold_documents, predictions)
    return {
        "checkpoint": CHECKPOINT_CHOICE,
        "folds": per_fold,
        "mean": _over_folds(per_fold, statistics.mean),
        "standard_deviation": _over_folds(per_fold, statistics.stdev),
        "pooled": {rule: summary(report) for rule, report in pooled.items()},
        "pooled_reports": pooled,
    }


def _over_folds(per_fold: list[dict], statistic) -> dict:
    return {rule: {name: statistic(fold[rule][name] for fold in per_fold) for name in per_fold[0][rule]}
            for rule in ("strict", "overlap")}


def write_results(results: dict, output_dir: Path) -> None:
    atomic_write(output_dir / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False))


def results_table(results: dict) -> str:
    """The terminal's summary: micro and macro F1, strict and overlap, per fold, mean ± sd and pooled."""
    rows = ["| | strict micro-F1 | strict macro-F1 | overlap micro-F1 | overlap macro-F1 | documents |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for fold in results["folds"]:
        rows.append(f"| fold {fold['fold']} | {_cells(fold)} | {fold['documents']} |")
    mean, deviation = results["mean"], results["standard_deviation"]
    rows.append("| mean ± sd | " + " | ".join(
        f"{mean[rule][name]:.4f} ± {deviation[rule][name]:.4f}" for rule in ("strict", "overlap")
        for name in ("f1", "macro_f1")) + " | |")
    documents = sum(fold["documents"] for fold in results["folds"])
    rows.append(f"| pooled | {_cells(results['pooled'])} | {documents} |")
    return "\n".join(rows)


def _cells(scores: dict) -> str:
    return " | ".join(f"{scores[rule][name]:.4f}" for rule in ("strict", "overlap") for name in ("f1", "macro_f1"))


def read_results(output_dir: Path, per_type: bool = False) -> dict:
    """A finished cross-validation's ``RESULTS_FILE``, with the document ids each fold validated on; with
    ``per_type``, refused if it lacks each fold's per-type F1 (a file written before it kept them)."""
    path = output_dir / RESULTS_FILE
    if not path.is_file():
        raise UsageError(f"{output_dir}: no {RESULTS_FILE}; run cross_validate.py --output_dir {output_dir} (a stopped "
                         "run goes on where it stopped)")
    results = json.loads(path.read_text(encoding="utf-8"))
    if per_type and any("types" not in fold for fold in results["folds"]):
        raise UsageError(f"{path} has no per-type scores (written before they were kept): rerun its "
                         "cross_validate.py command, which scores the finished folds anew")
    results["fold_documents"] = [sorted(json.loads((fold_folder(output_dir, fold["fold"]) / OUT_OF_FOLD_FILE)
                                                   .read_text(encoding="utf-8"))) for fold in results["folds"]]
    return results


def paired_differences(reference: dict, other: dict, names: tuple[str, str], scores=SCORES) -> dict:
    """``other`` minus ``reference``, fold by fold, for each ``(rule, figure)`` of ``scores`` (``fold_score``): the
    differences, their mean and standard deviation, the standard error of the mean, and in how many folds
    ``other`` is ahead. Pairing by fold removes what the folds' documents do to both runs, the larger part of the
    fold-to-fold spread; runs of other folds are refused, as their differences would mean nothing."""
    if reference["fold_documents"] != other["fold_documents"]:
        raise UsageError(f"{names[1]} was cross-validated on other folds than {names[0]} (other --folds, --fold_seed "
                         "or corpus): a paired comparison needs the same documents in each fold")
    comparison = {}
    for rule, name in scores:
        differences = [fold_score(theirs, rule, name) - fold_score(ours, rule, name)
                       for ours, theirs in zip(reference["folds"], other["folds"], strict=True)]
        deviation = statistics.stdev(differences)
        comparison[f"{rule}_{name}"] = {
            "differences": differences, "mean": statistics.mean(differences), "standard_deviation": deviation,
            "standard_error": deviation / len(differences) ** 0.5,
            "folds_ahead": sum(difference > 0 for difference in differences)}
    return comparison


def fold_score(fold: dict, rule: str, name: str) -> float:
    """One fold's figure under ``rule``: micro-F1 (``f1``), macro-F1 (``macro_f1``) or one entity type's F1 (a type
    neither in the fold's gold entities nor predicted has no F1, and is refused)."""
    if name in fold[rule]:
        return fold[rule][name]
    if name not in fold["types"][rule]:
        raise UsageError(f"fold {fold['fold']} has no entity of type {name!r}, gold or predicted; its types: "
                         f"{', '.join(sorted(fold['types'][rule]))}")
    return fold["types"][rule][name]


def comparison_table(names: list[str], runs: list[dict]) -> str:
    """Each run's mean ± sd over folds, then each later run minus the first: the mean paired difference ± its
    standard error, and the folds in which it is ahead."""
    header = "| run | " + " | ".join(f"{rule} {'micro' if name == 'f1' else 'macro'}-F1" for rule, name in SCORES)
    rows = [header + " |", "| --- |" + " ---: |" * len(SCORES)]
    for name, results in zip(names, runs, strict=True):
        rows.append(f"| {name} | " + " | ".join(_mean_and_deviation(results, rule, score) for rule, score in SCORES)
                    + " |")
    for name, results in zip(names[1:], runs[1:]):
        comparison = paired_differences(runs[0], results, (names[0], name))
        rows.append(f"| {name} minus {names[0]} | " + " | ".join(
            _paired_cell(comparison[f"{rule}_{score}"]) for rule, score in SCORES) + " |")
    return "\n".join(rows)


def type_comparison_table(names: list[str], runs: list[dict], types: list[str]) -> str:
    """``comparison_table`` for entity types, a row per type and rule: each run's F1 mean ± sd over folds, then
    each later run minus the first, paired by fold."""
    rows = ["| type | rule | " + " | ".join([*names, *(f"{name} minus {names[0]}" for name in names[1:])]) + " |",
            "| --- | --- |" + " ---: |" * (2 * len(names) - 1)]
    for entity_type in types:
        for rule in ("strict", "overlap"):
            differences = [paired_differences(runs[0], results, (names[0], name), [(rule, entity_type)])
                           for name, results in zip(names[1:], runs[1:])]
            rows.append(f"| {entity_type} | {rule} | " + " | ".join(
                [*(_mean_and_deviation(results, rule, entity_type) for results in runs),
                 *(_paired_cell(comparison[f"{rule}_{entity_type}"]) for comparison in differences)]) + " |")
    return "\n".join(rows)


def _mean_and_deviation(results: dict, rule: str, name: str) -> str:
    values = [fold_score(fold, rule, name) for fold in results["folds"]]
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _paired_cell(entry: dict) -> str:
    folds = len(entry["differences"])
    return f"{entry['mean']:+.4f} ± {entry['standard_error']:.4f} ({entry['folds_ahead']}/{folds} folds ahead)"
