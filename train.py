#!/usr/bin/env python
"""Fine-tune BERT -> BiLSTM -> CRF for character-level NER on a brat corpus.

    python train.py --data_dir ../shared/data/ruijin_round1/train --model_name_or_path bert-base-chinese \
        --output_dir outputs/ruijin
    accelerate launch train.py ...            # several GPUs or nodes (accelerate's DDP)
    python train.py configs/quickstart.json   # arguments from a JSON file
    python train.py configs/quickstart.json --output_dir other/ --num_train_epochs 5   # ... and overrides

The corpus is read through ``dataset_script`` (windows of characters, splits by document), each character
becomes one model position (``CharacterEncoder``), and ``Trainer`` does the rest: two learning rates
(pretrained encoder, new head), evaluation every epoch with entity-level seqeval on CRF-decoded paths, the
best checkpoint by validation micro-F1, early stopping, resumption. At the end the test split is scored and
the per-type reports (``test_report``: strict, type and both offsets; ``test_report_overlap``: type and
overlapping spans, one to one), the plots and the training figures are written to ``--output_dir``.

    python train.py ... --context_chars 64      # each window read with 64 characters of context on each side
    python train.py ... --constrain_bio false   # Viterbi may produce invalid BIO (I-X after O), as before
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    DataCollatorForTokenClassification,
    EarlyStoppingCallback,
    HfArgumentParser,
    ProgressCallback,
    TrainerState,
    set_seed,
)
from transformers.utils import logging as transformers_logging

from adversarial_training import FgmTrainerMixin
from dataset_script import ruijin_ner
from modeling_bert_bilstm_crf import (
    BertBiLstmCrfConfig,
    BertBiLstmCrfForTokenClassification,
    CharacterEncoder,
    bio_to_spans,
    blank_free_tags,
    check_window_fits,
    encoder_positions,
)
from ner_evaluation import EntitySeqeval, reports_to_markdown, score_overlapping_entities, summary, write_reports
from run_safety import (
    RunArguments,
    atomic_write,
    claim_output_dir,
    parse_arguments,
    resume_checkpoint,
    run_main,
    training_arguments,
)
from time_budget import TimeBudgetTrainer, TimeBudgetTrainingArguments, measured_throughput
from weight_average import WeightAverageTrainerMixin

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    _argument_group_name = "model (this project)"

    model_name_or_path: str = field(
        default="bert-base-chinese",
        metadata={"help": "Pretrained BERT (Hub id or folder), e.g. one written by pretrain_mlm.py, or a checkpoint "
                          "of this model. Ignored for the weights when --encoder_config is given."},
    )
    encoder_config: str | None = field(
        default=None,
        metadata={"help": "Build the encoder from this BERT config (file or folder) with random weights instead of "
                          "loading pretrained ones: for tests and the offline quickstart."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (vocabulary) folder or Hub id, if not --model_name_or_path."}
    )
    use_lstm: bool = field(default=True, metadata={"help": "BERT -> BiLSTM -> CRF; false for BERT -> CRF."})
    lstm_hidden_size: int = field(default=256, metadata={"help": "BiLSTM units per direction."})
    lstm_layers: int = field(default=1)
    head_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Learning rate of the BiLSTM, linear and CRF layers, which start from scratch; "
                          "--learning_rate is the pretrained encoder's."},
    )
    bigram_buckets: int = field(
        default=0,
        metadata={"help": "Character-bigram embeddings hashed into this many buckets, read by the BiLSTM beside the "
                          "encoder's output (0: none; see docs/experiments.md for what they were worth)."},
    )
    bigram_embedding_size: int = field(default=64, metadata={"help": "Size of each bigram embedding."})
    skip_blanks: bool = field(
        default=True,
        metadata={"help": "Give blank characters (whitespace) no model position: about 14%% less work per character "
                          "of the Ruijin corpus, as accurate on validation (docs/experiments.md); blanks are tagged "
                          "from their neighbours (saved in the config, so prediction does the same). false: one "
                          "position per character, blanks included, as models trained before it."},
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "BERT attention: sdpa or eager."})
    constrain_bio: bool = field(
        default=True,
        metadata={"help": "Viterbi decoding (evaluation and, saved in the config, prediction) may only produce "
                          "valid BIO: no I-X after O, after another type or at the start. Training is unchanged. "
                          "On by default: as good or better on validation in both CPU models measured "
                          "(docs/experiments.md); false decodes as before."},
    )


@dataclass
class DataArguments:
    _argument_group_name = "corpus and training (this project)"

    data_dir: str = field(
        default="data/sample",
        metadata={"help": "A brat corpus: .txt + .ann files, or train/ validation/ test/ folders of them."},
    )
    max_chars: int = field(
        default=510, metadata={"help": "Window length in characters (the model sees [CLS] + window + [SEP])."}
    )
    event_triggers: str = field(
        default="skip", metadata={"help": "Event triggers (T lines of the annotation.conf's [events] types, or "
                                          "without a conf those that E lines name): skip them, or include them "
                                          "as entity types.", "choices": ["skip", "include"]}
    )
    context_chars: int = field(
        default=0, metadata={"help": "Characters of the document before and after each window that the encoder and "
                                     "BiLSTM see but the CRF, loss and metrics do not (0: none). The encoder needs "
                                     "max_chars + 2 * context_chars + 2 positions."}
    )
    rare_type_share: float = field(
        default=0.02, metadata={"help": "An entity type is rare when it has less than this share of the "
                                        "training entities."}
    )
    rare_type_oversampling: int = field(
        default=3, metadata={"help": "Training windows that hold an entity of a rare type are seen this many "
                                     "times per epoch (1: no oversampling; 3 raised validation macro-F1 in the "
                                     "README's CPU runs)."}
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation F1 (0: never)."}
    )


@dataclass
class NerTrainingArguments(TimeBudgetTrainingArguments):
    """``TrainingArguments`` with this project's defaults: evaluate and save every epoch, keep the best model
    by validation micro-F1, batches of similar lengths, warmup, weight decay; ``--time_budget_minutes``."""

    _argument_group_name = "Trainer (transformers' TrainingArguments, with this project's defaults)"

    output_dir: str | None = field(default="outputs/ner")
    learning_rate: float = field(default=3e-5, metadata={"help": "Learning rate of the BERT encoder."})
    num_train_epochs: float = field(default=10.0)
    per_device_train_batch_size: int = field(default=32)
    per_device_eval_batch_size: int = field(default=64)
    warmup_steps: float = field(default=0.1)
    weight_decay: float = field(default=0.01)
    eval_strategy: str = field(default="epoch")
    save_strategy: str = field(default="epoch")
    logging_strategy: str = field(default="epoch")
    save_total_limit: int | None = field(default=2)
    load_best_model_at_end: bool = field(default=True)
    metric_for_best_model: str | None = field(default="f1")
    train_sampling_strategy: str = field(default="group_by_length")
    report_to: None | str | list[str] = field(default="none")
    bf16: bool = field(
        default_factory=lambda: torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        metadata={"help": "bf16 mixed precision; on by default where the GPU supports it."},
    )
    # Pinned memory speeds copies to an accelerator only; without one torch warns at every evaluation.
    dataloader_pin_memory: bool = field(default_factory=lambda: torch.accelerator.is_available())
    ema_decay: float | None = field(
        default=None,
        metadata={"help": "Keep an exponential moving average of the weights with this decay (e.g. 0.995) and "
                          "evaluate, checkpoint and save the average instead of the last step's weights."},
    )
    fgm_epsilon: float | None = field(
        default=None,
        metadata={"help": "Adversarial training (FGM): a second pass per step with the character and bigram "
                          "embeddings moved this far along their gradient (e.g. 1.0; 0: off); a step costs about "
                          "twice."},
    )


def main():
    model_args, data_args, run_args, training_args = parse_arguments(argument_parser())
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers_logging.set_tqdm_hook(without_checkpoint_bars)
    set_seed(training_args.seed)

    # Before the corpus is read: a window longer than the encoder's positions would fail only inside training.
    name = "--max_chars + 2 * --context_chars" if data_args.context_chars else "--max_chars"
    positions = encoder_positions(model_args.encoder_config, model_args.model_name_or_path)
    check_window_fits(data_args.max_chars + 2 * data_args.context_chars, positions, name)
    claim_output_dir("train.py", training_args, run_args, finished_marker="test_report.json")
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    with training_args.main_process_first(desc="preparing the corpus"):  # one process builds, the others read
        corpus, corpus_stats = ruijin_ner.load(data_args.data_dir, max_chars=data_args.max_chars,
                                               context_chars=data_args.context_chars,
                                               event_triggers=data_args.event_triggers, return_stats=True)
        check_splits_have_text(corpus_stats, data_args.data_dir)
        label_names = corpus["train"].features["ner_tags"].feature.names
        encoded = corpus.map(
            encode_batch, batched=True,
            fn_kwargs={"tokenizer": tokenizer, "label_names": label_names, "skip_blanks": model_args.skip_blanks},
            remove_columns=["tokens", "ner_tags", "context_before", "context_after"], desc="Encoding windows",
        )
        warn_blank_only_entities(encoded)
    train_set = oversample_rare_types(encoded["train"], label_names, data_args)

    model = build_model(model_args, tokenizer, label_names, data_args)
    metric = NerMetrics(label_names)
    callbacks = [EarlyStoppingCallback(data_args.early_stopping_patience)] if data_args.early_stopping_patience else []
    trainer = BertBiLstmCrfTrainer(
        model=model,
        args=training_args,
        head_learning_rate=model_args.head_learning_rate,
        ema_decay=training_args.ema_decay,
        fgm_epsilon=training_args.fgm_epsilon,
        train_dataset=train_set,
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorForTokenClassification(
            tokenizer, pad_to_multiple_of=8 if training_args.bf16 or training_args.fp16 else None
        ),
        processing_class=tokenizer,
        compute_metrics=metric,
        # Metrics on the CRF's Viterbi paths, decoded batch by batch (no emissions kept in memory).
        preprocess_logits_for_metrics=lambda logits, labels: model.viterbi_tags(logits, labels != -100),
        callbacks=callbacks,
    )
    if not training_args.disable_tqdm:  # the progress bar, with a line per epoch instead of metric dicts
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(EpochLineCallback)

    checkpoint = resume_checkpoint(training_args, run_args, training_arguments(model_args, data_args, training_args))
    start = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json")) if checkpoint else None
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    figures = training_figures(train_result.metrics, start, trainer.state, train_set)
    trainer.save_metrics("train", figures)

    test_output = trainer.predict(encoded["test"], metric_key_prefix="test")
    trainer.save_metrics("test", test_output.metrics)
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        write_reports(metric.last_reports, output_dir / "test_report")
        write_corpus_summary(corpus_stats, data_args, model_args, output_dir / "corpus.json")
        plot_training(trainer.state, metric.last_reports["strict"], output_dir)
        best = f"; best validation micro-F1 {trainer.state.best_metric:.3f}" if trainer.state.best_metric is not None else ""
        print(f"Trained {trainer.state.epoch:g} epochs in {figures['train_runtime']:.1f} s "
              f"({figures['train_characters_per_second']:,.0f} characters/s){best}. Test split, per type:\n")
        print(reports_to_markdown(metric.last_reports))
        print(f"Model, reports and plots in {output_dir}")


def argument_parser() -> HfArgumentParser:
    """The project's options in their own groups, listed by --help before transformers' TrainingArguments."""
    return HfArgumentParser(
        (ModelArguments, DataArguments, RunArguments, NerTrainingArguments),
        usage="train.py [CONFIG.json] [--option VALUE ...]",
        description="Fine-tune BERT -> BiLSTM -> CRF for character-level NER on a brat corpus. A JSON file of "
                    "option values may come first; options after it override its values.",
    )


def without_checkpoint_bars(factory, args, kwargs):
    """transformers' tqdm hook: no 'Writing model shards' bar at every epoch's checkpoint (the training bar
    already shows progress); other bars (downloads, say) unchanged."""
    if kwargs.get("desc") == "Writing model shards":
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


def check_splits_have_text(stats, data_dir):
    """Training, validation and the test report each need text; say so before training rather than after."""
    empty = [str(split) for split in ruijin_ner.SPLITS if not stats.windows[str(split)]]
    if empty:
        verb = "splits have" if len(empty) > 1 else "split has"
        raise ValueError(f"{data_dir}: the {' and '.join(empty)} {verb} no text (documents per split: "
                         f"{dict(stats.documents)}); train.py needs all three: add documents, or give train/, "
                         "validation/ and test/ folders")


def encode_batch(batch, tokenizer, label_names, skip_blanks=False):
    """One model position per character (per non-blank character with ``skip_blanks``): [CLS] context_before
    window context_after [SEP], labels -100 on the special tokens and the context (the encoder sees the
    context; the CRF, the loss and the metrics do not). ``characters``: the text's characters in the window and
    its context; ``blank_only_entities``: entities lost because ``skip_blanks`` leaves them no position."""
    encoder = CharacterEncoder(tokenizer, skip_blanks)
    label_ids = {name: index for index, name in enumerate(label_names)}
    columns = {"input_ids": [], "labels": [], "characters": [], "blank_only_entities": []}
    for characters, tags, before, after in zip(batch["tokens"], batch["ner_tags"], batch["context_before"],
                                               batch["context_after"]):
        lost = 0
        if skip_blanks:
            names, lost = blank_free_tags(characters, [label_names[tag] for tag in tags])
            tags = [label_ids[name] for name in names]
        columns["input_ids"].append(encoder.window_ids(characters, before, after))
        columns["labels"].append([-100] * (1 + len(encoder.fed(before))) + tags
                                 + [-100] * (len(encoder.fed(after)) + 1))
        columns["characters"].append(len(before) + len(characters) + len(after))
        columns["blank_only_entities"].append(lost)
    columns["attention_mask"] = [[1] * len(ids) for ids in columns["input_ids"]]
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    return columns


def warn_blank_only_entities(encoded) -> None:
    """``--skip_blanks`` gives blanks no position, so an entity of nothing but blanks cannot be learnt: say how
    many (none in the Ruijin corpus)."""
    lost = {split: sum(encoded[split]["blank_only_entities"]) for split in encoded}
    if any(lost.values()):
        logger.warning("--skip_blanks: %s entities hold nothing but blanks and are left out (per split: %s)",
                       sum(lost.values()), lost)


def oversample_rare_types(train_set, label_names, data_args):
    """Repeat training windows that hold an entity of a rare type, so the rare types weigh more per epoch."""
    if data_args.rare_type_oversampling <= 1:
        return train_set
    begin_types = {index: name[2:] for index, name in enumerate(label_names) if name.startswith("B-")}
    window_types = [{begin_types[tag] for tag in labels if tag in begin_types} for labels in train_set["labels"]]
    counts = Counter(entity_type for labels in train_set["labels"] for tag in labels
                     if (entity_type := begin_types.get(tag)))
    total = sum(counts.values())
    rare = {entity_type for entity_type, count in counts.items() if count < data_args.rare_type_share * total}
    repeats = [data_args.rare_type_oversampling if types & rare else 1 for types in window_types]
    logger.info("Rare types %s: %d windows repeated %d times", sorted(rare), sum(r > 1 for r in repeats),
                data_args.rare_type_oversampling)
    return train_set.select([index for index, repeat in enumerate(repeats) for _ in range(repeat)])


def build_model(model_args, tokenizer, label_names, data_args):
    settings = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "use_lstm": model_args.use_lstm,
        "lstm_hidden_size": model_args.lstm_hidden_size,
        "lstm_layers": model_args.lstm_layers,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "window_chars": data_args.max_chars,
        "context_chars": data_args.context_chars,
        "constrain_bio": model_args.constrain_bio,
        "bigram_buckets": model_args.bigram_buckets,
        "bigram_embedding_size": model_args.bigram_embedding_size,
        "skip_blanks": model_args.skip_blanks,
    }
    config = model_config(model_args.encoder_config or model_args.model_name_or_path, settings)
    if model_args.encoder_config:
        config._attn_implementation = model_args.attn_implementation
        return BertBiLstmCrfForTokenClassification(config)
    check_saved_bigram_table(model_args)
    return BertBiLstmCrfForTokenClassification.from_pretrained(
        model_args.model_name_or_path, config=config, attn_implementation=model_args.attn_implementation
    )


def check_saved_bigram_table(model_args):
    """A folder with bigram embeddings (written by pretrain_embeddings.py, or a checkpoint of this model) fixes
    their shape: refuse other bigram options before loading fails deep inside transformers, or drops the table."""
    saved, _ = BertConfig.get_config_dict(model_args.model_name_or_path)
    if not saved.get("bigram_buckets"):
        return
    shape = (saved["bigram_buckets"], saved["bigram_embedding_size"])
    if (model_args.bigram_buckets, model_args.bigram_embedding_size) != shape:
        raise ValueError(f"--model_name_or_path {model_args.model_name_or_path} holds bigram embeddings of "
                         f"{shape[0]} buckets x {shape[1]}: give --bigram_buckets {shape[0]} "
                         f"--bigram_embedding_size {shape[1]} (got {model_args.bigram_buckets} x "
                         f"{model_args.bigram_embedding_size})")


def model_config(name_or_path, settings):
    """This model's config from a BERT config (or a checkpoint of this model) and the head's settings. Read as a
    plain dict, so transformers does not warn that a `bert` config builds another model type: that is the intent."""
    config_dict, _ = BertConfig.get_config_dict(name_or_path)
    config_dict.pop("model_type", None)
    return BertBiLstmCrfConfig.from_dict(config_dict, **settings)


class BertBiLstmCrfTrainer(FgmTrainerMixin, WeightAverageTrainerMixin, TimeBudgetTrainer):
    """``Trainer`` with two learning rates: ``args.learning_rate`` for the pretrained encoder and
    ``head_learning_rate`` for the BiLSTM, linear and CRF layers, which start from random weights and need a
    far larger step. Biases, LayerNorm weights and the CRF transitions get no weight decay. With ``ema_decay``,
    a moving average of the weights is what gets evaluated and saved (``weight_average.py``); with
    ``fgm_epsilon``, every step adds an adversarial pass (``adversarial_training.py``)."""

    def __init__(self, *args, head_learning_rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(self.parameter_groups(model), **optimizer_kwargs)
        return self.optimizer

    def parameter_groups(self, model):
        groups = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            is_encoder = name.startswith(model.base_model_prefix + ".")
            decays = parameter.ndim >= 2 and not name.startswith("crf.")
            key = (is_encoder, decays)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "lr": self.args.learning_rate if is_encoder else self.head_learning_rate,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                }
            groups[key]["params"].append(parameter)
        return list(groups.values())


class NerMetrics:
    """``compute_metrics`` for Trainer: entity-level scores of CRF-decoded tag ids (``-100`` where the label is
    ``-100``), strict (seqeval) and overlap (``score_overlapping_entities`` on the entities of the same decoded
    windows, each window its own document). Keeps the last full per-type reports, ``{"strict": ...,
    "overlap": ...}``, for the test report; the headline metrics are the strict ones, the overlap ones are
    prefixed ``overlap_``."""

    def __init__(self, label_names):
        self.label_names = label_names
        self.metric = EntitySeqeval()
        self.last_reports = None

    def __call__(self, eval_prediction):
        predictions, references = [], []
        for predicted, gold in zip(eval_prediction.predictions, eval_prediction.label_ids):
            visible = gold != -100
            predictions.append([self.label_names[tag] for tag in predicted[visible]])
            references.append([self.label_names[tag] for tag in gold[visible]])
        strict = self.metric.compute(predictions=predictions, references=references)
        overlap = score_overlapping_entities(_window_entities(references), _window_entities(predictions))
        self.last_reports = {"strict": strict, "overlap": overlap}
        per_type = {f"f1_{name}": row["f1-score"] for name, row in strict.items() if "avg" not in name}
        overlap_summary = {f"overlap_{name}": value for name, value in summary(overlap).items()}
        return {**summary(strict), **per_type, **overlap_summary}


def _window_entities(tag_sequences):
    """``(window index, type, start, end)`` of BIO tag sequences, read as seqeval reads them (``bio_to_spans``)."""
    return [(index, *span) for index, tags in enumerate(tag_sequences) for span in bio_to_spans(tags)]


class EpochLineCallback(ProgressCallback):
    """The training progress bar, and at each evaluation one line with the figures that matter (losses,
    validation micro/macro-F1, time) instead of the metric dicts and a progress bar per evaluation."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.line_start, self.training_loss = time.monotonic(), None

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass  # a few seconds of validation need no bar of their own

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None:
            return
        if "loss" in logs:
            self.training_loss = logs["loss"]
        if "eval_f1" in logs:
            now = time.monotonic()
            loss = f"loss {self.training_loss:.3f} (validation {logs['eval_loss']:.3f})" \
                if self.training_loss is not None else f"validation loss {logs['eval_loss']:.3f}"
            self.training_bar.write(
                f"epoch {state.epoch:g}/{args.num_train_epochs:g}: {loss}, validation micro-F1 "
                f"{logs['eval_f1']:.3f}, macro-F1 {logs['eval_macro_f1']:.3f}, {now - self.line_start:.1f} s")
            self.line_start = now


def training_figures(metrics, start, end, train_set):
    """Training throughput of this run (from the ``start`` state of a resumed checkpoint, if any, to the ``end``
    state): windows, optimizer steps and characters of text (no padding, [CLS] or [SEP]) per second, and peak
    GPU memory."""
    start_epoch, start_step = (start.epoch or 0, start.global_step) if start else (0, 0)
    epochs, steps = (end.epoch or 0) - start_epoch, end.global_step - start_step
    figures = measured_throughput(metrics, epochs, steps, len(train_set))
    characters = sum(train_set["characters"])  # blanks included with --skip_blanks too
    figures["train_characters_per_second"] = characters * epochs / metrics["train_runtime"]
    if torch.cuda.is_available():
        figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return figures


def write_corpus_summary(stats, data_args, model_args, path):
    """What the model was trained and tested on, and the encoder it started from, for the model card."""
    split_folders = ruijin_ner.split_folders(Path(data_args.data_dir))
    corpus_summary = {
        "data_dir": data_args.data_dir,
        "max_chars": data_args.max_chars,
        "context_chars": data_args.context_chars,
        "split_rule": "the corpus' train/validation/test folders" if split_folders
        else "by a hash of the document group id, 80/10/10",
        "splits": {split: {"documents": stats.documents[split], "windows": stats.windows[split]}
                   for split in ("train", "validation", "test")},
        "entities_read": stats.entities_read,
        "entities_encoded": stats.entities_encoded,
        # Whether the start was a folder here (an encoder from pretrain_mlm.py, embeddings from
        # pretrain_embeddings.py), which the model card must not name as a Hub model even once it is gone.
        "encoder": {"model_name_or_path": model_args.model_name_or_path, "encoder_config": model_args.encoder_config,
                    "local_folder": Path(model_args.model_name_or_path).is_dir()},
    }
    atomic_write(path, json.dumps(corpus_summary, indent=2))


def plot_training(state, test_report, output_dir):
    """Losses and validation F1 per epoch with the chosen (best) epoch marked, test F1 per type with each type's
    support, as PNG for people who would rather look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(entry["epoch"], entry["loss"]) for entry in state.log_history if "loss" in entry]
    evaluation = [entry for entry in state.log_history if "eval_loss" in entry]
    figure, (loss_axis, f1_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([epoch for epoch, _ in train], [loss for _, loss in train], marker="o", label="training")
    loss_axis.plot([e["epoch"] for e in evaluation], [e["eval_loss"] for e in evaluation], marker="o",
                   label="validation")
    loss_axis.set(xlabel="epoch", ylabel="CRF negative log-likelihood", title="Loss")
    for key, label in (("eval_f1", "micro-F1"), ("eval_macro_f1", "macro-F1")):
        f1_axis.plot([e["epoch"] for e in evaluation], [e[key] for e in evaluation], marker="o", label=label)
    f1_axis.set(xlabel="epoch", ylabel="F1", title="Validation entity F1", ylim=(0, 1))
    best_epoch = chosen_epoch(state)
    if best_epoch is not None:
        for axis in (loss_axis, f1_axis):
            axis.axvline(best_epoch, color="grey", linestyle="--", label=f"chosen: epoch {best_epoch:g}")
    loss_axis.legend()
    f1_axis.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "training_curves.png", dpi=120)
    plt.close(figure)

    types = [name for name in test_report if "avg" not in name]
    figure, axis = plt.subplots(figsize=(10, 4))
    # The support tells a type with one test entity (F1 0 or 1 by chance) from a well-measured one.
    axis.bar([f"{name} ({test_report[name]['support']})" for name in types],
             [test_report[name]["f1-score"] for name in types], color="tab:blue")
    axis.set(ylabel="F1", ylim=(0, 1), title=f"Test F1 per type (micro {test_report['micro avg']['f1-score']:.3f}, "
                                             f"macro {test_report['macro avg']['f1-score']:.3f})")
    plt.setp(axis.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    figure.tight_layout()
    figure.savefig(output_dir / "test_f1_per_type.png", dpi=120)
    plt.close(figure)


def chosen_epoch(state):
    """The epoch of the checkpoint kept as the model (best validation micro-F1), or None without evaluations."""
    evaluations = [entry for entry in state.log_history if "eval_f1" in entry]
    chosen = [entry for entry in evaluations if entry["step"] == state.best_global_step]
    return chosen[0]["epoch"] if chosen else None


if __name__ == "__main__":
    run_main(main, "train.py")
