"""Ensembles: trained models of one label set combined into one model folder, and their scores beside their
members' on the test split.

The model itself is ``BertBiLstmCrfEnsembleForTokenClassification`` (modeling_bert_bilstm_crf.py): it travels with
the folder and loads like any model of the project. This module loads the members, checks them, writes the
folder (``write_ensemble``) and scores it and its members on the documents of the test split that the members
share (``test_scores``), at brat level as ``predict.py --gold_dir`` does. When the members are the folds of one
cross_validate.py run, its scores (and learning curve) go into the folder too, for the model card.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

from brat_ner import learning_curve
from brat_ner.cli import UsageError
from brat_ner.cross_validation import RESULTS_FILE, split_documents
from brat_ner.evaluation import score_against_gold, summary
from brat_ner.runs import check_model_folder
from brat_ner.tagging import tag_texts
from brat_ner.trust import trust_remote_code
from configuration_bert_bilstm_crf import BertBiLstmCrfEnsembleConfig

MEMBERS_FILE = "ensemble_members.json"  # the member folders and their test scores
COPIED_FILES = ("corpus.json", "run_arguments.json")  # the corpus the members were trained on: the model card's
CROSS_VALIDATION_FILES = (RESULTS_FILE, learning_curve.CURVE_FILE, learning_curve.PLOT_FILE)


def load_member(folder: str, trust: bool):
    """One member: a single model saved by train.py (or any folder whose code is trusted)."""
    from transformers import AutoModelForTokenClassification

    check_model_folder(folder, "--members")
    model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=trust_remote_code(folder, trust))
    if model.config.model_type == BertBiLstmCrfEnsembleConfig.model_type:
        raise UsageError(f"{folder} is an ensemble already: give its members instead")
    return model.float().eval()


def combine(folders: list[str], min_votes: int, trust: bool):
    """The ensemble of the models in ``folders`` (see ``from_members``); its class comes from the first
    member's code, which the members share."""
    given = {}
    for folder in folders:
        earlier = given.setdefault(Path(folder).resolve(), folder)
        if earlier is not folder:
            raise UsageError(f"--members {folder} is given twice (also as {earlier}): its votes and potentials would "
                             "count double; give each member once")
    members = [load_member(folder, trust) for folder in folders]
    labels = [labels_of(member) for member in members]
    for folder, member_labels in zip(folders[1:], labels[1:]):
        if member_labels != labels[0]:
            raise UsageError(f"--members {folder} tags {len(member_labels)} labels ({', '.join(member_labels[:4])}, "
                             f"...) and {folders[0]} {len(labels[0])} ({', '.join(labels[0][:4])}, ...): an ensemble's "
                             "members must tag the same labels in the same order")
    ensemble_class = getattr(sys.modules[type(members[0]).__module__], "BertBiLstmCrfEnsembleForTokenClassification",
                             None)
    if ensemble_class is None or not hasattr(ensemble_class, "tags"):
        raise UsageError(f"{folders[0]} was saved by a version of the model code without ensembles that vote in the "
                         "pipeline; retrain it, or copy this project's model code files into it")
    try:
        return ensemble_class.from_members(members, min_votes=min_votes)
    except ValueError as error:  # the model's refusal of these members (other labels, windows ...), the user's choice
        raise UsageError(f"--members {' '.join(folders)}: {error}") from None


def labels_of(model) -> list[str]:
    return [model.config.id2label[index] for index in range(len(model.config.id2label))]


def load_tokenizer(folder: str, trust: bool):
    """The members' tokenizer (the first member's). AutoTokenizer reads the folder's config, which names the
    model's code: without ``trust_remote_code`` it would stop to ask on the terminal."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code(folder, trust))


def write_ensemble(ensemble, tokenizer, folders: list[str], output_dir: Path) -> None:
    """Weights, config (naming the ensemble class), model code, the members' tokenizer and the first member's
    corpus files."""
    ensemble.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    for name in COPIED_FILES:
        if (Path(folders[0]) / name).is_file():
            shutil.copyfile(Path(folders[0]) / name, output_dir / name)
    cv_dir = cross_validation_folder(folders)
    for name in CROSS_VALIDATION_FILES if cv_dir else ():
        if (cv_dir / name).is_file():
            shutil.copyfile(cv_dir / name, output_dir / name)


def cross_validation_folder(folders: list[str]) -> Path | None:
    """The cross_validate.py run whose folds the members are, every fold once (``fold-0`` to ``fold-K-1`` of one
    folder whose scores cover K folds); None for any other members."""
    parents = {Path(folder).resolve().parent for folder in folders}
    names = sorted(Path(folder).resolve().name for folder in folders)
    if len(parents) != 1 or names != sorted(f"fold-{fold}" for fold in range(len(folders))):
        return None
    (parent,) = parents
    results = parent / RESULTS_FILE
    covers = results.is_file() and len(json.loads(results.read_text(encoding="utf-8"))["folds"]) == len(folders)
    return parent if covers else None


def test_scores(ensemble, folders: list[str], tokenizer, min_votes: list[int], batch_size: int) -> dict:
    """Strict and overlap scores on the test split: of each member, of their mean, and of the ensemble decoding
    by averaging (``0``) or by each vote threshold in ``min_votes``. Also the full reports of the ensemble as it
    is configured (``reports``)."""
    documents = split_documents(Path(folders[0]), "test")
    texts = [document["text"] for document in documents]

    def scored(model, **decoding) -> dict:
        predictions = tag_texts(_tagger(model, tokenizer), texts, batch_size, **decoding)
        return score_against_gold(documents, {doc["document_id"]: found for doc, found in zip(documents, predictions)})

    members = [{"folder": folder, **_summaries(scored(member))} for folder, member in zip(folders, ensemble.members)]
    configured = ensemble.config.ensemble_min_votes
    combinations, reports = {}, None
    for votes in sorted({0, configured, *min_votes}):
        votes_reports = scored(ensemble, min_votes=votes)
        combinations["average" if votes == 0 else f"at least {votes} votes"] = _summaries(votes_reports)
        if votes == configured:
            reports = votes_reports
    mean = {rule: {name: statistics.mean(member[rule][name] for member in members) for name in members[0][rule]}
            for rule in ("strict", "overlap")}
    return {"documents": len(documents), "members": members, "member_mean": mean, "ensemble": combinations,
            "reports": reports}


def _tagger(model, tokenizer):
    """The model's own pipeline, from the code the model was loaded with."""
    return sys.modules[type(model).__module__].BertBiLstmCrfNerPipeline(model=model, tokenizer=tokenizer,
                                                                         device="cpu")


def _summaries(reports: dict) -> dict:
    return {rule: summary(report) for rule, report in reports.items()}


def scores_table(scores: dict) -> str:
    """The terminal's table: each member, their mean, and the ensemble's decodings, strict and overlap F1."""
    rows = ["| | strict micro-F1 | strict macro-F1 | overlap micro-F1 | overlap macro-F1 |",
            "| --- | ---: | ---: | ---: | ---: |"]
    rows += [f"| member {member['folder']} | {_cells(member)} |" for member in scores["members"]]
    rows.append(f"| mean of the members | {_cells(scores['member_mean'])} |")
    rows += [f"| ensemble, {name} | {_cells(summaries)} |" for name, summaries in scores["ensemble"].items()]
    return "\n".join(rows)


def _cells(summaries: dict) -> str:
    return " | ".join(f"{summaries[rule][name]:.4f}" for rule in ("strict", "overlap") for name in ("f1", "macro_f1"))


def members_record(scores: dict) -> str:
    return json.dumps({key: value for key, value in scores.items() if key != "reports"}, indent=2,
                      ensure_ascii=False)
