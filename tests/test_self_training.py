"""brat_ner/self_training.py and trainer/silver_data.py: a model's sure windows of unlabelled text join training
with its Viterbi tags and a lower weight; a threshold of 1.0 adds nothing and trains exactly as plain training."""

import copy

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Trainer, TrainingArguments

import train
from brat_ner import cli
from brat_ner.self_training import silver_windows
from brat_ner.trainer.silver_data import SilverDataTrainerMixin
from brat_ner.training_data import untagged_windows
from conftest import SAMPLE, TINY_BERT, run_script, small_training, tiny_model
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification

NOTE = "患者有2型糖尿病史十年，口服二甲双胍，空腹血糖 7.8 mmol/L。"


@pytest.fixture
def unlabelled(tmp_path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    (folder / "note.txt").write_text(NOTE * 12, encoding="utf-8")
    (folder / "short.txt").write_text("口服二甲双胍。\n", encoding="utf-8")
    return folder


def test_sure_windows_carry_the_models_viterbi_tags_and_a_threshold_of_one_keeps_none(trained_model, unlabelled):
    model_dir, _ = trained_model
    model = BertBiLstmCrfForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data_args = cli.parse_arguments(train.argument_parser(), ["--output_dir", "unused", "--window_chars", "62"])[1]
    label_names = [model.config.id2label[index] for index in range(model.config.num_labels)]
    features = datasets.Features({name: datasets.List(datasets.Value("int64"))
                                  for name in ("input_ids", "labels", "attention_mask")})
    untagged = untagged_windows([str(unlabelled)], str(SAMPLE), tokenizer, data_args, True, features)
    everything, counts = silver_windows(str(model_dir), untagged, label_names, model.config, threshold=0.0)
    assert counts["windows kept"] == counts["windows read"] == len(untagged) > 1
    for row in everything:
        ids = torch.tensor([row["input_ids"]])
        expected = model.decode(ids).tags[0].tolist()  # -100 on [CLS] and [SEP], as the silver labels
        assert row["labels"] == expected
    assert sum(label > 0 for row in everything for label in row["labels"])  # the model tags some entities
    nothing, counts = silver_windows(str(model_dir), untagged, label_names, model.config, threshold=1.0)
    assert len(nothing) == counts["windows kept"] == 0
    certainties = []
    for row in everything:
        ids = torch.tensor([row["input_ids"]])
        output = model.decode(ids, return_marginals=True)
        visible = output.tags[0] != -100
        certainties.append(output.marginals[0][visible].gather(1, output.tags[0][visible].unsqueeze(1)).min().item())
    threshold = sorted(certainties)[len(certainties) // 2]
    some, _ = silver_windows(str(model_dir), untagged, label_names, model.config, threshold=threshold)
    assert len(some) == sum(certainty > threshold for certainty in certainties)


class SilverTrainer(SilverDataTrainerMixin, Trainer):
    pass


def test_a_silver_window_adds_its_weight_times_its_nll(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_BERT))
    batch = tokenizer(["血糖升高", "糖尿病患者"], padding=True, return_tensors="pt")
    labels = torch.tensor([[-100, 1, 2, 0, 0, -100, -100], [-100, 3, 4, 4, 0, 0, -100]])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
    silver = [{"input_ids": batch["input_ids"][1].tolist(), "labels": labels[1].tolist()}]
    torch.manual_seed(1)
    model = tiny_model(num_labels=5, lstm_hidden_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    model.train()
    loss = SilverTrainer(model=model, args=args, silver_windows=silver, silver_weight=0.25).compute_loss(
        model, dict(inputs))
    logits = copy.deepcopy(model)(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    nll = -model.crf(logits, labels, mask=labels != -100, reduction="none")
    torch.testing.assert_close(loss, (nll[0] + 0.25 * nll[1]) / 2)
    full = SilverTrainer(model=model, args=args, silver_windows=silver, silver_weight=1.0)
    torch.testing.assert_close(full.compute_loss(model, dict(inputs)), model(**inputs).loss)
    with pytest.raises(ValueError, match="--silver_weight must be between 0 and 1"):
        SilverTrainer(model=model, args=args, silver_windows=silver, silver_weight=2.0)


def test_train_py_self_training_at_threshold_one_trains_exactly_as_plain_training(trained_model, unlabelled,
                                                                                   tmp_path):
    """And at threshold 0 every window joins (said in the log) and another model comes out."""
    model_dir, _ = trained_model
    common = ("--num_train_epochs", "1", "--num_threads", "1")
    silver = ("--silver_model", str(model_dir), "--extra_text_dirs", str(unlabelled))
    runs = {"plain": (), "threshold1": (*silver, "--silver_threshold", "1"),
            "threshold0": (*silver, "--silver_threshold", "0")}
    weights, logs = {}, {}
    for name, extra in runs.items():
        completed = run_script(small_training(tmp_path / name, *common, *extra))
        weights[name], logs[name] = load_file(tmp_path / name / "model.safetensors"), completed.stderr
    assert "--silver_model: 0 of" in logs["threshold1"]
    assert all(torch.equal(weights["plain"][key], weights["threshold1"][key]) for key in weights["plain"])
    assert "are sure above 0 and join the" in logs["threshold0"] and "--silver_model: 0 of" not in logs["threshold0"]
    assert not all(torch.equal(weights["plain"][key], weights["threshold0"][key]) for key in weights["plain"])


@pytest.mark.parametrize("options, message", [
    (["--silver_model", "m"], "--silver_model tags unlabelled text: give it with --extra_text_dirs DIR"),
    (["--silver_model", "m", "--teacher", "t", "--extra_text_dirs", "u"], "give --teacher (distillation) or "
                                                                          "--silver_model (self-training), not both"),
    (["--silver_model", "m", "--extra_text_dirs", "u", "--silver_threshold", "2"], "must be between 0 and 1"),
])
def test_bad_self_training_options_are_refused_in_one_line(options, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_arguments(train.argument_parser(), ["--output_dir", "unused", *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
