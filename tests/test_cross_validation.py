"""k-fold cross-validation: the folds (deterministic, by document group, disjoint, covering the training and
validation documents, the test split untouched) and cross_validate.py (one model per fold, out-of-fold scores,
a stopped run resumed at the fold where it stopped)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from brat_ner import cross_validation
from brat_ner.evaluation import score_against_gold
from conftest import REPO, TINY_BERT
from dataset_script import ruijin_ner
from dataset_script.brat import BratFormatError

REAL_CORPUS = REPO.parent / "shared" / "data" / "ruijin_round1" / "train"


def grouped_corpus(folder: Path) -> Path:
    """24 documents in 9 groups of 1 to 4 parts (``group_part``), each with one entity."""
    folder.mkdir()
    for group in range(9):
        for part in range(1 + group % 4):
            (folder / f"{group}_{part}.txt").write_text("患者口服二甲双胍。\n", encoding="utf-8")
            (folder / f"{group}_{part}.ann").write_text("T1\tDrug 4 8\t二甲双胍\n", encoding="utf-8")
    return folder


def fold_splits(data_dir: Path, folds: int, seed: int = 42) -> list[dict[str, list[str]]]:
    splits = []
    for fold in range(folds):
        config = ruijin_ner.BratNerConfig(name="brat", folds=folds, fold=fold, fold_seed=seed)
        pairs = ruijin_ner.split_corpus(data_dir, config)
        splits.append({str(split): sorted(txt.stem for txt, _ in documents) for split, documents in pairs.items()})
    return splits


def check_folds(data_dir: Path, folds: int) -> None:
    plain = {str(split): sorted(txt.stem for txt, _ in documents) for split, documents in
             ruijin_ner.split_corpus(data_dir, ruijin_ner.BratNerConfig(name="brat")).items()}
    splits = fold_splits(data_dir, folds)
    validating = [split["validation"] for split in splits]
    pooled = sorted(plain["train"] + plain["validation"])
    assert sorted(sum(validating, [])) == pooled  # disjoint, and every document in exactly one fold
    for split in splits:
        assert sorted(split["train"] + split["validation"]) == pooled and split["test"] == plain["test"]
        groups = [{name.split("_")[0] for name in split[part]} for part in ("train", "validation")]
        assert not groups[0] & groups[1]  # no source document on both sides
    assert fold_splits(data_dir, folds) == splits  # deterministic for the seed
    sizes = [len(documents) for documents in validating]
    assert max(sizes) - min(sizes) <= 4  # at most the largest group apart


def test_folds_are_deterministic_grouped_disjoint_and_cover_every_document(tmp_path):
    corpus = grouped_corpus(tmp_path / "corpus")
    check_folds(corpus, 3)
    assert fold_splits(corpus, 3, seed=1) != fold_splits(corpus, 3, seed=42)  # another seed, other folds
    with pytest.raises(BratFormatError, match="12 folds need at least 12 document groups"):
        fold_splits(corpus, 12)
    with pytest.raises(ValueError, match="folds must be 0"):
        ruijin_ner.BratNerConfig(name="brat", folds=3, fold=3)


@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"the Ruijin corpus is not at {REAL_CORPUS}")
def test_the_ruijin_corpus_in_five_folds():
    check_folds(REAL_CORPUS, 5)


def cross_validate(output_dir: Path) -> subprocess.CompletedProcess:
    arguments = [sys.executable, "cross_validate.py", "--folds", "2", "--output_dir", str(output_dir),
                 "--data_dir", "data/sample", "--encoder_config", str(TINY_BERT), "--tokenizer_name", str(TINY_BERT),
                 "--window_chars", "62", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                 "--lstm_hidden_size", "8", "--use_cpu", "true", "--seed", "7"]
    completed = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, timeout=900,
                               env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def test_cross_validate_scores_each_fold_out_of_fold_and_resumes_where_it_stopped(tmp_path):
    output_dir = tmp_path / "cv"
    cross_validate(output_dir)
    results = json.loads((output_dir / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))
    folds = [cross_validation.out_of_fold_documents(cross_validation.fold_folder(output_dir, fold))
             for fold in range(2)]
    identifiers = [{document["document_id"] for document in documents} for documents in folds]
    assert not identifiers[0] & identifiers[1] and [fold["documents"] for fold in results["folds"]] == \
        [len(documents) for documents in folds]
    for rule in ("strict", "overlap"):
        for name in ("f1", "macro_f1"):
            scores = [fold[rule][name] for fold in results["folds"]]
            assert results["mean"][rule][name] == pytest.approx(sum(scores) / 2)
    predicted = {**json.loads((output_dir / "fold-0" / cross_validation.OUT_OF_FOLD_FILE).read_text()),
                 **json.loads((output_dir / "fold-1" / cross_validation.OUT_OF_FOLD_FILE).read_text())}
    assert set(predicted) == identifiers[0] | identifiers[1]
    pooled_support = results["pooled_reports"]["strict"]["micro avg"]["support"]
    fold_supports = [score_against_gold(documents, {document["document_id"]: predicted[document["document_id"]]
                                                    for document in documents})["strict"]["micro avg"]["support"]
                     for documents in folds]
    assert pooled_support == sum(fold_supports) and min(fold_supports) > 0  # both folds' gold entities, pooled

    # Stopped after its first fold, before the second was scored: the rerun keeps the first fold as it is and
    # finishes the second (train.py finds its run finished or resumes it; its documents are tagged anew).
    first_fold = {path: path.read_bytes() for path in (output_dir / "fold-0").rglob("*") if path.is_file()}
    (output_dir / "fold-1" / cross_validation.OUT_OF_FOLD_FILE).unlink()
    (output_dir / cross_validation.RESULTS_FILE).unlink()
    rerun = cross_validate(output_dir)
    assert "fold 0 is done" in rerun.stdout and "fold 1 of 2" in rerun.stdout
    assert {path: path.read_bytes() for path in (output_dir / "fold-0").rglob("*") if path.is_file()} == first_fold
    rescored = json.loads((output_dir / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))["folds"]
    assert rescored[0] == results["folds"][0] and rescored[1]["fold"] == 1


def test_cross_validate_refuses_a_single_fold_in_one_line(tmp_path):
    completed = subprocess.run([sys.executable, "cross_validate.py", "--folds", "1", "--output_dir",
                                str(tmp_path / "cv")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 2 and completed.stderr.strip() == \
        "cross_validate.py: --folds must be at least 2, got 1"
    assert not (tmp_path / "cv").exists()
