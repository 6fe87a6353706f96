"""Ensembles (BertBiLstmCrfEnsembleForTokenClassification, ensemble.py): copies of one model predict what it
predicts, by averaging and by votes; the folder saves, reloads through AutoModel with remote code, and runs in
the pipeline, predict.py (float and int8) and push_to_hub.py; voting keeps the entities with enough votes."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from brat_ner import fast_inference
from conftest import REPO, SAMPLE, SCRIPT_ENVIRONMENT, run_predict, run_script, sample_texts, small_training, tiny_model
from modeling_bert_bilstm_crf import BertBiLstmCrfEnsembleForTokenClassification, _winning_spans


@pytest.fixture(scope="module")
def member(trained_model):
    """(folder, model, tokenizer, module) of the session's trained model, loaded as a user loads it."""
    model_dir, _ = trained_model
    model = AutoModelForTokenClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    return model_dir, model, tokenizer, sys.modules[type(model).__module__]


def tagged(module, model, tokenizer) -> list[list[dict]]:
    ner = module.BertBiLstmCrfNerPipeline(model=model, tokenizer=tokenizer, device="cpu")
    return [ner(text) for text in sample_texts(SAMPLE)]


# Two or four copies: their mean is then each copy's value to the bit (x + x = 2x exactly), so the scores too
# must be equal, not close.
@pytest.mark.parametrize("copies, min_votes", [(2, 0), (4, 0), (2, 1), (2, 2), (4, 3)])
def test_copies_of_one_model_predict_exactly_what_it_predicts(member, copies, min_votes):
    _, model, tokenizer, module = member
    ensemble = module.BertBiLstmCrfEnsembleForTokenClassification.from_members([model] * copies, min_votes)
    expected = tagged(module, model, tokenizer)
    assert sum(map(len, expected)) > 0
    assert tagged(module, ensemble, tokenizer) == expected  # entities, offsets and scores
    ids = tokenizer(sample_texts(SAMPLE)[0][:60], return_tensors="pt")["input_ids"]
    alone, together = model.decode(ids, return_marginals=True), ensemble.decode(ids, return_marginals=True)
    assert torch.equal(alone.marginals, together.marginals)
    if not min_votes:  # votes rewrite an orphan I- tag as B-: the same entities, not always the same tag ids
        assert torch.equal(alone.tags, together.tags)


def test_votes_keep_entities_with_enough_votes_and_the_stronger_of_two_overlapping():
    votes = {("Drug", 0, 3): 2, ("Test", 2, 5): 3, ("Drug", 6, 8): 1, ("Disease", 9, 12): 2, ("Test", 9, 12): 2}
    # Drug 0-3 loses to the overlapping Test 2-5 (3 votes); Drug 6-8 has too few; of the two with 2 votes on the
    # same characters, the first ranked (the same start and length: the order of the sort, stable) is kept.
    assert _winning_spans(votes, 2) == [("Test", 2, 5), ("Disease", 9, 12)]
    assert _winning_spans(votes, 1) == [("Test", 2, 5), ("Disease", 9, 12), ("Drug", 6, 8)]
    assert _winning_spans(votes, 4) == []


def test_members_of_other_label_sets_are_refused():
    labels = ["O", "B-Drug", "I-Drug"]
    first = tiny_model(num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    second = tiny_model(num_labels=3, id2label=dict(enumerate(["O", "B-Test", "I-Test"])),
                        label2id={"O": 0, "B-Test": 1, "I-Test": 2})
    with pytest.raises(ValueError, match="the members differ in id2label"):
        BertBiLstmCrfEnsembleForTokenClassification.from_members([first, second])
    with pytest.raises(ValueError, match="min_votes must be between 0 and the number of members"):
        BertBiLstmCrfEnsembleForTokenClassification.from_members([first, first], min_votes=3)


@pytest.fixture(scope="module")
def member_copy(member, tmp_path_factory) -> Path:
    """A second folder of the same model: the same member given twice is refused."""
    model_dir, *_ = member
    return shutil.copytree(model_dir, tmp_path_factory.mktemp("copy") / "model",
                           ignore=shutil.ignore_patterns("checkpoint-*"))


@pytest.fixture(scope="module")
def ensemble_folder(member, member_copy, tmp_path_factory):
    model_dir, *_ = member
    output_dir = tmp_path_factory.mktemp("ensemble") / "model"
    completed = run_script(["ensemble.py", "--members", str(model_dir), str(member_copy), "--output_dir",
                            str(output_dir), "--compare_min_votes", "1", "2"])
    return output_dir, completed


def ensemble_error(*members: Path, tmp_path: Path) -> str:
    """The one line with which ensemble.py refuses ``members`` (exit status 2, no traceback, no folder)."""
    completed = run_script(["ensemble.py", "--members", *map(str, members), "--output_dir", str(tmp_path / "out")],
                           succeeds=False)
    assert completed.returncode == 2 and not (tmp_path / "out").exists()
    return completed.stderr.strip().splitlines()[-1]


def test_ensemble_py_refuses_members_that_are_not_models_or_duplicates_or_of_other_labels(member, member_copy,
                                                                                           tmp_path):
    model_dir, *_ = member
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "todo.txt").write_text("mine", encoding="utf-8")
    assert ensemble_error(model_dir, not_a_model, tmp_path=tmp_path) == \
        f"ensemble.py: --members {not_a_model}: not a model folder (no config.json there)"
    assert ensemble_error(model_dir, tmp_path / "missing", tmp_path=tmp_path) == \
        f"ensemble.py: --members {tmp_path / 'missing'}: no such folder"
    assert ensemble_error(model_dir, member_copy, model_dir, tmp_path=tmp_path) == (
        f"ensemble.py: --members {model_dir} is given twice (also as {model_dir}): its votes and potentials would "
        "count double; give each member once")
    relabelled = shutil.copytree(member_copy, tmp_path / "relabelled")
    config = json.loads((relabelled / "config.json").read_text(encoding="utf-8"))
    labels = [config["id2label"][str(index)] for index in range(len(config["id2label"]))]
    swapped = [labels[0], labels[2], labels[1], *labels[3:]]
    config["id2label"] = {str(index): label for index, label in enumerate(swapped)}
    config["label2id"] = {label: index for index, label in enumerate(swapped)}
    (relabelled / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert ensemble_error(model_dir, relabelled, tmp_path=tmp_path).startswith(
        f"ensemble.py: --members {relabelled} tags {len(labels)} labels ({', '.join(swapped[:4])}, ...) and "
        f"{model_dir} {len(labels)} ({', '.join(labels[:4])}, ...): an ensemble's members must tag the same labels")


def test_ensemble_py_scores_the_members_and_the_ensemble_on_the_test_split(ensemble_folder):
    output_dir, completed = ensemble_folder
    assert "| mean of the members |" in completed.stdout and "| ensemble, at least 2 votes |" in completed.stdout
    record = json.loads((output_dir / "ensemble_members.json").read_text(encoding="utf-8"))
    first, second = record["members"]
    assert first["strict"] == second["strict"] == record["member_mean"]["strict"]
    # Two copies of one model: each decoding of the ensemble scores what the model scores.
    assert set(record["ensemble"]) == {"average", "at least 1 votes", "at least 2 votes"}
    for scores in record["ensemble"].values():
        assert scores == {rule: first[rule] for rule in ("strict", "overlap")}
    report = json.loads((output_dir / "test_report.json").read_text(encoding="utf-8"))
    assert report["micro avg"]["f1-score"] == pytest.approx(first["strict"]["f1"])
    assert json.loads((output_dir / "run_record.json").read_text())["script"] == "ensemble.py"
    assert (output_dir / "model.safetensors").stat().st_mode & 0o044  # readable by others under umask 022


def test_the_ensemble_folder_loads_and_predicts_like_its_member(member, ensemble_folder, tmp_path, monkeypatch):
    model_dir, *_ = member
    output_dir, _ = ensemble_folder
    # Both folders are named "model", so their code is one module: after loading the member, only a config class
    # of the ensemble's own (BertBiLstmCrfEnsembleConfig) keeps the auto class from building a single model.
    model = AutoModelForTokenClassification.from_pretrained(output_dir, trust_remote_code=True)
    assert type(model).__name__ == "BertBiLstmCrfEnsembleForTokenClassification" and len(model.members) == 2
    texts = sample_texts(SAMPLE)
    single = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    combined = pipeline("token-classification", model=str(output_dir), trust_remote_code=True, device="cpu")
    assert [combined(text) for text in texts] == [single(text) for text in texts]

    # predict.py takes the folder as the project's own (no --trust_remote_code) and writes the same files.
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE),
                "--output_dir", str(tmp_path / "single"))
    run_predict(monkeypatch, "--model_name_or_path", str(output_dir), "--input_dir", str(SAMPLE),
                "--output_dir", str(tmp_path / "ensemble"))
    run_predict(monkeypatch, "--model_name_or_path", str(output_dir), "--input_dir", str(SAMPLE),
                "--output_dir", str(tmp_path / "int8"), "--quantize", "int8")
    for path in sorted((tmp_path / "single").glob("*.ann")):
        assert (tmp_path / "ensemble" / path.name).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
        assert (tmp_path / "int8" / path.name).is_file()


def test_push_to_hub_describes_the_ensemble(ensemble_folder, tmp_path):
    output_dir, _ = ensemble_folder
    run_script(["push_to_hub.py", "--model_dir", str(output_dir), "--repo_id", "user/ensemble", "--dry_run",
                str(tmp_path / "repo")])
    card = (tmp_path / "repo" / "README.md").read_text(encoding="utf-8")
    assert "an ensemble of 2 such models, averaging their CRF potentials before one Viterbi pass" in card


def test_ensemble_py_never_replaces_a_folder_it_did_not_write(member, member_copy, ensemble_folder, tmp_path):
    model_dir, *_ = member
    output_dir, _ = ensemble_folder
    arguments = ["ensemble.py", "--members", str(model_dir), str(member_copy), "--output_dir"]
    again = run_script([*arguments, str(output_dir)], succeeds=False)
    assert again.returncode == 2 and "exists and is not empty; give another --output_dir or --overwrite_output_dir" \
        in again.stderr
    users = tmp_path / "notes"
    users.mkdir()
    (users / "todo.txt").write_text("mine", encoding="utf-8")
    refused = run_script([*arguments, str(users), "--overwrite_output_dir"], succeeds=False)
    assert "was not written by ensemble.py" in refused.stderr and (users / "todo.txt").read_text() == "mine"
    too_many = run_script([*arguments, str(tmp_path / "new"), "--min_votes", "3"], succeeds=False)
    assert "a vote threshold above the number of members (2) keeps nothing" in too_many.stderr
    assert not (tmp_path / "new").exists()


def test_onnx_runs_an_ensemble_that_averages_or_votes(member, tmp_path):
    """The ONNX path exports the ensemble's ``emissions``, each member's: the pipeline then decodes them the one way
    the model does, averaging or (``min_votes``, a pipeline parameter) voting, and finds what torch finds."""
    _, model, tokenizer, module = member
    texts = sample_texts(SAMPLE)
    ensemble = module.BertBiLstmCrfEnsembleForTokenClassification.from_members([model] * 2)
    in_torch = module.BertBiLstmCrfNerPipeline(model=ensemble, tokenizer=tokenizer, device="cpu")
    expected = {votes: [[(e["entity_group"], e["start"], e["end"]) for e in in_torch(text, min_votes=votes)]
                        for text in texts] for votes in (0, 1, 2)}
    in_onnx = module.BertBiLstmCrfNerPipeline(model=ensemble, tokenizer=tokenizer, device="cpu")
    fast_inference.use_onnx(in_onnx, tmp_path / "ensemble.onnx")
    for votes, spans in expected.items():
        assert sum(map(len, spans)) > 0
        assert [[(e["entity_group"], e["start"], e["end"]) for e in in_onnx(text, min_votes=votes)]
                for text in texts] == spans
    assert ensemble.config.ensemble_min_votes == 0  # decoding never changes the config


def test_min_votes_is_a_pipeline_parameter_that_changes_what_is_kept(member):
    """``min_votes`` given to the pipeline decodes by votes without touching the config; a model that is no
    ensemble refuses it."""
    _, model, tokenizer, module = member
    other = copy.deepcopy(model)
    torch.manual_seed(5)
    with torch.no_grad():  # another member: the same model with its emission layer moved
        other.classifier.weight.add_(torch.randn_like(other.classifier.weight))
    ensemble = module.BertBiLstmCrfEnsembleForTokenClassification.from_members([model, other])
    ner = module.BertBiLstmCrfNerPipeline(model=ensemble, tokenizer=tokenizer, device="cpu")
    text = sample_texts(SAMPLE)[0]
    either, both = ner(text, min_votes=1), ner(text, min_votes=2)
    spans = {votes: {(e["entity_group"], e["start"], e["end"]) for e in found}
             for votes, found in ((1, either), (2, both))}
    assert spans[2] < spans[1]  # two different members agree on fewer entities than either finds
    assert ensemble.config.ensemble_min_votes == 0
    single = module.BertBiLstmCrfNerPipeline(model=model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(ValueError, match="this model is one model"):
        single(text, min_votes=2)


def test_an_ensemble_gives_the_same_entities_with_windows_packed(member):
    """An ensemble of two different members, averaging and voting: windows packed across texts and padded per
    batch give the entities of input-order batching (each length alone)."""
    _, model, tokenizer, module = member
    other = copy.deepcopy(model)
    torch.manual_seed(6)
    with torch.no_grad():
        other.classifier.weight.add_(torch.randn_like(other.classifier.weight))
    ensemble = module.BertBiLstmCrfEnsembleForTokenClassification.from_members([model, other])
    ner = module.BertBiLstmCrfNerPipeline(model=ensemble, tokenizer=tokenizer, device="cpu")
    texts = ["", *sample_texts(SAMPLE), "\n".join(sample_texts(SAMPLE))]
    for votes in (0, 1, 2):
        packed, unpacked = (ner(texts, batch_size=4, min_votes=votes, pack_windows=pack) for pack in (None, 0))
        assert sum(map(len, packed)) > 0
        assert [[(e["entity_group"], e["start"], e["end"]) for e in entities] for entities in packed] == \
            [[(e["entity_group"], e["start"], e["end"]) for e in entities] for entities in unpacked]


def test_seed_ensemble_script_resumes_after_a_kill_between_seeds(tmp_path):
    """configs/cpu-recipe-ensemble.sh with a tiny recipe and two seeds: killed once the first member is finished,
    rerun, it keeps that member as it was, trains the second and makes the ensemble of both; a third run has
    nothing to do."""
    training = small_training("OUT")
    del training[training.index("--output_dir"):training.index("--output_dir") + 2]  # the script's --output_dir
    recipe = tmp_path / "tiny-recipe.sh"
    recipe.write_text('exec "$PYTHON" ' + " ".join(training) + ' --seed "$SEED" "$@"\n', encoding="utf-8")
    out = tmp_path / "seeds"
    environment = {**SCRIPT_ENVIRONMENT, "SEEDS": "1 2", "OUT_DIR": str(out), "RECIPE": str(recipe),
                   "PYTHON": sys.executable}
    command = ["bash", str(REPO / "configs" / "cpu-recipe-ensemble.sh")]
    first_record = out / "seed-1" / "run_record.json"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            while not (first_record.is_file() and json.loads(first_record.read_text())["stage"] == "finished"):
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                time.sleep(0.2)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    weights = (out / "seed-1" / "model.safetensors").read_bytes()
    assert not (out / "ensemble").exists()

    again = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{out / 'seed-1'} holds a finished run" in again.stdout
    assert (out / "seed-1" / "model.safetensors").read_bytes() == weights
    record = json.loads((out / "ensemble" / "ensemble_members.json").read_text(encoding="utf-8"))
    assert [member["folder"] for member in record["members"]] == [str(out / "seed-1"), str(out / "seed-2")]
    assert "| mean of the members |" in again.stdout

    third = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and "is the ensemble of these members already" in third.stdout, third.stderr
