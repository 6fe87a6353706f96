"""What a new user meets first: train.py's JSON configuration with command-line overrides and its --help, the
plots' chosen epoch, predict.py's progress as documents stream, and a model card true to the corpus trained on
(a 2-type English corpus here, written by the test)."""

import json
import re
import shutil
import subprocess
from argparse import Namespace

import pytest
from transformers import TrainerState, pipeline

import predict
import push_to_hub
import train
from brat_ner import cli, tagging
from conftest import REPO, TINY_BERT, run_script
from dataset_script import ruijin_ner

QUICKSTART = REPO / "configs" / "quickstart.json"


# ----- train.py arguments -----


def test_json_values_then_command_line_overrides():
    values = json.loads(QUICKSTART.read_text(encoding="utf-8"))
    model_args, data_args, _, training_args = cli.parse_arguments(
        train.argument_parser(),
        [str(QUICKSTART), "--output_dir", "other/", "--num_train_epochs", "5", "--use_lstm", "false"])
    assert training_args.output_dir == "other/" and training_args.num_train_epochs == 5  # overridden
    assert model_args.use_lstm is False
    assert data_args.window_chars == values["window_chars"] and data_args.data_dir == values["data_dir"]  # from JSON
    assert training_args.learning_rate == values["learning_rate"] and training_args.seed == values["seed"]
    assert model_args.head_learning_rate == values["head_learning_rate"]
    # Without overrides, the JSON values alone.
    _, _, _, training_args = cli.parse_arguments(train.argument_parser(), [str(QUICKSTART)])
    assert training_args.output_dir == values["output_dir"]


def test_a_bad_json_configuration_is_refused_naming_the_file(tmp_path, capsys):
    cases = {"unknown.json": ('{"window_chars": 62, "max_char": 10}', "unknown options max_char"),
             "broken.json": ('{\n  "window_chars": 62,\n}', "broken.json, line 3: not valid JSON"),
             "list.json": ("[1, 2]", "a JSON object of option names and values is expected"),
             "missing.json": (None, "missing.json: cannot read it")}
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(SystemExit):
            cli.parse_arguments(train.argument_parser(), [str(tmp_path / name)])
        assert message in capsys.readouterr().err


def test_help_lists_the_project_options_before_the_trainer_ones():
    help_text = train.argument_parser().format_help()
    positions = [help_text.index(option) for option in
                 ("--model_name_or_path", "--head_learning_rate", "--data_dir", "--rare_type_oversampling",
                  "--output_dir", "--adam_beta1")]
    assert positions == sorted(positions)
    assert help_text.index("(this project)") < help_text.index("TrainingArguments")


def test_chosen_epoch_is_the_best_checkpoint(trained_model):
    output_dir, _ = trained_model
    latest = max(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = TrainerState.load_from_json(str(latest / "trainer_state.json"))
    evaluations = [entry for entry in state.log_history if "eval_f1" in entry]
    best = next(entry for entry in evaluations if entry["eval_f1"] == state.best_metric)  # the first best
    assert train.chosen_epoch(state) == best["epoch"]
    assert train.chosen_epoch(TrainerState()) is None


# ----- predict.py -----


def test_entities_stream_document_by_document(trained_model):
    model_dir, _ = trained_model
    tagger = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    texts = [path.read_text(encoding="utf-8") for path in sorted((REPO / "data" / "sample").glob("*.txt"))]
    read = []

    def reading(texts):
        for text in texts:
            read.append(text)
            yield text

    results = tagging.stream_entities(tagger, reading(texts), batch_size=1)
    first = next(iter(results))
    assert len(read) < len(texts)  # the first document's entities came before the last document was read
    assert first == tagger(texts[0])
    spans = lambda entities: [(e["entity_group"], e["start"], e["end"]) for e in entities]  # noqa: E731
    assert [spans(entities) for entities in predict.tag_texts(tagger, texts, batch_size=4)] == \
        [spans(tagger(text)) for text in texts]  # in order, one list per text (scores vary with padding)
    assert predict.tag_texts(tagger, [], batch_size=4) == []


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
    with pytest.raises(SystemExit, match="no such file"):
        push_to_hub.model_card(model_dir, card_arguments(model_dir, widget_examples_file=str(tmp_path / "none")))


def test_card_without_the_corpus_at_hand(english_model, trained_model, tmp_path):
    # No corpus to take examples from: another corpus' model asks for them; a Ruijin-label model has its own.
    with pytest.raises(SystemExit, match="--widget_examples_file"):
        push_to_hub.model_card(english_model / "model", card_arguments(
            english_model / "model", data_dir=str(tmp_path / "moved")))
    ruijin_dir, _ = trained_model
    card = push_to_hub.model_card(ruijin_dir, card_arguments(ruijin_dir, data_dir=str(tmp_path / "moved")))
    assert card.data.to_dict()["language"] == "zh" and "Chinese medical named entities" in card.text
    assert [widget["text"] for widget in card.data.to_dict()["widget"]] == list(push_to_hub.RUIJIN_WIDGET_EXAMPLES)
    assert "'word': '2 型糖尿病', 'start': 0, 'end': 6" in card.text


# ----- the README -----


def test_output_folders_of_the_readme_are_git_ignored():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = "".join(re.findall(r"```bash\n(.*?)```", readme, re.S))
    folders = set(re.findall(r"--(?:output_dir|dry_run) (\S+)", commands))
    assert {"predicted/", "hub_folder/", "outputs/ruijin"} <= folders
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    completed = subprocess.run(["git", "check-ignore", "--no-index", *sorted(folders)], cwd=REPO,
                               capture_output=True, text=True)
    assert sorted(completed.stdout.split()) == sorted(folders), completed.stderr
