"""Inference and publishing: predict.py -> brat, the model's pipeline, push_to_hub.py (dry run and upload calls)."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_script
from huggingface_hub import HfApi, ModelCard

import predict
import push_to_hub
from dataset_script import ruijin_ner
from dataset_script.brat import find_documents, read_document
from modeling_bert_bilstm_crf import bio_to_spans, spans_to_bio

SAMPLE = REPO / "data" / "sample"
REAL_CORPUS = REPO.parent / "shared" / "data" / "ruijin_round1" / "train"


def ann_entities(ann_text: str) -> Counter:
    """(type, offsets, text) of the T lines of a .ann, ids ignored."""
    return Counter(tuple(line.split("\t")[1:]) for line in ann_text.splitlines() if line.startswith("T"))


def gold_through_span_decoding(folder: Path):
    """For every document: the gold .ann's encodable entities, and the .ann written from their BIO tags."""
    for txt_path, ann_path in find_documents(folder):
        document = read_document(txt_path, ann_path)
        spans = [(entity.type, entity.start, entity.end) for entity in document.entities]
        tags, not_encoded = spans_to_bio(len(document.text), spans)
        entities = [{"entity_group": t, "start": s, "end": e} for t, s, e in bio_to_spans(tags)]
        gold = ann_entities(ann_path.read_text(encoding="utf-8"))
        for entity_type, start, end in not_encoded:
            match = next(e for e in document.entities if (e.type, e.start, e.end) == (entity_type, start, end))
            offsets = ";".join(f"{a} {b}" for a, b in match.fragments)
            gold[(f"{entity_type} {offsets}", match.text)] -= 1
        yield document, +gold, ann_entities(predict.brat_annotations(document.text, entities))


def test_gold_tags_reproduce_the_gold_ann_on_the_sample():
    for _, gold, written in gold_through_span_decoding(SAMPLE):
        assert written == gold


@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"real corpus not found at {REAL_CORPUS}")
def test_gold_tags_reproduce_the_gold_ann_on_the_real_corpus():
    documents = 0
    for document, gold, written in gold_through_span_decoding(REAL_CORPUS):
        if written != gold:  # entities whose .ann text disagrees with the .txt are not used (and reported)
            assert sum((gold - written).values()) == sum(document.rejected.values()), document.document_id
            assert not written - gold, document.document_id
        documents += 1
    assert documents == 327


def test_line_fragments_split_at_line_breaks():
    text = "糖\n尿病\r\n肾病"
    assert predict.line_fragments(text, 0, len(text)) == [(0, 1), (2, 4), (6, 8)]
    assert predict.brat_annotations(text, [{"entity_group": "Disease", "start": 0, "end": 4}]) == \
        "T1\tDisease 0 1;2 4\t糖 尿病\n"


@pytest.fixture(scope="module")
def predictions(trained_model, tmp_path_factory):
    model_dir, _ = trained_model
    output_dir = tmp_path_factory.mktemp("predicted")
    completed = run_script(["predict.py", "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE),
                            "--output_dir", str(output_dir), "--gold_dir", str(SAMPLE), "--batch_size", "4"])
    return model_dir, output_dir, completed


def test_predict_writes_valid_brat_files_with_scores(predictions):
    _, output_dir, completed = predictions
    texts = sorted(SAMPLE.glob("*.txt"))
    assert sorted(path.stem for path in output_dir.glob("*.ann")) == [path.stem for path in texts]
    for txt_path in texts:
        # The reader checks every entity's text against the .txt at its offsets (strict: no mismatch allowed).
        shutil.copy(txt_path, output_dir / txt_path.name)
        read_document(output_dir / txt_path.name, output_dir / f"{txt_path.stem}.ann", strict=True)
    report = json.loads((output_dir / "brat_scores.json").read_text(encoding="utf-8"))
    gold = {(txt.stem, e.type, e.start, e.end) for txt, ann in find_documents(SAMPLE)
            for e in read_document(txt, ann).entities}
    assert report["micro avg"]["support"] == len(gold)  # every gold entity, nested ones included
    assert "| **micro avg** |" in completed.stdout


def test_pipeline_agrees_with_predict_entity_for_entity(predictions):
    from transformers import pipeline

    model_dir, output_dir, _ = predictions
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    assert type(ner).__name__ == "BertBiLstmCrfNerPipeline"
    total = 0
    for txt_path in sorted(SAMPLE.glob("*.txt")):
        text = predict.read_texts(SAMPLE)[txt_path.stem]
        entities = ner(text, aggregation_strategy="simple")
        written = ann_entities((output_dir / f"{txt_path.stem}.ann").read_text(encoding="utf-8"))
        assert ann_entities(predict.brat_annotations(text, entities)) == written
        for entity in entities:
            assert text[entity["start"] : entity["end"]] == entity["word"] and 0 < entity["score"] <= 1
            assert entity["word"] == entity["word"].strip()
        total += len(entities)
    assert total > 0


def test_pipeline_scores_are_crf_marginals_and_windows_join(trained_model):
    from transformers import pipeline

    model_dir, _ = trained_model
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    # Windows of 20 characters instead of the trained 62: offsets still point into the whole text.
    for entity in ner(text, window_chars=20):
        assert text[entity["start"] : entity["end"]] == entity["word"]
    characters = ner("二甲双胍片", aggregation_strategy="none")
    assert all(0 < c["score"] <= 1 and c["entity"][:2] in ("B-", "I-") for c in characters)
    assert ner("") == []


def test_predict_reads_standard_input_and_prints_json(trained_model):
    model_dir, _ = trained_model
    completed = subprocess.run(
        [sys.executable, "predict.py", "--model_name_or_path", str(model_dir), "--input_file", "-"],
        input="2 型糖尿病患者口服二甲双胍。\n", capture_output=True, text=True, cwd=REPO, timeout=300, check=True)
    entities = json.loads(completed.stdout)
    assert isinstance(entities, list)
    assert all({"entity_group", "score", "word", "start", "end"} <= entity.keys() for entity in entities)


def test_predict_reports_bad_input(tmp_path, trained_model):
    model_dir, _ = trained_model
    (tmp_path / "a.txt").write_bytes("糖尿病".encode("gbk"))
    completed = subprocess.run(
        [sys.executable, "predict.py", "--model_name_or_path", str(model_dir), "--input_dir", str(tmp_path),
         "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert completed.returncode != 0 and f"{tmp_path / 'a.txt'} is not UTF-8" in completed.stderr


# ----- the Hub -----


@pytest.fixture(scope="module")
def hub_folder(trained_model, tmp_path_factory):
    model_dir, _ = trained_model
    folder = tmp_path_factory.mktemp("hub") / "repo"
    run_script(["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", "someone/chinese-medical-ner",
                "--dry_run", str(folder)])
    return model_dir, folder


def test_dry_run_folder_holds_what_loading_needs_and_no_pickle(hub_folder):
    _, folder = hub_folder
    names = {path.name for path in folder.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_bert_bilstm_crf.py", "tokenizer.json", "README.md"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) or name.startswith("checkpoint") for name in names)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["auto_map"]["AutoModelForTokenClassification"].endswith("BertBiLstmCrfForTokenClassification")
    assert config["custom_pipelines"]["token-classification"]["impl"].endswith("BertBiLstmCrfNerPipeline")


def test_model_card_metadata_matches_the_training_results(hub_folder):
    model_dir, folder = hub_folder
    card = ModelCard.load(folder / "README.md")
    report = json.loads((model_dir / "test_report.json").read_text(encoding="utf-8"))
    metadata = card.data.to_dict()
    assert metadata["language"] == "zh" and metadata["pipeline_tag"] == "token-classification"
    assert len(metadata["widget"]) >= 2
    metrics = {m["name"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert metrics["micro-F1 (entities)"] == round(report["micro avg"]["f1-score"], 4)
    assert metrics["macro-F1 over types"] == round(report["macro avg"]["f1-score"], 4)
    yaml.safe_load(card.content.split("---")[1])
    assert "| Disease | 疾病名称 |" in card.text and "trust_remote_code=True" in card.text


def test_dry_run_folder_loads_and_runs_in_a_fresh_process(hub_folder, tmp_path):
    _, folder = hub_folder
    script = f"""
import json
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
model = AutoModelForTokenClassification.from_pretrained({str(folder)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
ner = pipeline("token-classification", model={str(folder)!r}, trust_remote_code=True,
               aggregation_strategy="simple")
card = open({str(folder / "README.md")!r}, encoding="utf-8").read()
widgets = [line.split("text: ", 1)[1] for line in card.splitlines() if line.startswith("- text: ")]
print(json.dumps({{"model": type(model).__name__, "tokenizer": len(tokenizer),
                  "results": [ner(text) for text in widgets]}}, ensure_ascii=False))
"""
    completed = run_script(["-c", script], cwd=tmp_path)  # the repository is not importable from here
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["model"] == "BertBiLstmCrfForTokenClassification" and result["tokenizer"] > 100
    assert len(result["results"]) == len(push_to_hub.WIDGET_EXAMPLES)


def test_upload_creates_the_repository_and_uploads_the_folder(trained_model, monkeypatch):
    model_dir, _ = trained_model
    calls = []

    class RecordingApi(HfApi):
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, folder_path, repo_id, **kwargs):
            calls.append(("upload_folder", repo_id, sorted(path.name for path in Path(folder_path).iterdir())))

    arguments = push_to_hub.PushArguments(model_dir=str(model_dir), repo_id="someone/ner", private=True)
    push_to_hub.push(arguments, RecordingApi())
    assert calls[0] == ("create_repo", "someone/ner", {"private": True, "exist_ok": True})
    assert calls[1][:2] == ("upload_folder", "someone/ner") and "model.safetensors" in calls[1][2]
    assert "README.md" in calls[1][2]


def test_predict_scores_a_split_of_a_corpus(trained_model, tmp_path):
    model_dir, _ = trained_model
    run_script(["predict.py", "--model_name_or_path", str(model_dir), "--data_dir", "data/sample", "--split", "test",
                "--output_dir", str(tmp_path)])
    test_documents = ruijin_ner.load(SAMPLE, name="brat")["test"]
    assert sorted(path.stem for path in tmp_path.glob("*.ann")) == sorted(test_documents["document_id"])
    gold = {(doc["document_id"], e["type"], e["start"], e["end"]) for doc in test_documents for e in doc["entities"]}
    report = json.loads((tmp_path / "brat_scores.json").read_text(encoding="utf-8"))
    assert report["micro avg"]["support"] == len(gold)
