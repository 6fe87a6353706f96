"""k-fold cross-validation: the folds (deterministic, by document group, disjoint, covering the training and
validation documents, the test split untouched), the learning curve's smaller training sets (nested, whole
groups), and cross_validate.py (one model per fold, out-of-fold scores, a stopped run resumed at the fold where it
stopped, a learning curve over shares of the training documents, models learnt from that never saw the scored
fold) and compare_cv.py (runs paired fold by fold)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from brat_ner import cross_validation, learning_curve
from brat_ner.evaluation import score_against_gold
from conftest import REPO, TINY_BERT, refusal, run_script
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


def fold_splits(data_dir: Path, folds: int, seed: int = 42, fraction: float = 1.0) -> list[dict[str, list[str]]]:
    splits = []
    for fold in range(folds):
        config = ruijin_ner.BratNerConfig(name="brat", folds=folds, fold=fold, fold_seed=seed, train_fraction=fraction)
        documents = ruijin_ner.split_corpus(data_dir, config)
        splits.append({str(split): sorted(document.document_id for document in split_documents)
                       for split, split_documents in documents.items()})
    return splits


def check_folds(data_dir: Path, folds: int) -> None:
    plain = {str(split): sorted(document.document_id for document in documents) for split, documents in
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


def test_a_share_of_the_training_documents_is_whole_groups_nested_and_deterministic(tmp_path):
    corpus = grouped_corpus(tmp_path / "corpus")
    full = fold_splits(corpus, 3)
    shares = {fraction: fold_splits(corpus, 3, fraction=fraction) for fraction in (0.25, 0.5, 0.75)}
    for fold, whole in enumerate(full):
        smaller = set()
        for fraction, splits in shares.items():
            part = splits[fold]
            assert part["validation"] == whole["validation"] and part["test"] == whole["test"]  # scored alike
            kept = set(part["train"])
            assert smaller <= kept <= set(whole["train"]) and kept != smaller  # nested, growing
            groups = {name.split("_")[0] for name in kept}
            assert kept == {name for name in whole["train"] if name.split("_")[0] in groups}  # whole groups
            assert fraction * len(whole["train"]) <= len(kept) < fraction * len(whole["train"]) + 4
            smaller = kept
    assert {fraction: fold_splits(corpus, 3, fraction=fraction) for fraction in shares} == shares  # deterministic
    assert fold_splits(corpus, 3, seed=1, fraction=0.5) != shares[0.5]  # another seed, other documents
    for fraction in (0, 1.5):
        with pytest.raises(ValueError, match="train_fraction must be above 0 and at most 1"):
            ruijin_ner.BratNerConfig(name="brat", train_fraction=fraction)


@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"the Ruijin corpus is not at {REAL_CORPUS}")
def test_the_ruijin_corpus_in_five_folds():
    check_folds(REAL_CORPUS, 5)


def cross_validate(output_dir: Path, *options: str, succeeds: bool = True) -> subprocess.CompletedProcess:
    arguments = [sys.executable, "cross_validate.py", *options, "--folds", "2", "--output_dir", str(output_dir),
                 "--data_dir", "data/sample", "--encoder_config", str(TINY_BERT), "--tokenizer_name", str(TINY_BERT),
                 "--window_chars", "62", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                 "--lstm_hidden_size", "8", "--use_cpu", "true", "--seed", "7"]
    completed = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, timeout=900,
                               env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert (completed.returncode == 0) == succeeds, completed.stderr[-4000:]
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
    # No fold's model was chosen on the documents it is scored on: each is its run's last weights.
    assert results["checkpoint"] == cross_validation.CHECKPOINT_CHOICE
    for fold in range(2):
        folder = cross_validation.fold_folder(output_dir, fold)
        arguments = json.loads((folder / "run_arguments.json").read_text(encoding="utf-8"))
        assert arguments["load_best_model_at_end"] is False and arguments["early_stopping_patience"] == 0

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


@pytest.mark.parametrize("options", [["--load_best_model_at_end", "true"], ["--load_best_model_at_end"],
                                     ["--early_stopping_patience", "3"]])
def test_cross_validate_refuses_choosing_a_folds_model_on_its_scored_documents(tmp_path, options):
    completed = run_script(["cross_validate.py", "--folds", "2", "--output_dir", str(tmp_path / "cv"), *options],
                           succeeds=False)
    assert completed.returncode == 2 and completed.stderr.strip() == (
        f"cross_validate.py: {options[0]} would choose each fold's model on the documents it is scored on; each "
        "fold's model is its last weights")
    assert not (tmp_path / "cv").exists()


def test_cross_validate_refuses_more_folds_than_groups_and_folders_of_the_user_before_any_fold(tmp_path):
    corpus = grouped_corpus(tmp_path / "corpus")
    too_many = run_script(["cross_validate.py", "--folds", "10", "--output_dir", str(tmp_path / "cv"), "--data_dir",
                           str(corpus)], succeeds=False)
    assert too_many.returncode == 2 and "cross_validate.py: 10 folds need at least 10 document groups" in \
        too_many.stderr and "fold 0" not in too_many.stdout
    assert not (tmp_path / "cv").exists()
    users = tmp_path / "notes"
    users.mkdir()
    (users / "notes.txt").write_text("mine", encoding="utf-8")
    for output_dir in (users, corpus / "cv"):
        refused = run_script(["cross_validate.py", "--folds", "2", "--output_dir", str(output_dir), "--data_dir",
                              str(corpus)], succeeds=False)
        assert refused.returncode == 2 and refused.stderr.startswith(f"cross_validate.py: --output_dir {output_dir} ")
    assert [path.name for path in users.iterdir()] == ["notes.txt"] and not (corpus / "cv").exists()


def training_documents(model_dir: Path) -> set[str]:
    return {document["document_id"] for document in cross_validation.split_documents(model_dir, "train")}


@pytest.fixture(scope="module")
def learning_curve_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2-fold cross-validation at shares 1 and 0.5 of the training documents, budgets scaled: (folder, run)."""
    output_dir = tmp_path_factory.mktemp("learning-curve") / "cv"
    return output_dir, cross_validate(output_dir, "--train_fractions", "1", "0.5", "--scale_time_budget",
                                      "--time_budget_minutes", "10")


def test_cross_validate_draws_a_learning_curve_over_shares_of_the_training_documents(learning_curve_run):
    output_dir, completed = learning_curve_run
    assert "4 folds to train, at most 5, 10 minutes each: about 30 minutes" in completed.stdout
    assert "/300 s of the time budget" in completed.stderr and "/600 s of the time budget" in completed.stderr  # scaled
    curve = json.loads((output_dir / learning_curve.CURVE_FILE).read_text(encoding="utf-8"))["points"]
    assert [point["train_fraction"] for point in curve] == [0.5, 1.0]
    half, whole = output_dir / "fraction-0.5", output_dir
    for fold in range(2):
        half_fold, whole_fold = cross_validation.fold_folder(half, fold), cross_validation.fold_folder(whole, fold)
        arguments = json.loads((half_fold / "run_arguments.json").read_text(encoding="utf-8"))
        assert arguments["train_fraction"] == 0.5
        assert training_documents(half_fold) < training_documents(whole_fold)  # fewer, and among the same
        assert cross_validation.out_of_fold_documents(half_fold) == cross_validation.out_of_fold_documents(whole_fold)
    for point, folder in zip(curve, (half, whole), strict=True):
        results = json.loads((folder / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))
        assert point["mean"] == results["mean"] and point["standard_deviation"] == results["standard_deviation"]
        assert point["training_documents"] == sum(len(training_documents(cross_validation.fold_folder(folder, fold)))
                                                  for fold in range(2)) / 2
    with Image.open(output_dir / learning_curve.PLOT_FILE) as image:
        assert image.format == "PNG" and image.width > 400
    assert "| 0.5 |" in completed.stdout and str(output_dir / learning_curve.PLOT_FILE) in completed.stdout


def test_the_learning_curve_table_gives_documents_per_fold_to_one_decimal():
    scores = {rule: {name: 0.5 for name in ("f1", "macro_f1")} for rule in ("strict", "overlap")}
    points = [{"train_fraction": fraction, "training_documents": documents, "mean": scores,
               "standard_deviation": scores} for fraction, documents in ((0.5, 8 / 3), (1.0, 222.0))]
    rows = learning_curve.curve_table(points).splitlines()[2:]
    assert [row.split(" | ")[:2] for row in rows] == [["| 0.5", "2.7"], ["| 1", "222"]]


def test_the_folds_ensemble_carries_the_cross_validated_scores_and_curve_into_its_model_card(learning_curve_run,
                                                                                             tmp_path):
    output_dir, _ = learning_curve_run
    ensemble_dir = tmp_path / "ensemble"
    run_script(["ensemble.py", "--members", str(output_dir / "fold-0"), str(output_dir / "fold-1"), "--output_dir",
                str(ensemble_dir)])
    run_script(["push_to_hub.py", "--model_dir", str(ensemble_dir), "--repo_id", "user/cv-ensemble", "--dry_run",
                str(tmp_path / "repo")])
    card = (tmp_path / "repo" / "README.md").read_text(encoding="utf-8")
    whole_results = json.loads((output_dir / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))
    strict = (whole_results["mean"]["strict"]["f1"], whole_results["standard_deviation"]["strict"]["f1"])
    assert "2-fold cross-validation" in card and f"| strict micro-F1 | {strict[0]:.3f} ± {strict[1]:.3f} |" in card
    assert "(learning_curve.png)" in card and (tmp_path / "repo" / learning_curve.PLOT_FILE).is_file()


def test_a_folds_run_learns_only_from_models_that_never_saw_its_fold(learning_curve_run, trained_model, tmp_path):
    """A teacher, a silver tagger or a model trained further that saw a fold's documents would carry their tags
    into the model scored on them: the model of another fold, an ensemble of the folds' models and a model of the
    whole training split are refused in one line before anything is written; ``{fold}`` gives each fold its own
    model, the same fold's, and the folds train."""
    output_dir, _ = learning_curve_run
    fold_run = ["--data_dir", "data/sample", "--tokenizer_name", str(TINY_BERT), "--window_chars", "62",
                "--use_cpu", "true", "--folds", "2", "--output_dir", str(tmp_path / "refused")]
    new_model = ["--encoder_config", str(TINY_BERT), "--lstm_hidden_size", "8"]
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    note = "患者口服二甲双胍0.5 g，每日三次，空腹血糖7.0 mmol/L。\n"  # not a corpus document
    (unlabelled / "note.txt").write_text(note * 20, encoding="utf-8")
    line = refusal("train.py", *fold_run, *new_model, "--fold", "1", "--teacher", str(output_dir / "fold-0"))
    assert line.startswith(f"train.py: --teacher {output_dir / 'fold-0'} was trained on data/sample with fold 0 "
                           "of 2") and "documents of fold 1 of 2, which this run is scored on" in line
    ensemble_dir = tmp_path / "ensemble"
    run_script(["ensemble.py", "--members", str(output_dir / "fold-0"), str(output_dir / "fold-1"), "--output_dir",
                str(ensemble_dir)])
    line = refusal("train.py", *fold_run, *new_model, "--fold", "0", "--silver_model", str(ensemble_dir),
                   "--extra_text_dirs", str(unlabelled))
    assert f"--silver_model {ensemble_dir} learned from {output_dir / 'fold-1'}, which was trained on data/sample " \
        "with fold 1 of 2" in line
    whole_split_model, _ = trained_model
    line = refusal("train.py", *fold_run, "--fold", "0", "--model_name_or_path", str(whole_split_model))
    assert f"{whole_split_model} was trained on data/sample with its training split" in line
    assert not (tmp_path / "refused").exists()

    self_training = tmp_path / "cv-self-training"
    cross_validate(self_training, "--silver_model", str(output_dir / "fold-{fold}"), "--extra_text_dirs",
                   str(unlabelled), "--silver_threshold", "0")
    for fold in range(2):
        arguments = json.loads((self_training / f"fold-{fold}" / "run_arguments.json").read_text(encoding="utf-8"))
        assert arguments["silver_model"] == str(output_dir / f"fold-{fold}")
    assert len(json.loads((self_training / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))["folds"]) == 2


def test_compare_cv_pairs_runs_fold_by_fold_and_refuses_runs_of_other_folds(learning_curve_run, tmp_path):
    """The whole training split against its half, on the same folds: each run's mean ± sd, and the paired
    difference (mean ± standard error, folds ahead) as the two runs' per-fold scores give it."""
    output_dir, _ = learning_curve_run
    half = output_dir / "fraction-0.5"
    completed = run_script(["compare_cv.py", "--runs", str(output_dir), str(half)])
    scores = [json.loads((folder / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))["folds"]
              for folder in (output_dir, half)]
    lines = completed.stdout.splitlines()
    for results, folder in zip(scores, (output_dir, half), strict=True):
        strict = [fold["strict"]["f1"] for fold in results]
        mean, deviation = sum(strict) / 2, abs(strict[0] - strict[1]) / 2 ** 0.5
        assert f"| {folder} | {mean:.4f} ± {deviation:.4f} |" in completed.stdout
    differences = [ours["overlap"]["macro_f1"] - theirs["overlap"]["macro_f1"]
                   for theirs, ours in zip(*scores, strict=True)]
    mean, error = sum(differences) / 2, abs(differences[0] - differences[1]) / 2 ** 0.5 / 2 ** 0.5
    ahead = sum(difference > 0 for difference in differences)
    (paired,) = [line for line in lines if line.startswith(f"| {half} minus {output_dir} |")]
    assert paired.endswith(f"| {mean:+.4f} ± {error:.4f} ({ahead}/2 folds ahead) |")

    # The same run with its folds in the other order validated other documents in each fold: refused.
    swapped = tmp_path / "swapped"
    for fold in range(2):
        shutil.copytree(cross_validation.fold_folder(output_dir, 1 - fold), cross_validation.fold_folder(swapped, fold))
    shutil.copy(output_dir / cross_validation.RESULTS_FILE, swapped / cross_validation.RESULTS_FILE)
    refused = run_script(["compare_cv.py", "--runs", str(output_dir), str(swapped)], succeeds=False)
    assert refused.stderr.strip().splitlines()[-1] == (
        f"compare_cv.py: {swapped} was cross-validated on other folds than {output_dir} (other --folds, --fold_seed or "
        "corpus): a paired comparison needs the same documents in each fold")
    unfinished = run_script(["compare_cv.py", "--runs", str(output_dir), str(tmp_path)], succeeds=False)
    assert f"{tmp_path}: no {cross_validation.RESULTS_FILE}; run cross_validate.py" in unfinished.stderr


def test_compare_cv_pairs_entity_types_fold_by_fold(learning_curve_run, tmp_path):
    """With --types, each type's F1 per fold (strict and overlap, as the fold's out-of-fold entities score anew)
    is paired like the headline figures; a type a fold lacks, or a results file without per-type scores, is
    refused in one line."""
    output_dir, _ = learning_curve_run
    half = output_dir / "fraction-0.5"
    completed = run_script(["compare_cv.py", "--runs", str(output_dir), str(half), "--types", "Test", "SideEff"])
    lines = completed.stdout.splitlines()
    assert f"| type | rule | {output_dir} | {half} | {half} minus {output_dir} |" in lines

    def type_f1(run: Path, rule: str, name: str) -> list[float]:
        scores = []
        for fold in range(2):
            folder = cross_validation.fold_folder(run, fold)
            predicted = json.loads((folder / cross_validation.OUT_OF_FOLD_FILE).read_text(encoding="utf-8"))
            report = score_against_gold(cross_validation.out_of_fold_documents(folder), predicted)[rule]
            scores.append(report[name]["f1-score"])
        return scores

    for name in ("Test", "SideEff"):
        for rule in ("strict", "overlap"):
            ours, theirs = type_f1(output_dir, rule, name), type_f1(half, rule, name)
            cells = [f"{sum(scores) / 2:.4f} ± {abs(scores[0] - scores[1]) / 2 ** 0.5:.4f}"
                     for scores in (ours, theirs)]
            differences = [b - a for a, b in zip(ours, theirs, strict=True)]
            cells.append(f"{sum(differences) / 2:+.4f} ± {abs(differences[0] - differences[1]) / 2:.4f} "
                         f"({sum(difference > 0 for difference in differences)}/2 folds ahead)")
            assert f"| {name} | {rule} | " + " | ".join(cells) + " |" in lines

    unknown = run_script(["compare_cv.py", "--runs", str(output_dir), str(half), "--types", "Sideeff"],
                         succeeds=False)
    refusal_line = unknown.stderr.strip().splitlines()[-1]
    assert refusal_line.startswith("compare_cv.py: fold 0 has no entity of type 'Sideeff', gold or predicted; its "
                                   "types: ") and "SideEff" in refusal_line.split("its types: ")[1].split(", ")
    earlier = tmp_path / "earlier"
    shutil.copytree(output_dir, earlier, ignore=shutil.ignore_patterns("fraction-*"))
    results = json.loads((earlier / cross_validation.RESULTS_FILE).read_text(encoding="utf-8"))
    for fold in results["folds"]:
        del fold["types"]
    (earlier / cross_validation.RESULTS_FILE).write_text(json.dumps(results), encoding="utf-8")
    refused = run_script(["compare_cv.py", "--runs", str(output_dir), str(earlier), "--types", "Test"],
                         succeeds=False)
    assert refused.stderr.strip().splitlines()[-1] == (
        f"compare_cv.py: {earlier / cross_validation.RESULTS_FILE} has no per-type scores (written before they were "
        "kept): rerun its cross_validate.py command, which scores the finished folds anew")


def test_a_fold_whose_model_was_chosen_on_its_scored_documents_is_not_scored_again(learning_curve_run, tmp_path):
    """A fold trained by cross_validate.py before it took each fold's last weights (best checkpoint on the fold's
    own documents) is refused when the cross-validation is rerun, not mixed with folds trained without it."""
    output_dir, _ = learning_curve_run
    earlier = tmp_path / "earlier"
    for fold in range(2):
        shutil.copytree(cross_validation.fold_folder(output_dir, fold), cross_validation.fold_folder(earlier, fold))
    arguments_path = cross_validation.fold_folder(earlier, 0) / "run_arguments.json"
    arguments = json.loads(arguments_path.read_text(encoding="utf-8"))
    arguments_path.write_text(json.dumps({**arguments, "load_best_model_at_end": True}), encoding="utf-8")
    refused = cross_validate(earlier, succeeds=False)
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"cross_validate.py: fold 0 in {cross_validation.fold_folder(earlier, 0)}: its model was chosen on the "
        "documents it is scored on (--load_best_model_at_end on its validation split")
