"""modeling_bert_bilstm_crf.py: the config and BertBiLstmCrfForTokenClassification on the CPU with a tiny BERT
(-100 positions invisible to the CRF, loss and decode, loading a plain BERT checkpoint, save -> reload through the
Auto classes in a fresh process, Trainer and bf16 autocast), BIO-constrained Viterbi and context, and the text
functions the model file carries (characters, windows, blanks, BIO <-> spans). The CRF itself is in test_crf.py."""

import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchcrf
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, Trainer, TrainingArguments

import crf as crf_module
from brat_ner.training_data import blank_free_tags
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig
from conftest import REAL_CORPUS, SAMPLE, tiny_model
from crf import CRF, bio_transition_constraints
from dataset_script import brat
from dataset_script.ruijin_ner import TRAINING_CUTS, spans_to_bio
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification
from pipeline_bert_bilstm_crf import _strip_blanks
from processing_bert_bilstm_crf import (
    WHITESPACE_TOKEN,
    CharacterEncoder,
    bio_to_spans,
    split_into_windows,
    tags_with_blanks,
)

NUM_LABELS = 7
VOCAB_SIZE = 100
CLS, SEP, PAD = 1, 2, 0
SMALL_ENCODER = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD)


SMALL_MODEL = dict(SMALL_ENCODER, num_labels=NUM_LABELS, lstm_hidden_size=12, cls_token_id=CLS, sep_token_id=SEP)


def tiny_config(**overrides):
    return BertBiLstmCrfConfig(**{**SMALL_MODEL, **overrides})


def make_model(use_lstm=True, seed=0, **overrides):
    model = tiny_model(seed, **{**SMALL_MODEL, "use_lstm": use_lstm, **overrides}).eval()
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


# ----- bigram features -----


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

    tags = model.decode(input_ids, attention_mask, crf_mask=labels != -100).tags
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
    tags = model.decode(input_ids, attention_mask).tags
    assert tags.shape == input_ids.shape and tags.dtype == torch.long
    invisible = labels == -100  # exactly [CLS], [SEP] and padding
    assert (tags[invisible] == -100).all()
    assert ((tags[~invisible] >= 0) & (tags[~invisible] < NUM_LABELS)).all()
    assert torch.equal(tags, model.decode(input_ids, attention_mask, crf_mask=labels != -100).tags)
    # The same paths as pytorch-crf's Viterbi on the text positions.
    logits = model(input_ids, attention_mask=attention_mask).logits
    reference = torchcrf.CRF(NUM_LABELS, batch_first=True)
    reference.load_state_dict(model.crf.state_dict())
    for row, n in enumerate((attention_mask.sum(1) - 2).tolist()):
        assert tags[row, 1 : n + 1].tolist() == reference.decode(logits[row : row + 1, 1 : n + 1])[0]

    tags, marginals = model.decode(input_ids, attention_mask, return_marginals=True).to_tuple()
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
    bert = bert_class(BertConfig(**SMALL_ENCODER))
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
paths = model.decode(inputs["input_ids"], inputs["attention_mask"]).tags.tolist()
print(json.dumps({"config": type(config).__name__, "model": type(model).__name__,
                  "module": sys.modules[type(model).__module__].__file__, "loss": loss, "paths": paths}))
"""


def test_save_and_reload_through_auto_classes_in_a_fresh_process(tmp_path):
    model = make_model()
    folder, workdir = tmp_path / "model", tmp_path / "elsewhere"
    workdir.mkdir()
    model.save_pretrained(folder)

    names = {path.name for path in folder.iterdir()}
    code = {"modeling_bert_bilstm_crf.py", "configuration_bert_bilstm_crf.py", "crf.py", "pipeline_bert_bilstm_crf.py",
            "processing_bert_bilstm_crf.py"}  # the modelling file and its relative imports
    assert names == {"config.json", "model.safetensors", *code}, names
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["auto_map"] == {
        "AutoConfig": "configuration_bert_bilstm_crf.BertBiLstmCrfConfig",
        "AutoModelForTokenClassification": "modeling_bert_bilstm_crf.BertBiLstmCrfForTokenClassification",
    }
    assert config["custom_pipelines"]["token-classification"]["impl"] == (
        "pipeline_bert_bilstm_crf.BertBiLstmCrfNerPipeline")
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
    assert result["paths"] == model.decode(input_ids, attention_mask).tags.tolist()


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
        tags = model.decode(input_ids, attention_mask).tags
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, reference, rtol=2e-2, atol=2e-2)
    assert tags.shape == input_ids.shape and (tags[labels == -100] == -100).all()


# ----- BIO <-> spans and windows -----


def test_spans_round_trip_and_overlap_policy():
    spans = [("Disease", 0, 5), ("Anatomy", 1, 3), ("Test", 5, 7), ("Drug", 9, 10)]
    tags, not_encoded = spans_to_bio(12, spans)
    assert not_encoded == [("Anatomy", 1, 3)]  # longest first: the nested shorter one gives way
    assert tags[:8] == ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "B-Test", "I-Test", "O"]
    assert bio_to_spans(tags, offset=100) == [("Disease", 100, 105), ("Test", 105, 107), ("Drug", 109, 110)]


def test_bio_to_spans_reads_stray_inside_tags_as_entity_starts():
    assert bio_to_spans(["I-A", "I-A", "I-B", "O", "I-A", "B-A", "I-A"]) == [
        ("A", 0, 2), ("B", 2, 3), ("A", 4, 5), ("A", 5, 7)]


@pytest.fixture
def small_tokenizer(tmp_path):
    vocab = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "糖", "尿", "病", "h", "b", "a", "1", "c", "ａ"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}', encoding="utf-8")
    return AutoTokenizer.from_pretrained(tmp_path)


def test_character_tokens_follow_the_documented_fallbacks(small_tokenizer):
    encoder = CharacterEncoder(small_tokenizer)
    assert [encoder.token(ch) for ch in " \n\t\r\u3000\xa0"] == [WHITESPACE_TOKEN] * 6
    assert [encoder.token(ch) for ch in "\ufeff\u200b\u200d\u2060\xad"] == [WHITESPACE_TOKEN] * 5  # Cf: invisible
    assert [encoder.token(ch) for ch in "糖HbA1c"] == ["糖", "h", "b", "a", "1", "c"]
    assert encoder.token("Ａ") == "ａ"  # its lower case is in the vocabulary
    assert encoder.token("Ｈ") == "h"  # NFKC (full width -> ASCII), lower-cased
    assert encoder.token("１") == "1"
    assert [encoder.token(ch) for ch in ("腺", "ß", "ﬁ")] == ["[UNK]"] * 3  # "ss", "fi": not one character


def test_character_ids_one_per_character_and_window_input(small_tokenizer):
    encoder = CharacterEncoder(small_tokenizer)
    characters = list("糖尿病 HbA1c\n２型")
    vocab = small_tokenizer.get_vocab()
    ids = encoder.ids(characters)
    assert ids == [vocab[encoder.token(ch)] for ch in characters]
    assert ids[3] == ids[9] == vocab[WHITESPACE_TOKEN] and ids[-1] == vocab["[UNK]"]
    assert encoder.ids(characters) == ids  # memoised ids are the same
    assert encoder.window_ids("糖") == [vocab["[CLS]"], vocab["糖"], vocab["[SEP]"]]


def test_windows_cover_text_exactly_once_and_avoid_entities():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("糖尿病。；\n a") for _ in range(rng.randint(0, 300)))
        starts = range(0, max(len(text) - 8, 0), 10)  # entities of up to 8 characters, never overlapping
        spans = [(start, start + rng.randint(1, 8)) for start in rng.sample(starts, min(3, len(starts)))]
        window_chars = rng.randint(9, 60)
        windows = split_into_windows(text, window_chars, spans)
        assert "".join(text[a:b] for a, b in windows) == text
        assert all(0 < b - a <= window_chars for a, b in windows)
        assert all(prev[1] == nxt[0] for prev, nxt in zip(windows, windows[1:]))
        for start, end in spans:
            assert not any(start < a < end for a, _ in windows)  # no span shorter than a window is cut


def test_windows_prefer_sentence_ends():
    text = "甲乙丙。丁戊己庚辛壬癸子丑"
    assert split_into_windows(text, 8) == [(0, 4), (4, 12), (12, 13)]
    assert split_into_windows("甲乙\n丙丁! 戊", 4) == [(0, 3), (3, 6), (6, 8)]  # line break, then "!"
    # Prediction (no entities known): a sentence end beats a later clause separator or line break, a clause
    # separator beats a later line break (PDF text wraps its lines inside words).
    assert split_into_windows("甲乙。丙，丁\n戊己", 8) == [(0, 3), (3, 9)]
    assert split_into_windows("甲乙丙，丁\n戊己", 7) == [(0, 4), (4, 8)]
    assert split_into_windows("甲乙丙丁\n戊己庚", 7) == [(0, 5), (5, 8)]
    # Training (entities blocked): the last sentence end or line break, for the longest window.
    assert split_into_windows("甲乙。丙，丁\n戊己", 8, cuts=TRAINING_CUTS) == [(0, 7), (7, 9)]
    assert split_into_windows("甲乙。丙，丁\n戊己", 8, [(5, 8)], TRAINING_CUTS) == [(0, 3), (3, 9)]


def test_windows_at_their_limits():
    assert split_into_windows("", 5) == []
    assert split_into_windows("糖尿病", 510) == [(0, 3)]
    assert split_into_windows("糖尿病", 3) == [(0, 3)]
    # The only cut that splits no entity is taken, though no sentence ends there.
    assert split_into_windows("abcdefghijkl", 8, [(0, 6), (6, 12)]) == [(0, 6), (6, 12)]
    # A sentence end inside an entity is not a cut; the last cut before the entity is.
    assert split_into_windows("ab。cd。efgh", 7, [(3, 9)]) == [(0, 3), (3, 10)]
    # An entity longer than a window cannot be kept whole: cut at the window's limit.
    assert split_into_windows("a" * 10, 4, [(0, 10)]) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        split_into_windows("abc", 0)


# ----- blanks (skip_blanks): tags and offsets -----


def test_tags_with_blanks_continue_an_entity_only_when_it_goes_on():
    text = "糖 尿\n病 患"
    tags, sources = tags_with_blanks(text, ["B-Disease", "I-Disease", "I-Disease", "B-Reason"])
    assert tags == ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "O", "B-Reason"]
    assert sources == [0, 1, 1, 2, 2, -1, 3]
    # O before, another type before, a B after: the blank is outside.
    assert tags_with_blanks("a b", ["O", "I-Test"])[0] == ["O", "O", "I-Test"]
    assert tags_with_blanks("a b", ["B-Drug", "I-Test"])[0] == ["B-Drug", "O", "I-Test"]
    assert tags_with_blanks("a b", ["B-Test", "B-Test"])[0] == ["B-Test", "O", "B-Test"]
    assert tags_with_blanks("  ", [])[0] == ["O", "O"]
    with pytest.raises(ValueError, match="2 tags for 1 non-blank"):
        tags_with_blanks("a ", ["O", "O"])


def round_trip(text: str, spans) -> tuple[list, list]:
    """Gold spans -> per-character BIO -> the tags of a skip_blanks model -> per-character BIO -> spans, and the
    spans expected back: each trimmed of edge blanks, blank-only ones and those BIO cannot encode left out."""
    tags, not_encoded = spans_to_bio(len(text), spans)
    kept, lost = blank_free_tags(text, tags)
    decoded = bio_to_spans(tags_with_blanks(text, kept)[0])
    expected = list(_strip_blanks(text, bio_to_spans(tags)))  # the pipeline's own trimming of edge blanks
    assert lost == len(bio_to_spans(tags)) - len(expected)
    return decoded, expected


def test_round_trip_on_random_texts_with_blanks():
    generator = random.Random(0)
    for _ in range(500):
        text = "".join(generator.choice("糖尿病 \n\u3000") for _ in range(generator.randint(0, 30)))
        spans = []
        for _ in range(generator.randint(0, 6)):
            if len(text) > 1:
                start = generator.randrange(len(text) - 1)
                spans.append((generator.choice("AB"), start, generator.randint(start + 1, len(text))))
        decoded, expected = round_trip(text, spans)
        assert decoded == expected, (text, spans)


def check_corpus_round_trip(folder: Path) -> int:
    """Every encodable gold entity of every document of ``folder`` comes back at its exact offsets."""
    total = 0
    for txt_path, ann_path in brat.find_documents(folder):
        document = brat.read_document(txt_path, ann_path)
        spans = [(entity.type, entity.start, entity.end) for entity in document.entities]
        decoded, expected = round_trip(document.text, spans)
        assert decoded == expected, txt_path
        _, not_encoded = spans_to_bio(len(document.text), spans)
        assert Counter(expected) == Counter(spans) - Counter(not_encoded), txt_path  # no entity has a blank edge
        total += len(decoded)
    return total


def test_round_trip_offsets_on_the_sample():
    assert check_corpus_round_trip(SAMPLE) > 50


@pytest.mark.real_corpus
def test_round_trip_offsets_on_the_real_corpus():
    assert check_corpus_round_trip(REAL_CORPUS) > 100_000


# ----- BIO-constrained Viterbi -----


LABELS = ["O", "B-Drug", "I-Drug", "B-Test", "I-Test"]
ID2LABEL = dict(enumerate(LABELS))


def is_valid_bio(path):
    names = [LABELS[tag] for tag in path]
    return all(not name.startswith("I-") or (previous[2:] == name[2:] and previous != "O")
               for previous, name in zip(["O", *names], names))


def brute_force_best_valid_path(crf, emissions):
    """The best-scoring valid BIO path of one fully visible sequence, by enumeration."""
    best, best_score = None, float("-inf")
    for path in itertools.product(range(crf.num_tags), repeat=len(emissions)):
        if not is_valid_bio(path):
            continue
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(emissions[t, tag] for t, tag in enumerate(path))
        score = score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
        if score > best_score:
            best, best_score = list(path), score
    return best


@pytest.fixture(params=["sequential", "parallel"])
def algorithms(request, monkeypatch):
    """Both Viterbi implementations: the CPU's, and the CUDA chunked one selected on CPU tensors."""
    monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: request.param == "parallel")


def random_crf(seed):
    torch.manual_seed(seed)
    crf = CRF(len(LABELS), batch_first=True)
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_(std=2.0)  # strong transitions: unconstrained paths are often invalid
    return crf


def test_bio_constraints_from_labels():
    start_allowed, allowed = bio_transition_constraints(ID2LABEL)
    assert start_allowed.tolist() == [True, True, False, True, False]
    # Into I-Drug only from B-Drug and I-Drug; into I-Test only from B-Test and I-Test; anything into O and B-.
    assert allowed[:, 2].tolist() == [False, True, True, False, False]
    assert allowed[:, 4].tolist() == [False, False, False, True, True]
    assert allowed[:, [0, 1, 3]].all()


@pytest.mark.parametrize("seq_len", [1, 2, 3, 6])
def test_constrained_viterbi_is_the_best_valid_path(algorithms, seq_len):
    crf = random_crf(seq_len)
    emissions = torch.randn(12, seq_len, len(LABELS), generator=torch.Generator().manual_seed(seq_len)) * 2
    allowed = bio_transition_constraints(ID2LABEL)
    constrained = crf.viterbi_tags(emissions, allowed=allowed)
    unconstrained = crf.viterbi_tags(emissions)
    for row in range(len(emissions)):
        assert constrained[row].tolist() == brute_force_best_valid_path(crf, emissions[row])
    if seq_len > 1:  # the check has teeth: without the constraint some best paths are invalid
        assert not all(is_valid_bio(path) for path in unconstrained.tolist())


def test_constrained_viterbi_with_holes_joins_visible_positions(algorithms):
    crf = random_crf(5)
    emissions = torch.randn(8, 9, len(LABELS), generator=torch.Generator().manual_seed(5)) * 2
    mask = torch.ones(8, 9, dtype=torch.bool)
    mask[:, [0, 3, 4, 8]] = False  # invisible first, middle and last positions
    tags = crf.viterbi_tags(emissions, mask, bio_transition_constraints(ID2LABEL))
    for row in range(len(emissions)):
        assert (tags[row][~mask[row]] == -100).all()
        assert tags[row][mask[row]].tolist() == brute_force_best_valid_path(crf, emissions[row][mask[row]])


def drug_test_model(**overrides):
    """A tiny model tagging LABELS (Drug and Test)."""
    return tiny_model(vocab_size=50, hidden_size=16, num_hidden_layers=1, intermediate_size=32,
                      max_position_embeddings=64, num_labels=len(LABELS), id2label=ID2LABEL,
                      label2id={v: k for k, v in ID2LABEL.items()}, lstm_hidden_size=8, cls_token_id=1, sep_token_id=2,
                      **overrides)


def test_constrain_bio_leaves_training_gradients_finite():
    """Training is unconstrained (the loss never sees the option); gradients stay finite with it on, and the
    model's decoding follows the config unless overridden."""
    model = drug_test_model(constrain_bio=True)
    with torch.no_grad():
        model.crf.start_transitions[2] = 50.0  # make an invalid start (I-Drug) the unconstrained favourite
    input_ids = torch.randint(3, 50, (3, 12))
    input_ids[:, 0], input_ids[:, -1] = 1, 2
    labels = torch.randint(len(LABELS), (3, 12))
    labels[:, 0] = labels[:, -1] = -100
    loss = model(input_ids, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    constrained, free = model.decode(input_ids).tags, model.decode(input_ids, constrain_bio=False).tags
    assert (constrained[:, 1] != 2).all() and (free[:, 1] == 2).all()


# ----- context windows in the model -----


@pytest.mark.parametrize("seq_len", [1, 7, 40])
def test_masked_context_does_not_change_the_centres_path(algorithms, seq_len):
    """With the emissions fixed, positions the CRF does not see (context) change nothing: the centre's path
    depends on the context only through the encoder."""
    crf = random_crf(seq_len)
    generator = torch.Generator().manual_seed(seq_len)
    centre = torch.randn(4, seq_len, len(LABELS), generator=generator) * 2
    before, after = torch.randn(4, 5, len(LABELS), generator=generator) * 9, torch.randn(4, 3, len(LABELS)) * 9
    with_context = torch.cat([before, centre, after], 1)
    mask = torch.zeros(with_context.shape[:2], dtype=torch.bool)
    mask[:, 5 : 5 + seq_len] = True
    for allowed in (None, bio_transition_constraints(ID2LABEL)):
        alone = crf.viterbi_tags(centre, allowed=allowed)
        assert torch.equal(crf.viterbi_tags(with_context, mask, allowed)[:, 5 : 5 + seq_len], alone)


def test_context_reaches_the_encoder():
    """The centre's emissions change with the context (the encoder and BiLSTM see it), its path's positions do not."""
    model = drug_test_model().eval()
    centre, context = torch.randint(3, 50, (6,)), torch.randint(3, 50, (4,))
    plain = model(torch.cat([torch.tensor([1]), centre, torch.tensor([2])])[None]).logits[0, 1:7]
    with_context = model(torch.cat([torch.tensor([1]), context, centre, context, torch.tensor([2])])[None]).logits
    assert not torch.allclose(plain, with_context[0, 5:11])
