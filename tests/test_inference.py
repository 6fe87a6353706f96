"""Inference and publishing: predict.py -> brat, the model's pipeline, push_to_hub.py (dry run and upload calls)."""

import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

import modeling_bert_bilstm_crf
import predict
import push_to_hub
from conftest import REPO, predict_error, run_script
from dataset_script import ruijin_ner
from dataset_script.brat import find_documents, read_document
from dataset_script.ruijin_ner import spans_to_bio
from modeling_bert_bilstm_crf import bio_to_spans, is_blank

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
    assert modeling_bert_bilstm_crf.line_fragments(text, 0, len(text)) == [(0, 1), (2, 4), (6, 8)]
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
    with pytest.raises(ValueError, match="window_chars must be between 1 and"):
        ner(text, window_chars=ner.model.config.max_position_embeddings - 1)


def test_invisible_characters_are_fed_as_blanks_and_never_edge_an_entity(trained_model):
    from transformers import pipeline

    model_dir, _ = trained_model
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    # A byte-order mark (character 0, as brat counts it) and a zero-width space: the model sees what it would see
    # for spaces, so the entities are the same, and none starts or ends with an invisible character.
    invisible = ner("\ufeff" + text.replace("。", "。\u200b"))
    spaced = ner(" " + text.replace("。", "。 "))
    assert invisible and [(e["entity_group"], e["start"], e["end"]) for e in invisible] == [
        (e["entity_group"], e["start"], e["end"]) for e in spaced]
    assert all(not is_blank(e["word"][0]) and not is_blank(e["word"][-1]) for e in invisible)


def test_predict_reads_standard_input_and_prints_json(trained_model):
    model_dir, _ = trained_model
    completed = subprocess.run(
        [sys.executable, "predict.py", "--model_name_or_path", str(model_dir), "--input_file", "-"],
        input="2 型糖尿病患者口服二甲双胍。\n", capture_output=True, text=True, cwd=REPO, timeout=300, check=True)
    entities = json.loads(completed.stdout)
    assert isinstance(entities, list)
    assert all({"entity_group", "score", "word", "start", "end"} <= entity.keys() for entity in entities)


def test_readme_python_examples_run_as_written(trained_model):
    model_dir, _ = trained_model
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use a trained model", 1)[1].split("\n## ", 1)[0]
    code = "".join(re.findall(r"```python\n(.*?)```", section, re.S)).replace("outputs/quickstart", str(model_dir))
    completed = run_script(["-c", code + "\nprint(len(tags), type(model).__name__)"])
    assert completed.stdout.split()[-2:] == [str(len("2 型糖尿病患者口服二甲双胍")), "BertBiLstmCrfForTokenClassification"]


def test_predict_keeps_crlf_offsets_of_an_input_file(trained_model, tmp_path):
    model_dir, _ = trained_model
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8").replace("\n", "\r\n")
    (tmp_path / "crlf.txt").write_bytes(text.encode("utf-8"))
    completed = run_script(["predict.py", "--model_name_or_path", str(model_dir), "--input_file",
                            str(tmp_path / "crlf.txt")])
    entities = json.loads(completed.stdout)
    assert entities and all(text[e["start"] : e["end"]] == e["word"] for e in entities)


def run_predict_expecting_failure(model_dir, *arguments, stdin=None):
    completed = subprocess.run([sys.executable, "predict.py", "--model_name_or_path", str(model_dir), *arguments],
                               input=stdin, capture_output=True, cwd=REPO, timeout=300)
    stderr = completed.stderr.decode("utf-8")
    assert completed.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    return stderr


def test_predict_reports_bad_input(tmp_path, trained_model, monkeypatch, capsys):
    model_dir, _ = trained_model
    (tmp_path / "gbk").mkdir()
    (tmp_path / "gbk" / "a.txt").write_bytes("糖尿病".encode("gbk"))
    # One run as a user runs it: one line on stderr, no traceback.
    stderr = run_predict_expecting_failure(model_dir, "--input_dir", str(tmp_path / "gbk"))
    assert f"{tmp_path / 'gbk' / 'a.txt'}: not UTF-8" in stderr
    # The others in this process, through the same entry point (run_main).
    model = ("--model_name_or_path", str(model_dir))
    assert f"{tmp_path / 'gbk' / 'a.txt'}: not UTF-8" in predict_error(
        monkeypatch, capsys, *model, "--input_file", str(tmp_path / "gbk" / "a.txt"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("糖尿病".encode("gbk"))))
    assert "standard input: not UTF-8" in predict_error(monkeypatch, capsys, *model, "--input_file", "-")
    assert f"{tmp_path / 'nowhere'}: no such folder" in predict_error(
        monkeypatch, capsys, *model, "--input_dir", str(tmp_path / "nowhere"))
    assert "invalid choice: 'dev'" in predict_error(
        monkeypatch, capsys, *model, "--data_dir", "data/sample", "--split", "dev")


def test_predict_refuses_gold_with_another_text(tmp_path, trained_model, monkeypatch, capsys):
    model_dir, _ = trained_model
    (tmp_path / "in").mkdir()
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    (tmp_path / "in" / "01.txt").write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    model = ("--model_name_or_path", str(model_dir))
    error = predict_error(monkeypatch, capsys, *model, "--input_dir", str(tmp_path / "in"), "--gold_dir", str(SAMPLE),
                          model_loads=False)
    assert "the gold .txt of 01 differs from the text to tag" in error
    error = predict_error(monkeypatch, capsys, *model, "--input_dir", str(tmp_path / "in"),
                          "--gold_dir", str(tmp_path / "nowhere"), model_loads=False)
    assert f"{tmp_path / 'nowhere'}: no such folder" in error


# ----- the Hub -----


@pytest.fixture(scope="module")
def hub_folder(trained_model, tmp_path_factory):
    model_dir, _ = trained_model
    folder = tmp_path_factory.mktemp("hub") / "repo"
    run_script(["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", "someone/chinese-medical-ner",
                "--dry_run", str(folder), "--dataset_name", "Sample corpus"])
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
    card = (folder / "README.md").read_text(encoding="utf-8")
    # The card's own code blocks, as written, with the repository id pointing at the folder.
    card_code = "".join(re.findall(r"```python\n(.*?)```", card, re.S)).replace("someone/chinese-medical-ner",
                                                                               str(folder))
    script = f"""
import io
import json
from transformers import AutoModelForTokenClassification, AutoTokenizer
{card_code}
model = AutoModelForTokenClassification.from_pretrained({str(folder)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
widgets = [line.split("text: ", 1)[1] for line in {card!r}.splitlines() if line.startswith("- text: ")]
print(json.dumps({{"model": type(model).__name__, "tokenizer": len(tokenizer), "tags": len(tags),
                  "results": [ner(text) for text in widgets]}}, ensure_ascii=False))
"""
    completed = run_script(["-c", script], cwd=tmp_path)  # the repository is not importable from here
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["model"] == "BertBiLstmCrfForTokenClassification" and result["tokenizer"] > 100
    widgets = [widget["text"] for widget in ModelCard.load(folder / "README.md").data.to_dict()["widget"]]
    assert result["tags"] == len(widgets[1])  # one tag per character of the second example
    assert len(result["results"]) == len(widgets) == push_to_hub.WIDGET_COUNT
    for text, entities in zip(widgets, result["results"]):
        assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)


def test_model_card_names_the_corpus_encoder_and_test_support(hub_folder):
    model_dir, folder = hub_folder
    card = ModelCard.load(folder / "README.md")
    corpus = json.loads((model_dir / "corpus.json").read_text(encoding="utf-8"))
    report = json.loads((model_dir / "test_report.json").read_text(encoding="utf-8"))
    assert corpus["data_dir"] == "data/sample" and corpus["encoder"]["encoder_config"]
    assert card.data.to_dict()["model-index"][0]["results"][0]["dataset"]["name"] == "Sample corpus"
    assert "trained on the brat corpus `Sample corpus`" in card.text and "data/sample" not in card.content
    assert f"over the {report['micro avg']['support']} entities of the test split (1 document)" in card.text
    assert "trained from random weights" in card.text and "base_model" not in card.data.to_dict()
    overlap = json.loads((model_dir / "test_report_overlap.json").read_text(encoding="utf-8"))
    assert "Lenient scores of the same windows" in card.text
    assert f"| **micro avg** | {overlap['micro avg']['precision']:.4f} |" in card.text


class RecordingApi(HfApi):
    """The Hub client with its network calls recorded instead of made."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        self.calls.append(("upload_folder", repo_id, sorted(path.name for path in Path(folder_path).iterdir()),
                           kwargs.get("delete_patterns")))


def test_upload_creates_the_repository_and_uploads_the_folder(trained_model):
    model_dir, _ = trained_model
    api = RecordingApi()
    arguments = push_to_hub.PushArguments(model_dir=str(model_dir), repo_id="someone/ner", private=True)
    push_to_hub.push(arguments, api)
    assert api.calls[0] == ("create_repo", "someone/ner", {"private": True, "exist_ok": True})
    assert api.calls[1][:2] == ("upload_folder", "someone/ner") and "model.safetensors" in api.calls[1][2]
    assert "README.md" in api.calls[1][2] and api.calls[1][3] == "*"  # stale files of earlier uploads go


def test_push_refuses_bad_arguments_before_uploading(trained_model, tmp_path):
    model_dir, _ = trained_model
    api = RecordingApi()
    (tmp_path / "no-tokenizer").mkdir()
    for path in model_dir.iterdir():
        if path.is_file() and not path.name.startswith(("tokenizer", "vocab")):
            shutil.copy(path, tmp_path / "no-tokenizer" / path.name)
    cases = [({"repo_id": "not a/valid id"}, "Repo id must"),
             ({"model_dir": str(tmp_path / "nowhere")}, "no such folder"),
             ({"model_dir": str(tmp_path / "no-tokenizer")}, "lacks tokenizer_config.json, tokenizer.json or vocab.txt")]
    for changes, message in cases:
        arguments = push_to_hub.PushArguments(**{"model_dir": str(model_dir), "repo_id": "someone/ner", **changes})
        with pytest.raises(SystemExit, match=message):
            push_to_hub.push(arguments, api)
    assert api.calls == []
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "pytorch_model.bin").write_bytes(b"")
    completed = subprocess.run([sys.executable, "push_to_hub.py", "--model_dir", str(model_dir), "--repo_id",
                                "someone/ner", "--dry_run", str(tmp_path / "stale")],
                               capture_output=True, text=True, cwd=REPO, timeout=300)
    assert completed.returncode != 0 and "is not empty" in completed.stderr


def test_dataset_is_prepared_as_the_model_was_trained(trained_model):
    model_dir, _ = trained_model
    arguments = push_to_hub.PushArguments(model_dir=str(model_dir), repo_id="someone/ner",
                                          dataset_repo_id="someone/corpus")
    assert push_to_hub.prepared_dataset_arguments(model_dir, arguments) == {"data_dir": "data/sample",
                                                                           "window_chars": 62, "context_chars": 0}


def test_predict_scores_a_split_of_a_corpus(trained_model, tmp_path):
    model_dir, _ = trained_model
    run_script(["predict.py", "--model_name_or_path", str(model_dir), "--data_dir", "data/sample", "--split", "test",
                "--output_dir", str(tmp_path)])
    test_documents = ruijin_ner.load(SAMPLE, name="brat")["test"]
    assert sorted(path.stem for path in tmp_path.glob("*.ann")) == sorted(test_documents["document_id"])
    gold = {(doc["document_id"], e["type"], e["start"], e["end"]) for doc in test_documents for e in doc["entities"]}
    report = json.loads((tmp_path / "brat_scores.json").read_text(encoding="utf-8"))
    assert report["micro avg"]["support"] == len(gold)
