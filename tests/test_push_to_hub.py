"""push_to_hub.py: the dry-run folder (what loading needs, no pickle), the model card true to the corpus and the
model trained (a 2-type English corpus here, written by the test), and the calls it makes to the Hub."""

import json
import os
import re
import shutil
import stat
from argparse import Namespace
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

import push_to_hub
from brat_ner.model_card import RUIJIN_WIDGET_EXAMPLES, WIDGET_COUNT
from conftest import TINY_BERT, run_script
from dataset_script import ruijin_ner

# ----- the dry-run folder, its model card and the Hub -----


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


def test_every_file_of_the_upload_folder_gets_the_umasks_mode(trained_model, tmp_path):
    """The endpoint's handler.py and requirements.txt as well: copied, not with their mode in the repository."""
    model_dir, _ = trained_model
    folder = tmp_path / "repo"
    previous = os.umask(0o077)
    try:
        run_script(["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", "someone/chinese-medical-ner",
                    "--dry_run", str(folder)])
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir() if path.is_file()}
    assert {"handler.py", "requirements.txt", "config.json"} <= modes.keys()
    assert set(modes.values()) == {0o600}, modes


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
    assert len(result["results"]) == len(widgets) == WIDGET_COUNT
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
             ({"model_dir": str(tmp_path / "no-tokenizer")},
              "lacks tokenizer_config.json, tokenizer.json or vocab.txt")]
    for changes, message in cases:
        arguments = push_to_hub.PushArguments(**{"model_dir": str(model_dir), "repo_id": "someone/ner", **changes})
        with pytest.raises(ValueError, match=message):
            push_to_hub.push(arguments, api)
    assert api.calls == []
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "pytorch_model.bin").write_bytes(b"")
    completed = run_script(["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", "someone/ner", "--dry_run",
                            str(tmp_path / "stale")], succeeds=False)
    assert "is not empty" in completed.stderr


def test_push_refuses_pickled_weights_as_every_loader_does(trained_model, tmp_path):
    model_dir, _ = trained_model
    pickled = shutil.copytree(model_dir, tmp_path / "pickled", ignore=shutil.ignore_patterns("checkpoint-*"))
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle: loading it could run any code")
    completed = run_script(["push_to_hub.py", "--model_dir", str(pickled), "--repo_id", "someone/ner", "--dry_run",
                            str(tmp_path / "repo")], succeeds=False)
    assert completed.stderr.strip() == (
        f"push_to_hub.py: --model_dir {pickled}: holds pytorch_model.bin, a pickle, which can run any code when "
        "loaded; this project loads safetensors only. Where you trust that file, load the model and save it with "
        "save_pretrained() to get a model.safetensors")
    assert not (tmp_path / "repo").exists()


def test_dataset_is_prepared_as_the_model_was_trained(trained_model):
    model_dir, _ = trained_model
    arguments = push_to_hub.PushArguments(model_dir=str(model_dir), repo_id="someone/ner",
                                          dataset_repo_id="someone/corpus")
    assert push_to_hub.prepared_dataset_arguments(model_dir, arguments) == {"data_dir": "data/sample",
                                                                           "window_chars": 62, "context_chars": 0}


# ----- the model card of a model trained on another corpus -----


ENGLISH_DOCUMENTS = {
    "train": [("Alice flew from Paris to Rome.", [("Person", "Alice"), ("City", "Paris"), ("City", "Rome")]),
              ("Bob lives in Oslo and works in Bergen.", [("Person", "Bob"), ("City", "Oslo"), ("City", "Bergen")]),
              ("Carol met Dave in Madrid.", [("Person", "Carol"), ("Person", "Dave"), ("City", "Madrid")])],
    "validation": [("Erin visited Lisbon.", [("Person", "Erin"), ("City", "Lisbon")])],
    "test": [("Frank drove to Vienna.\nGrace stayed in Prague.",
              [("Person", "Frank"), ("City", "Vienna"), ("Person", "Grace"), ("City", "Prague")])],
}


def write_english_corpus(folder):
    for split, documents in ENGLISH_DOCUMENTS.items():
        (folder / split).mkdir(parents=True)
        for number, (text, entities) in enumerate(documents, start=1):
            lines = []
            for index, (entity_type, word) in enumerate(entities, start=1):
                start = text.index(word)
                lines.append(f"T{index}\t{entity_type} {start} {start + len(word)}\t{word}\n")
            (folder / split / f"{number:02d}.txt").write_text(text, encoding="utf-8")
            (folder / split / f"{number:02d}.ann").write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def english_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("english")
    write_english_corpus(folder / "corpus")
    run_script(["train.py", "--data_dir", str(folder / "corpus"), "--encoder_config", str(TINY_BERT),
                "--tokenizer_name", str(TINY_BERT), "--output_dir", str(folder / "model"), "--window_chars", "62",
                "--num_train_epochs", "1", "--lstm_hidden_size", "8", "--use_cpu", "true"])
    return folder


def card_arguments(model_dir, **changes):
    defaults = {"model_dir": str(model_dir), "repo_id": "someone/city-ner", "dry_run": None, "private": False,
                "license": "apache-2.0", "dataset_name": None, "dataset_repo_id": None, "data_dir": None,
                "language": None, "widget_examples_file": None}
    return Namespace(**{**defaults, **changes})


def test_card_of_an_english_two_type_model_says_nothing_of_chinese_or_medicine(english_model):
    model_dir = english_model / "model"
    card = push_to_hub.model_card(model_dir, card_arguments(model_dir, dataset_repo_id="someone/cities"))
    metadata = card.data.to_dict()
    text = card.content
    assert "language" not in metadata  # Latin script does not tell which language: --language says it
    assert not re.search(r"chinese|medic|clinical|disease|drug|中文|[\u4e00-\u9fff]", text, re.IGNORECASE)
    # No Ruijin type as a label row or an entity ("Test" is also an English word of the card).
    assert not [name for name in ruijin_ner.RUIJIN_ENTITY_TYPES if f"| {name} |" in text or f"'{name}'" in text]
    assert "| Person |" in card.text and "| City |" in card.text and "Finding City and Person entities" in text
    # Widgets: short annotated sentences of the test document, in its order of preference; the usage example
    # shows what is annotated in the first one.
    assert [widget["text"] for widget in metadata["widget"]] == ["Frank drove to Vienna.", "Grace stayed in Prague."]
    assert "ner('Frank drove to Vienna.')" in text and "'word': 'Frank', 'start': 0, 'end': 5" in text
    # The dataset by its Hub id, never the local folder.
    assert metadata["datasets"] == ["someone/cities"] and str(english_model) not in text
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == "someone/cities"


def test_card_names_the_layers_the_model_has(english_model, tmp_path):
    model_dir = tmp_path / "classic"
    shutil.copytree(english_model / "model", model_dir)
    assert "A character-level BERT → BiLSTM → CRF tagger" in push_to_hub.model_card(
        model_dir, card_arguments(model_dir, dataset_name="City corpus")).text
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config.update(num_hidden_layers=0, bigram_buckets=211)  # the classic model with bigram features
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    text = push_to_hub.model_card(model_dir, card_arguments(model_dir, dataset_name="City corpus")).text
    assert "A character-level embedding → BiLSTM → CRF tagger with character-bigram features" in text
    assert "BERT →" not in text


def test_card_language_and_widget_examples_can_be_given(english_model, tmp_path):
    model_dir = english_model / "model"
    (tmp_path / "widgets.txt").write_text("Heidi flew to Dublin.\n\nIvan likes Kyiv.\n", encoding="utf-8")
    card = push_to_hub.model_card(model_dir, card_arguments(
        model_dir, language="en", widget_examples_file=str(tmp_path / "widgets.txt"), dataset_name="City corpus"))
    metadata = card.data.to_dict()
    assert metadata["language"] == "en"
    assert [widget["text"] for widget in metadata["widget"]] == ["Heidi flew to Dublin.", "Ivan likes Kyiv."]
    assert "trained on the brat corpus `City corpus`" in card.text
    with pytest.raises(ValueError, match="no such file"):
        push_to_hub.model_card(model_dir, card_arguments(model_dir, widget_examples_file=str(tmp_path / "none")))


def test_card_without_the_corpus_at_hand(english_model, trained_model, tmp_path):
    # No corpus to take examples from: another corpus' model asks for them; a Ruijin-label model has its own.
    with pytest.raises(ValueError, match="--widget_examples_file"):
        push_to_hub.model_card(english_model / "model", card_arguments(
            english_model / "model", data_dir=str(tmp_path / "moved")))
    ruijin_dir, _ = trained_model
    card = push_to_hub.model_card(ruijin_dir, card_arguments(ruijin_dir, data_dir=str(tmp_path / "moved")))
    assert card.data.to_dict()["language"] == "zh" and "Chinese medical named entities" in card.text
    assert [widget["text"] for widget in card.data.to_dict()["widget"]] == list(RUIJIN_WIDGET_EXAMPLES)
    assert "'word': '2 型糖尿病', 'start': 0, 'end': 6" in card.text
