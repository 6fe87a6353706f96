"""Encoders of every supported architecture (BERT, ERNIE, ELECTRA, RoFormer) as train.py's starting point, saved
as base models and with the pre-training heads they are published with; refusals of encoders that cannot work
or whose weights would not load; a model trained further; folders saved before the encoder had its own config."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    ElectraConfig,
    ElectraForPreTraining,
    ElectraModel,
    ErnieConfig,
    ErnieForMaskedLM,
    ErnieModel,
    RoFormerConfig,
    RoFormerForMaskedLM,
    RoFormerModel,
    pipeline,
)

from brat_ner import trust
from brat_ner.encoders import ENCODER_NAMES, LABEL_TENSORS, adopt_trained_windows, build_model
from conftest import REPO, SAMPLE, TINY_BERT, run_predict, run_script, sample_texts, small_training
from dataset_script import ruijin_ner
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification
from processing_bert_bilstm_crf import brat_annotations

FIXTURE = REPO / "tests" / "fixtures" / "model_saved_2026_12_04"
SIZES = {"vocab_size": 395, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 128}
ARCHITECTURES = {  # config, base model, model with the pre-training head it is published with, its prefix
    "bert": (BertConfig(**SIZES), BertModel, BertForMaskedLM, "bert"),
    "ernie": (ErnieConfig(**SIZES), ErnieModel, ErnieForMaskedLM, "ernie"),
    "electra": (ElectraConfig(**SIZES, embedding_size=16), ElectraModel, ElectraForPreTraining, "electra"),
    "roformer": (RoFormerConfig(**SIZES, embedding_size=16), RoFormerModel, RoFormerForMaskedLM, "roformer"),
}


def save_encoder(folder, model_class, config, seed=0):
    """A tiny random pretrained encoder folder: weights, config and the tiny vocabulary's tokenizer."""
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(TINY_BERT).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """{(architecture, "base" | "head"): folder} of every supported architecture."""
    root = tmp_path_factory.mktemp("encoders")
    return {(name, form): save_encoder(root / f"{name}-{form}", model_class, config)
            for name, (config, base, head, _) in ARCHITECTURES.items()
            for form, model_class in (("base", base), ("head", head))}


def encoder_tensors(folder, prefix):
    """The checkpoint's encoder tensors by their names in the encoder (without the head's prefix)."""
    tensors = load_file(folder / "model.safetensors")
    return {key.removeprefix(prefix + "."): value for key, value in tensors.items()
            if not key.startswith(("cls.", "discriminator_predictions.")) and "pooler" not in key}


def train_args(folder, output_dir, *extra):
    return ["train.py", "--data_dir", "data/sample", "--model_name_or_path", str(folder), "--output_dir",
            str(output_dir), "--window_chars", "62", "--max_steps", "2",
            "--per_device_train_batch_size", "8", "--use_cpu", "true", "--seed", "7", *extra]


def parse(command_line):
    """train.py's argument dataclasses of a command line (without running it)."""
    import train
    from brat_ner.cli import parse_arguments
    return parse_arguments(train.argument_parser(), command_line[1:])


def built(folder, *extra):
    """The model train.py's build_model makes of ``folder`` (its tokenizer) and the sample's labels."""
    model_args, data_args, _, _ = parse(train_args(folder, folder / "unused", *extra))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return build_model(model_args, tokenizer, ["O", "B-Drug", "I-Drug"], data_args, [list(sample_texts(SAMPLE)[0])])


@pytest.mark.parametrize("form", ["base", "head"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_encoder_weight_is_loaded_bit_for_bit(encoders, name, form, caplog):
    folder = encoders[name, form]
    model = built(folder)
    assert type(model.bert).__name__ == ARCHITECTURES[name][1].__name__
    expected = encoder_tensors(folder, ARCHITECTURES[name][3])
    state = {key.removeprefix("bert."): value for key, value in model.state_dict().items() if key.startswith("bert.")}
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    report = [record.getMessage() for record in caplog.records if "tensors loaded" in record.getMessage()]
    assert report == [f"encoder {ENCODER_NAMES[name]} from {folder}: {len(expected)} tensors loaded; BiLSTM, linear, "
                      "CRF start fresh"]


@pytest.fixture(scope="module")
def electra_trained(encoders, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("electra") / "model"
    return output_dir, run_script(train_args(encoders["electra", "head"], output_dir))


def test_trained_from_a_checkpoint_with_its_head_predicts_alike_everywhere(electra_trained, tmp_path, monkeypatch):
    output_dir, completed = electra_trained
    assert "UNEXPECTED" not in completed.stderr and "MISSING" not in completed.stderr
    model = AutoModelForTokenClassification.from_pretrained(output_dir, trust_remote_code=True)
    assert type(model.bert).__name__ == "ElectraModel"
    ner = pipeline("token-classification", model=str(output_dir), trust_remote_code=True)
    run_predict(monkeypatch, "--model_name_or_path", str(output_dir), "--input_dir", str(SAMPLE),
                "--output_dir", str(tmp_path / "predicted"))
    for path in sorted(SAMPLE.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        predicted = (tmp_path / "predicted" / f"{path.stem}.ann").read_text(encoding="utf-8")
        assert predicted == brat_annotations(text, ner(text))


def test_card_int8_onnx_and_space_work_with_an_electra_encoder(electra_trained, encoders, tmp_path):
    from huggingface_hub import ModelCard

    from brat_ner import fast_inference
    from space import app

    output_dir = electra_trained[0]
    run_script(["push_to_hub.py", "--model_dir", str(output_dir), "--repo_id", "someone/electra-ner",
                "--dry_run", str(tmp_path / "card")])
    card = ModelCard.load(tmp_path / "card" / "README.md").text
    assert f"The ELECTRA encoder started from a local folder, `{encoders['electra', 'head']}`." in card
    assert "ELECTRA → BiLSTM → CRF" in card

    texts = sample_texts(SAMPLE)
    expected = [[(e["entity_group"], e["start"], e["end"]) for e in entities]
                for entities in app.load_tagger(str(output_dir))(texts)]
    onnx_tagger = pipeline("token-classification", model=str(output_dir), trust_remote_code=True, device="cpu")
    fast_inference.use_onnx(onnx_tagger, tmp_path / "model.onnx")
    spans = [[(e["entity_group"], e["start"], e["end"]) for e in entities] for entities in onnx_tagger(texts)]
    assert spans == expected
    int8_tagger = pipeline("token-classification", model=str(output_dir), trust_remote_code=True, device="cpu")
    fast_inference.quantize_int8(int8_tagger)
    assert all(text[e["start"]:e["end"]] == e["word"] for text, entities in zip(texts, int8_tagger(texts))
               for e in entities)


@pytest.mark.parametrize("name", ["ernie", "roformer"])
def test_train_py_starts_from_every_architecture_with_its_head(encoders, name, tmp_path):
    run_script(train_args(encoders[name, "head"], tmp_path / "model"))
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "model", trust_remote_code=True)
    assert type(model.bert).__name__ == ARCHITECTURES[name][1].__name__


def test_weights_of_another_architecture_are_refused_in_one_line(encoders, tmp_path):
    """ERNIE weights (``ernie.``) under a config that says BERT: nothing of the encoder would load."""
    folder = shutil.copytree(encoders["ernie", "head"], tmp_path / "mislabelled")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert", "architectures": None}))
    completed = run_script(train_args(folder, tmp_path / "out"), succeeds=False)
    assert completed.stderr.strip().splitlines()[-1].startswith(f"train.py: --model_name_or_path {folder} ")
    assert "--allow_random_encoder_weights" in completed.stderr and not (tmp_path / "out" / "config.json").exists()


def test_missing_encoder_weights_are_refused_unless_allowed(encoders, tmp_path):
    folder = shutil.copytree(encoders["bert", "base"], tmp_path / "partial")
    tensors = load_file(folder / "model.safetensors")
    from safetensors.torch import save_file
    save_file({key: value for key, value in tensors.items() if "layer.0.output" not in key},
              folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 4 of the \d+ BERT encoder weights \(first: bert.encoder.layer.0"):
        built(folder)
    model = built(folder, "--allow_random_encoder_weights", "true")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, tensors["embeddings.word_embeddings.weight"])


def test_a_decoder_is_refused_in_one_line(tmp_path):
    from transformers import GPT2Config
    GPT2Config(vocab_size=395, n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(TINY_BERT).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="gpt2 model is not a bidirectional encoder"):
        built(tmp_path)


def test_a_tokenizer_without_character_entries_is_refused(encoders, tmp_path):
    """A vocabulary of Latin word pieces (a BPE/sentencepiece-like one): the sample's characters would all be [UNK]."""
    folder = shutil.copytree(encoders["bert", "base"], tmp_path / "latin")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "##s"]))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"has no vocabulary entry of its own for (\d+) of the \1 Chinese characters"):
        built(folder)


def test_encoder_config_with_a_model_name_is_refused(tmp_path):
    completed = run_script(small_training(tmp_path / "out", "--model_name_or_path", "no/such-encoder"),
                           succeeds=False)
    assert "--encoder_config" in completed.stderr and "give one of them" in completed.stderr


# ----- Trained further -----


def test_a_trained_model_is_trained_further_with_a_new_type(trained_model, tmp_path):
    """The session's model (trained on the sample), trained further on the sample whose Drug entities of two
    documents became a new type: the head's options come from the folder, the known labels keep their weights and
    the new type starts fresh, said in one line."""
    first = trained_model[0]
    grown = shutil.copytree(SAMPLE, tmp_path / "grown", ignore=shutil.ignore_patterns("*.py"))
    for document in ("01", "02"):
        ann = grown / f"{document}.ann"
        ann.write_text(ann.read_text(encoding="utf-8").replace("\tDrug ", "\tMedicine "), encoding="utf-8")
    (grown / "annotation.conf").write_text("[entities]\n" + "\n".join([*ruijin_ner.RUIJIN_ENTITY_TYPES, "Medicine"]))
    further = ["train.py", "--data_dir", str(grown), "--model_name_or_path", str(first), "--output_dir",
               str(tmp_path / "second"), "--window_chars", "62", "--max_steps", "1", "--use_cpu", "true"]
    completed = run_script(further)
    assert "2 new ones start fresh (B-Medicine, I-Medicine)" in completed.stderr
    assert json.loads((tmp_path / "second" / "config.json").read_text())["lstm_hidden_size"] == 16  # not 256

    model_args, data_args, _, _ = parse(further)
    labels = ruijin_ner.load(grown, window_chars=62)["train"].features["ner_tags"].feature.names
    model = build_model(model_args, AutoTokenizer.from_pretrained(first), labels, data_args)
    before = load_file(first / "model.safetensors")
    labels_before = json.loads((first / "config.json").read_text())["label2id"]
    assert set(labels) - set(labels_before) == {"B-Medicine", "I-Medicine"}
    after = model.state_dict()
    for key in before.keys() - LABEL_TENSORS.keys():
        assert torch.equal(after[key], before[key]), key
    known = [(labels.index(label), index) for label, index in labels_before.items()]
    for key in LABEL_TENSORS:
        for new, old in known:
            assert torch.equal(after[key][new], before[key][old]) if key != "crf.transitions" else all(
                torch.equal(after[key][new, new_2], before[key][old, old_2]) for new_2, old_2 in known)


def test_a_trained_model_keeps_its_head_options(trained_model, capsys):
    """Its head options are the folder's; one given with another value is refused in one line."""
    first = trained_model[0]
    model_args = parse(train_args(first, first / "unused"))[0]
    assert model_args.lstm_hidden_size == 16
    with pytest.raises(SystemExit):
        parse(train_args(first, first / "unused", "--lstm_hidden_size", "64"))
    error = capsys.readouterr().err
    assert f"--lstm_hidden_size 64: the model at {first} was trained with 16" in error and error.count("\n") == 1


def test_a_trained_model_keeps_its_windows_unless_given(trained_model):
    first = trained_model[0]
    data_args = parse(["train.py", "--model_name_or_path", str(first), "--output_dir", str(first / "unused")])[1]
    adopt_trained_windows(str(first), data_args)
    assert (data_args.window_chars, data_args.context_chars) == (62, 0)
    data_args = parse(train_args(first, first / "unused", "--window_chars", "30"))[1]
    adopt_trained_windows(str(first), data_args)
    assert data_args.window_chars == 30


# ----- Folders saved before this change -----


def test_a_folder_saved_before_predicts_as_it_did_with_its_own_and_the_new_modelling_file(tmp_path):
    expected = json.loads((FIXTURE / "expected_entities.json").read_text(encoding="utf-8"))
    new_file = shutil.copytree(FIXTURE, tmp_path / "new-file")
    for name in trust.MODEL_CODE_FILES:  # the modelling file of today and the files it imports
        shutil.copy(REPO / name, new_file / name)
    for folder in (FIXTURE, new_file):
        ner = pipeline("token-classification", model=str(folder), trust_remote_code=True)
        texts = {path.stem: path.read_text(encoding="utf-8") for path in SAMPLE.glob("*.txt")}
        assert texts.keys() == expected.keys()
        for document, wanted in expected.items():
            entities = ner(texts[document])
            assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == [
                (e["entity_group"], e["start"], e["end"]) for e in wanted]
            assert all(abs(e["score"] - w["score"]) <= 1e-5 for e, w in zip(entities, wanted))


def test_the_project_model_class_reads_an_old_folder(tmp_path):
    model = BertBiLstmCrfForTokenClassification.from_pretrained(FIXTURE)
    assert model.config.encoder is None and type(model.bert).__name__ == "BertModel"
    saved = load_file(FIXTURE / "model.safetensors")
    assert all(torch.equal(model.state_dict()[key], value) for key, value in saved.items())
