"""BertBiLstmCrfForTokenClassification on the CPU with a tiny BERT: -100 positions invisible to the CRF, loss and
decode, loading a plain BERT checkpoint, save -> reload through the Auto classes in a fresh process, Trainer and
bf16 autocast. The CRF itself is tested in test_crf.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchcrf
from transformers import BertConfig, BertForMaskedLM, BertModel, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_bert_bilstm_crf import BertBiLstmCrfConfig, BertBiLstmCrfForTokenClassification  # noqa: E402

NUM_LABELS = 7
VOCAB_SIZE = 100
CLS, SEP, PAD = 1, 2, 0
TINY_BERT = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD)


def tiny_config(**overrides):
    settings = dict(TINY_BERT, num_labels=NUM_LABELS, lstm_hidden_size=12, cls_token_id=CLS, sep_token_id=SEP)
    return BertBiLstmCrfConfig(**{**settings, **overrides})


def make_model(use_lstm=True, seed=0, **overrides):
    torch.manual_seed(seed)
    model = BertBiLstmCrfForTokenClassification(tiny_config(use_lstm=use_lstm, **overrides)).eval()
    with torch.no_grad():  # CRF and emission scales that make the paths depend on the transitions
        for param in model.crf.parameters():
            param.normal_(std=1.0)
    return model


@pytest.fixture(params=[(True, 0), (False, 0), (True, 101)], ids=["bilstm", "no_lstm", "bilstm_bigrams"])
def model(request):
    use_lstm, bigram_buckets = request.param
    return make_model(use_lstm=use_lstm, bigram_buckets=bigram_buckets, bigram_embedding_size=8)


def make_batch(lengths=(12, 9, 7), seed=0):
    """[CLS] text [SEP] padding, with labels -100 on [CLS], [SEP] and padding (as the dataset builder writes)."""
    generator = torch.Generator().manual_seed(seed)
    seq_len = max(lengths) + 2
    input_ids = torch.full((len(lengths), seq_len), PAD)
    labels = torch.full((len(lengths), seq_len), -100)
    for row, length in enumerate(lengths):
        input_ids[row, 0], input_ids[row, length + 1] = CLS, SEP
        input_ids[row, 1 : length + 1] = torch.randint(3, VOCAB_SIZE, (length,), generator=generator)
        labels[row, 1 : length + 1] = torch.randint(NUM_LABELS, (length,), generator=generator)
    return input_ids, (input_ids != PAD).long(), labels


def without_column(tensor, column):
    return torch.cat([tensor[:, :column], tensor[:, column + 1 :]], 1)


def torchcrf_log_likelihood(model, logits, labels):
    """pytorch-crf's log-likelihood per sequence of the visible positions (moved to the front: it needs prefix
    masks), with the model's CRF parameters: an independent reference."""
    reference = torchcrf.CRF(NUM_LABELS, batch_first=True)
    reference.load_state_dict(model.crf.state_dict())
    visible = labels != -100
    order = torch.argsort((~visible).to(torch.uint8), dim=1, stable=True)
    compact_mask = visible.gather(1, order)
    compact_logits = logits.gather(1, order.unsqueeze(-1).expand_as(logits))
    compact_labels = labels.gather(1, order).masked_fill(~compact_mask, 0)
    return reference(compact_logits, compact_labels, compact_mask, reduction="none")


def test_bigram_features_see_exactly_the_neighbouring_characters():
    # Without encoder layers or BiLSTM, a position's emissions depend on its own character and, through the
    # bigrams, on the characters just before and after it: nothing further.
    model = make_model(use_lstm=False, num_hidden_layers=0, bigram_buckets=101, bigram_embedding_size=8)
    model.bert.embeddings.position_embeddings.weight.data.zero_()  # position-free, to compare positions
    input_ids, attention_mask, _ = make_batch(lengths=(12,))
    logits = model(input_ids, attention_mask=attention_mask).logits
    for changed, moves in ((4, {3, 4, 5}), (9, {8, 9, 10})):
        altered = input_ids.clone()
        altered[0, changed] = 3 + (altered[0, changed] - 2) % (VOCAB_SIZE - 3)
        altered_logits = model(altered, attention_mask=attention_mask).logits
        moved = {t for t in range(input_ids.shape[1]) if not torch.allclose(altered_logits[0, t], logits[0, t])}
        assert moved == moves


def test_bigram_features_need_input_ids():
    model = make_model(bigram_buckets=101, bigram_embedding_size=8)
    input_ids, attention_mask, _ = make_batch()
    with pytest.raises(ValueError, match="input_ids"):
        model(inputs_embeds=model.bert.embeddings.word_embeddings(input_ids), attention_mask=attention_mask)


# ----- -100 positions are invisible to the CRF -----


def test_middle_position_labelled_minus_100_is_skipped(model):
    input_ids, attention_mask, labels = make_batch()
    column = 4  # inside every sequence
    labels[:, column] = -100
    output = model(input_ids, attention_mask=attention_mask, labels=labels)
    logits, kept = without_column(output.logits, column), without_column(labels, column)
    expected = -model.crf(logits, kept, mask=kept != -100, reduction="none").mean()
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(output.loss, -torchcrf_log_likelihood(model, output.logits, labels).mean())

    tags = model.decode(input_ids, attention_mask, crf_mask=labels != -100)
    assert (tags[:, column] == -100).all()
    assert torch.equal(without_column(tags, column), model.crf.viterbi_tags(logits, kept != -100))


def test_padding_cls_and_sep_do_not_change_the_loss(model):
    input_ids, attention_mask, labels = make_batch()
    output = model(input_ids, attention_mask=attention_mask, labels=labels)
    # Only the text positions count: the same loss from pytorch-crf on logits[1 : length + 1] of each row.
    per_sequence = [
        torchcrf_log_likelihood(model, output.logits[row : row + 1, 1 : n + 1], labels[row : row + 1, 1 : n + 1])
        for row, n in enumerate((attention_mask.sum(1) - 2).tolist())
    ]
    torch.testing.assert_close(output.loss, -torch.cat(per_sequence).mean())

    # More padding (attention 0, label -100) leaves loss and paths unchanged (BERT mask, packed LSTM, CRF mask).
    extra = 5
    padded_ids = torch.cat([input_ids, torch.full((len(input_ids), extra), PAD)], 1)
    padded_mask = torch.cat([attention_mask, torch.zeros(len(input_ids), extra, dtype=torch.long)], 1)
    padded_labels = torch.cat([labels, torch.full((len(input_ids), extra), -100)], 1)
    padded = model(padded_ids, attention_mask=padded_mask, labels=padded_labels)
    torch.testing.assert_close(padded.loss, output.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded.logits[:, : input_ids.shape[1]] * attention_mask[..., None],
                               output.logits * attention_mask[..., None], rtol=1e-4, atol=1e-5)

    # Whatever the emissions at the invisible positions, the loss is the same.
    noisy_logits = output.logits + 10 * torch.randn_like(output.logits) * (labels == -100).unsqueeze(-1)
    torch.testing.assert_close(-model.crf(noisy_logits, labels, labels != -100), output.loss)


def test_decode_shape_values_and_default_mask(model):
    input_ids, attention_mask, labels = make_batch()
    tags = model.decode(input_ids, attention_mask)
    assert tags.shape == input_ids.shape and tags.dtype == torch.long
    invisible = labels == -100  # exactly [CLS], [SEP] and padding
    assert (tags[invisible] == -100).all()
    assert ((tags[~invisible] >= 0) & (tags[~invisible] < NUM_LABELS)).all()
    assert torch.equal(tags, model.decode(input_ids, attention_mask, crf_mask=labels != -100))
    # The same paths as pytorch-crf's Viterbi on the text positions.
    logits = model(input_ids, attention_mask=attention_mask).logits
    reference = torchcrf.CRF(NUM_LABELS, batch_first=True)
    reference.load_state_dict(model.crf.state_dict())
    for row, n in enumerate((attention_mask.sum(1) - 2).tolist()):
        assert tags[row, 1 : n + 1].tolist() == reference.decode(logits[row : row + 1, 1 : n + 1])[0]

    tags, marginals = model.decode(input_ids, attention_mask, return_marginals=True)
    assert marginals.shape == (*input_ids.shape, NUM_LABELS)
    torch.testing.assert_close(marginals.sum(-1), (~invisible).float())


# ----- loss, with and without the BiLSTM -----


@pytest.mark.parametrize("use_lstm", [True, False])
def test_loss_is_mean_negative_log_likelihood_over_sequences(use_lstm):
    model = make_model(use_lstm=use_lstm)
    assert (model.lstm is not None) == use_lstm
    assert model.classifier.in_features == (24 if use_lstm else 32)  # 2 x 12 BiLSTM or BERT's hidden size
    input_ids, attention_mask, labels = make_batch(lengths=(12, 3, 7, 1))
    output = model(input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (*input_ids.shape, NUM_LABELS)
    per_sequence = -model.crf(output.logits, labels, labels != -100, reduction="none")
    assert per_sequence.shape == (4,) and (per_sequence > 0).all()
    torch.testing.assert_close(output.loss, per_sequence.mean())
    assert model(input_ids, attention_mask=attention_mask).loss is None

    model.train()
    loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    for name in ("bert.embeddings.word_embeddings.weight", "classifier.weight", "crf.transitions"):
        gradient = model.get_parameter(name).grad
        assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0, name
    if use_lstm:
        assert model.lstm.weight_ih_l0.grad.abs().sum() > 0


# ----- loading a plain BERT checkpoint -----


@pytest.mark.parametrize("bert_class", [BertForMaskedLM, BertModel])
def test_from_pretrained_bert_checkpoint_keeps_encoder_and_initialises_head(bert_class, tmp_path):
    torch.manual_seed(1)
    bert = bert_class(BertConfig(**TINY_BERT))
    bert.save_pretrained(tmp_path)
    prefix = "bert." if bert_class is BertForMaskedLM else ""
    checkpoint = bert.state_dict()

    config = BertBiLstmCrfConfig.from_pretrained(tmp_path, num_labels=NUM_LABELS, cls_token_id=CLS, sep_token_id=SEP,
                                                 lstm_hidden_size=16)
    model = BertBiLstmCrfForTokenClassification.from_pretrained(tmp_path, config=config)
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.1.attention.self.query.weight",
                 "encoder.layer.0.output.LayerNorm.bias"):
        assert torch.equal(model.get_parameter(f"bert.{name}"), checkpoint[prefix + name]), name
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0_reverse", "classifier.weight",
                 "crf.start_transitions", "crf.end_transitions", "crf.transitions"):
        param = model.get_parameter(name)
        assert torch.isfinite(param).all() and param.abs().sum() > 0, name
        assert param.unique().numel() > 1, name  # really initialised, not a constant fill
    assert model.crf.transitions.abs().max() <= 0.1
    input_ids, attention_mask, labels = make_batch()
    assert torch.isfinite(model(input_ids, attention_mask=attention_mask, labels=labels).loss)


# ----- save_pretrained -> AutoModelForTokenClassification in a fresh process -----

RELOAD_SCRIPT = """
import json, sys
import torch
from transformers import AutoConfig, AutoModelForTokenClassification
folder, batch = sys.argv[1], json.loads(sys.argv[2])
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
inputs = {name: torch.tensor(value) for name, value in batch.items()}
with torch.no_grad():
    loss = model(**inputs).loss.item()
paths = model.decode(inputs["input_ids"], inputs["attention_mask"]).tolist()
print(json.dumps({"config": type(config).__name__, "model": type(model).__name__,
                  "module": sys.modules[type(model).__module__].__file__, "loss": loss, "paths": paths}))
"""


def test_save_and_reload_through_auto_classes_in_a_fresh_process(tmp_path):
    model = make_model()
    folder, workdir = tmp_path / "model", tmp_path / "elsewhere"
    workdir.mkdir()
    model.save_pretrained(folder)

    names = {path.name for path in folder.iterdir()}
    assert names == {"config.json", "model.safetensors", "modeling_bert_bilstm_crf.py"}, names
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["auto_map"] == {
        "AutoConfig": "modeling_bert_bilstm_crf.BertBiLstmCrfConfig",
        "AutoModelForTokenClassification": "modeling_bert_bilstm_crf.BertBiLstmCrfForTokenClassification",
    }
    assert config["model_type"] == "bert_bilstm_crf" and config["use_lstm"] is True

    input_ids, attention_mask, labels = make_batch()
    batch = {"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist(), "labels": labels.tolist()}
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(folder), json.dumps(batch)], cwd=workdir,
                               env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["config"] == "BertBiLstmCrfConfig" and result["model"] == "BertBiLstmCrfForTokenClassification"
    repo = Path(__file__).resolve().parents[1]
    assert repo not in Path(result["module"]).resolve().parents  # the code came from the saved folder
    with torch.no_grad():
        loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss.item()
    assert result["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert result["paths"] == model.decode(input_ids, attention_mask).tolist()


# ----- Trainer, autocast -----


class TinyDataset(torch.utils.data.Dataset):
    """Random text whose labels depend on the token (id % 7): learnable in a few steps."""

    def __init__(self, size=16):
        input_ids, self.attention_mask, labels = make_batch(lengths=[10 - i % 5 for i in range(size)], seed=3)
        self.input_ids = input_ids
        self.labels = torch.where(labels == -100, labels, input_ids % NUM_LABELS)

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, index):
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index]}


def dataset_loss(model, dataset):
    model.eval()
    with torch.no_grad():
        return model(dataset.input_ids, attention_mask=dataset.attention_mask, labels=dataset.labels).loss.item()


def test_trainer_steps_decrease_the_loss(tmp_path):
    model = make_model(seed=2)
    dataset = TinyDataset()
    before = dataset_loss(model, dataset)
    arguments = TrainingArguments(output_dir=str(tmp_path), max_steps=15, per_device_train_batch_size=8,
                                  learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                                  logging_steps=1, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 15 and all(map(lambda value: value == value, losses))  # no nan
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    assert dataset_loss(model, dataset) < 0.8 * before


def test_trainer_gradient_accumulation_averages_the_mean_loss(tmp_path):
    """The loss is already a mean, so the Trainer must divide it by the accumulation steps (not expect the model
    to normalise by ``num_items_in_batch``): the logged loss of 2 x 4 sequences is the mean over the 8."""
    torch.manual_seed(4)
    model = BertBiLstmCrfForTokenClassification(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    dataset = TinyDataset(size=8)
    expected = dataset_loss(model, dataset)
    arguments = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                                  gradient_accumulation_steps=2, learning_rate=0.0, report_to=[], use_cpu=True,
                                  save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset)
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_bf16_autocast_on_cpu_is_close_to_float32(model):
    input_ids, attention_mask, labels = make_batch()
    reference = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(input_ids, attention_mask=attention_mask, labels=labels)
        tags = model.decode(input_ids, attention_mask)
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, reference, rtol=2e-2, atol=2e-2)
    assert tags.shape == input_ids.shape and (tags[labels == -100] == -100).all()
