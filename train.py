#!/usr/bin/env python
"""Fine-tune BERT -> BiLSTM -> CRF for character-level NER on a brat corpus.

    python train.py --data_dir ../shared/data/ruijin_round1/train --model_name_or_path bert-base-chinese \
        --output_dir outputs/ruijin
    accelerate launch --multi_gpu --num_processes 4 train.py ...   # several GPUs or nodes (accelerate's DDP)
    torchrun --nproc_per_node 4 train.py ...  # the same; on a machine without GPUs, 4 CPU processes (gloo)
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

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "train.py")  # --help from its stored page: the imports below take seconds

import logging
import os
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

import torch
from datasets import concatenate_datasets
from transformers import (
    AutoTokenizer,
    DataCollatorForTokenClassification,
    HfArgumentParser,
    ProgressCallback,
    TrainerState,
    set_seed,
)
from transformers.utils import logging as transformers_logging

from brat_ner import augmentation, distributed, fast_inference
from brat_ner.cli import (
    UsageError,
    check_at_least,
    check_positive,
    offline_without_network,
    parse_arguments,
    run_main,
)
from brat_ner.cross_validation import scored_fold_seen
from brat_ner.encoders import (
    adopt_trained_head,
    adopt_trained_windows,
    build_model,
    check_window_fits,
    encoder_positions,
    head_option_fields,
)
from brat_ner.evaluation import reports_to_markdown, write_reports
from brat_ner.fast_inference import NUM_THREADS_HELP
from brat_ner.reporting import (
    EpochLineCallback,
    SaidEarlyStoppingCallback,
    plot_training,
    quiet_checkpoint_ordering,
    training_figures,
    without_checkpoint_bars,
    write_corpus_summary,
)
from brat_ner.runs import (
    FINISHED,
    ReadableCheckpointWeights,
    RunArguments,
    check_model_weights,
    claim_output_dir,
    finish_saved_model,
    record_run,
    record_saved_model,
    resume_checkpoint,
    training_arguments,
)
from brat_ner.self_training import silver_windows
from brat_ner.trainer import BertBiLstmCrfTrainer, NerMetrics, TimeBudgetTrainingArguments
from brat_ner.trainer.distillation import check_teacher, load_teacher
from brat_ner.training_data import (
    check_splits_have_text,
    encode_batch,
    oversample_rare_types,
    untagged_windows,
    warn_blank_only_entities,
)
from brat_ner.trust import is_project_folder
from dataset_script import ruijin_ner
from dataset_script.formats import FORMATS

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    _argument_group_name = "model (this project)"

    model_name_or_path: str = field(
        default="bert-base-chinese",
        metadata={"help": "Pretrained encoder (Hub id or folder) of a BERT-like architecture (BERT, RoBERTa-wwm, "
                          "MacBERT, ERNIE, ELECTRA, RoFormer), as a base model or with its pre-training head, e.g. one "
                          "written by pretrain_mlm.py or pretrain_embeddings.py; or a model written by train.py, to "
                          "train it further with its own head (new entity types start fresh)."},
    )
    encoder_config: str | None = field(
        default=None,
        metadata={"help": "Build the encoder from this config (file or folder) with random weights instead of "
                          "loading pretrained ones: for tests and the offline quickstart. Not with "
                          "--model_name_or_path."},
    )
    allow_random_encoder_weights: bool = field(
        default=False,
        metadata={"help": "Train even when some encoder weights are not in --model_name_or_path (they start from "
                          "random values); without it such a start is refused."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (vocabulary) folder or Hub id, if not --model_name_or_path."}
    )
    head_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Learning rate of the BiLSTM, linear and CRF layers, which start from scratch; "
                          "--learning_rate is the pretrained encoder's."},
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "BERT attention: sdpa or eager."})

    def __post_init__(self):
        adopt_trained_head(self, ModelArguments.model_name_or_path)
        check_positive(head_learning_rate=self.head_learning_rate)
        check_at_least(1, lstm_hidden_size=self.lstm_hidden_size, lstm_layers=self.lstm_layers,
                       bigram_embedding_size=self.bigram_embedding_size)
        check_at_least(0, bigram_buckets=self.bigram_buckets, lstm_dropout=self.lstm_dropout)
        if self.lstm_dropout >= 1:
            raise ValueError(f"--lstm_dropout must be below 1, got {self.lstm_dropout}")


# The head options, their defaults and help come from the model's config (BertBiLstmCrfConfig.head_options), the one
# place they are declared.
ModelArguments = make_dataclass("ModelArguments", head_option_fields(), bases=(ModelArguments,))


@dataclass
class DataArguments:
    _argument_group_name = "corpus and training (this project)"

    data_dir: str = field(
        default="data/sample",
        metadata={"help": "The corpus: a brat folder (.txt + .ann), a Label Studio JSON export, a doccano JSONL "
                          "file, CoNLL (.conll/.bio) or CMeEE JSON files; a file, a folder of them, or train/ "
                          "validation/ test/ folders of them (docs/data.md)."},
    )
    data_format: str | None = field(
        default=None, metadata={"help": "The format of --data_dir when its files do not tell (default: detected).",
                                "choices": list(FORMATS)}
    )
    window_chars: int = field(
        default=510, metadata={"help": "Window length in characters (the model sees [CLS] + window + [SEP]); "
                                       "--max_chars is its former name.", "aliases": ["--max_chars"]}
    )
    event_triggers: str = field(
        default="skip", metadata={"help": "Event triggers (T lines of the annotation.conf's [events] types, or "
                                          "without a conf those that E lines name): skip them, or include them "
                                          "as entity types.", "choices": ["skip", "include"]}
    )
    context_chars: int = field(
        default=0, metadata={"help": "Characters of the document before and after each window that the encoder and "
                                     "BiLSTM see but the CRF, loss and metrics do not (0: none). The encoder needs "
                                     "window_chars + 2 * context_chars + 2 positions."}
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
    augment: list[str] = field(
        default_factory=list,
        metadata={"help": "Augmented copies of the training windows that hold a rare type, by these methods with "
                          "their rates: mention=R (entities replaced by other mentions of their type), token=R "
                          "(characters replaced by characters of the same tag), shuffle=R (segments shuffled); "
                          "rarer types at higher rates (brat_ner/augmentation.py). E.g. --augment mention=0.5"}
    )
    augment_copies: int = field(default=1, metadata={"help": "With --augment: copies made of each such window."})
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation F1 (0: never)."}
    )
    num_threads: int | None = field(default=None, metadata={"help": NUM_THREADS_HELP})
    folds: int = field(
        default=0, metadata={"help": "Cross-validation (cross_validate.py runs every fold): the training and "
                                     "validation documents divided into this many folds by document group, fold "
                                     "--fold the validation split, the test split unchanged (0: no folds)."}
    )
    fold: int = field(default=0, metadata={"help": "The fold used for validation, 0 to --folds - 1."})
    fold_seed: int = field(default=42, metadata={"help": "Seed of the division into folds."})
    train_fraction: float = field(
        default=1.0, metadata={"help": "Train on this share of the training documents, whole document groups chosen "
                                       "by --fold_seed (a learning curve's smaller sizes; cross_validate.py "
                                       "--train_fractions runs them). Validation and test stay whole."}
    )

    def __post_init__(self):
        check_at_least(1, window_chars=self.window_chars, rare_type_oversampling=self.rare_type_oversampling,
                       num_threads=self.num_threads)
        check_at_least(0, context_chars=self.context_chars, early_stopping_patience=self.early_stopping_patience,
                       rare_type_share=self.rare_type_share)
        if self.folds == 1 or self.folds < 0 or not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"--folds must be 0 (none) or at least 2, and --fold one of 0..folds-1; got --fold "
                             f"{self.fold} of --folds {self.folds}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction must be above 0 and at most 1, got {self.train_fraction}")
        augmentation.parse_rates(self.augment)
        check_at_least(1, augment_copies=self.augment_copies)


@dataclass
class NerTrainingArguments(TimeBudgetTrainingArguments):
    """``TrainingArguments`` with this project's defaults: evaluate and save every epoch, keep the best model
    by validation micro-F1, batches of similar lengths, warmup, weight decay; ``--time_budget_minutes``."""

    _argument_group_name = "Trainer (transformers' TrainingArguments, with this project's defaults)"

    output_dir: str | None = field(default="outputs/ner")
    learning_rate: float = field(default=3e-5, metadata={"help": "Learning rate of the BERT encoder."})
    num_train_epochs: float = field(default=10.0)
    per_device_train_batch_size: int = field(default=32)
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Windows per evaluation batch."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warmup: a fraction of the training steps (below 1) "
                                                               "or a number of steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases, LayerNorm "
                                                                "weights and the CRF)."})
    eval_strategy: str = field(default="epoch")
    save_strategy: str = field(default="epoch")
    logging_strategy: str = field(default="epoch")
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best one too)."})
    load_best_model_at_end: bool = field(default=True)
    metric_for_best_model: str | None = field(default="f1")
    train_sampling_strategy: str = field(default="group_by_length")
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Experiment trackers to log to "
                                                                                 "(tensorboard, wandb, ...)."})
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

    teacher: str | None = field(
        default=None,
        metadata={"help": "Distillation: a model folder of the same labels and windows (e.g. an ensemble written by "
                          "ensemble.py) whose CRF's distribution over tag paths this model also learns "
                          "(docs/model.md, cross-validation, ensembles and distillation)."},
    )
    teacher_weight: float = field(
        default=0.5,
        metadata={"help": "With --teacher, the loss is (1 - this) x the gold tags' NLL + this x the cross-entropy "
                          "from the teacher's CRF (0: plain training; the teacher is not run)."},
    )
    extra_text_dirs: list[str] = field(
        default_factory=list,
        metadata={"help": "With --teacher or --silver_model: folders of unlabelled .txt files (e.g. ../shared/data/"
                          "ruijin_round1/unlabeled) whose windows join the training windows: with a teacher they "
                          "learn from its CRF alone (no gold tags), with a silver model from its sure Viterbi tags. "
                          "Never evaluation text: a document of --data_dir is refused."},
    )
    silver_model: str | None = field(
        default=None,
        metadata={"help": "Self-training: a model folder (train.py's or ensemble.py's, same labels and windows) "
                          "that tags the windows of --extra_text_dirs once before training; those whose every "
                          "character's tag has a CRF marginal above --silver_threshold train with its tags."},
    )
    silver_threshold: float = field(default=0.95, metadata={"help": "See --silver_model (1: no window joins)."})
    silver_weight: float = field(
        default=0.5, metadata={"help": "With --silver_model, the weight of a silver window's loss (gold: 1)."})

    def __post_init__(self):
        if not 0 <= self.teacher_weight <= 1:
            raise ValueError(f"--teacher_weight must be between 0 and 1, got {self.teacher_weight}")
        if self.teacher and self.silver_model:
            raise ValueError("give --teacher (distillation) or --silver_model (self-training), not both")
        if self.extra_text_dirs and not ((self.teacher and self.teacher_weight) or self.silver_model):
            raise ValueError("--extra_text_dirs adds text without gold tags, which only a teacher or a silver model "
                             "can train: give --teacher DIR (and a --teacher_weight above 0) or --silver_model DIR")
        if self.silver_model and not self.extra_text_dirs:
            raise ValueError("--silver_model tags unlabelled text: give it with --extra_text_dirs DIR")
        if not 0 <= self.silver_threshold <= 1 or not 0 <= self.silver_weight <= 1:
            raise ValueError(f"--silver_threshold and --silver_weight must be between 0 and 1, got "
                             f"{self.silver_threshold} and {self.silver_weight}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"--ema_decay must be between 0 and 1, got {self.ema_decay}")
        check_at_least(0, fgm_epsilon=self.fgm_epsilon)
        super().__post_init__()


def main():
    distributed.check_launch("train.py")  # before the arguments set up the devices
    model_args, data_args, run_args, training_args = parse_arguments(argument_parser())
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    processes = distributed.describe_processes(training_args)
    if training_args.process_index == 0:
        print(f"train.py: {processes}", flush=True)
    transformers_logging.set_tqdm_hook(without_checkpoint_bars)
    quiet_checkpoint_ordering()
    set_seed(training_args.seed)
    fast_inference.set_num_threads(data_args.num_threads)
    offline_without_network()

    # Models to start from or learn from, checked before any work: a folder that is none, or only pickles, is refused.
    if not model_args.encoder_config:
        check_model_weights(model_args.model_name_or_path)
    if training_args.teacher:
        check_teacher(training_args.teacher)
    if training_args.silver_model:
        check_teacher(training_args.silver_model, "--silver_model")
    if data_args.folds:  # a fold's model is scored on its fold: nothing it learns from may have seen that fold
        for option, model in (("--model_name_or_path", model_args.model_name_or_path),
                              ("--teacher", training_args.teacher), ("--silver_model", training_args.silver_model)):
            problem = model and scored_fold_seen(model, data_args.data_dir, data_args.folds, data_args.fold,
                                                 data_args.fold_seed)
            if problem:
                raise UsageError(f"{option} {problem}")
    # Before the corpus is read: a window longer than the encoder's positions would fail only inside training.
    adopt_trained_windows(model_args.model_name_or_path, data_args)  # training a trained model further
    name = "--window_chars + 2 * --context_chars" if data_args.context_chars else "--window_chars"
    positions = encoder_positions(model_args.encoder_config, model_args.model_name_or_path)
    check_window_fits(data_args.window_chars + 2 * data_args.context_chars, positions, name)
    claim_output_dir("train.py", training_args, run_args, finished_marker="test_report.json",
                     arguments=training_arguments(model_args, data_args, training_args),
                     data_folders={"--data_dir": [data_args.data_dir],
                                   "--extra_text_dirs": training_args.extra_text_dirs})
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    # A folder written by train.py names its model code in config.json: trusted as the project's own, no prompt.
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=is_project_folder(tokenizer_source))
    with training_args.main_process_first(desc="preparing the corpus"):  # one process builds, the others read
        corpus, corpus_stats = ruijin_ner.load(data_args.data_dir, window_chars=data_args.window_chars,
                                               context_chars=data_args.context_chars,
                                               event_triggers=data_args.event_triggers, folds=data_args.folds,
                                               data_format=data_args.data_format,
                                               fold=data_args.fold, fold_seed=data_args.fold_seed,
                                               train_fraction=data_args.train_fraction, return_stats=True)
        check_splits_have_text(corpus_stats, data_args.data_dir)
        if data_args.augment:
            corpus["train"] = augmentation.with_augmented_windows(corpus["train"], data_args, training_args.seed)
        label_names = corpus["train"].features["ner_tags"].feature.names
        encoded = corpus.map(
            encode_batch, batched=True,
            fn_kwargs={"tokenizer": tokenizer, "label_names": label_names, "skip_blanks": model_args.skip_blanks},
            remove_columns=["tokens", "ner_tags", "context_before", "context_after"], desc="Encoding windows",
        )
        warn_blank_only_entities(encoded)
    train_set = oversample_rare_types(encoded["train"], label_names, data_args)
    if training_args.extra_text_dirs:
        untagged = untagged_windows(training_args.extra_text_dirs, data_args.data_dir, tokenizer, data_args,
                                    model_args.skip_blanks, train_set.features)
    model = build_model(model_args, tokenizer, label_names, data_args, corpus["train"][:200]["tokens"])
    silver = None
    if training_args.silver_model:
        silver, counts = silver_windows(training_args.silver_model, untagged, label_names, model.config,
                                        training_args.silver_threshold, training_args.per_device_eval_batch_size)
        logger.info("--silver_model: %d of %d windows of unlabelled text (%d entities) are sure above %g and join "
                    "the %d training windows at weight %g", counts["windows kept"], counts["windows read"],
                    counts["entities"], training_args.silver_threshold, len(train_set), training_args.silver_weight)
        train_set = concatenate_datasets([train_set, silver])
    elif training_args.extra_text_dirs:
        logger.info("--extra_text_dirs: %d windows of unlabelled text join the %d training windows; they learn "
                    "from the teacher only", len(untagged), len(train_set))
        train_set = concatenate_datasets([train_set, untagged])
    teacher = load_teacher(training_args.teacher, label_names, model.config) if training_args.teacher else None
    metric = NerMetrics(label_names)
    callbacks = [SaidEarlyStoppingCallback(data_args.early_stopping_patience)] if data_args.early_stopping_patience \
        else []
    trainer = BertBiLstmCrfTrainer(
        model=model,
        args=training_args,
        head_learning_rate=model_args.head_learning_rate,
        ema_decay=training_args.ema_decay,
        fgm_epsilon=training_args.fgm_epsilon,
        teacher=teacher,
        teacher_weight=training_args.teacher_weight,
        silver_windows=silver,
        silver_weight=training_args.silver_weight,
        train_dataset=train_set,
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorForTokenClassification(
            tokenizer, pad_to_multiple_of=8 if training_args.bf16 or training_args.fp16 else None
        ),
        processing_class=tokenizer,
        compute_metrics=metric,
        # Metrics on the CRF's Viterbi paths, decoded batch by batch (no emissions kept in memory).
        preprocess_logits_for_metrics=lambda logits, labels: model.tags(logits, labels != -100),
        callbacks=callbacks,
    )
    if not training_args.disable_tqdm:  # the progress bar, with a line per epoch instead of metric dicts
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(EpochLineCallback)

    trainer.add_callback(ReadableCheckpointWeights)
    trainer.add_callback(distributed.ProcessShareCallback("train.py"))
    figures = finish_saved_model(trainer)  # a rerun of a run stopped after saving its model: no training again
    if figures is None:
        checkpoint = resume_checkpoint(training_args, run_args,
                                       training_arguments(model_args, data_args, training_args))
        start = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json")) if checkpoint else None
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        figures = training_figures(train_result.metrics, start, trainer.state, train_set)
        trainer.save_metrics("train", figures)
        record_saved_model(trainer, "train.py")

    test_output = trainer.predict(encoded["test"], metric_key_prefix="test")
    trainer.save_metrics("test", test_output.metrics)
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        write_reports(metric.last_reports, output_dir / "test_report")
        write_corpus_summary(corpus_stats, data_args, model_args, output_dir / "corpus.json")
        plot_training(trainer.state, metric.last_reports["strict"], output_dir)
        record_run(output_dir, "train.py", FINISHED)  # last: the run is finished once all it writes is written
        best = trainer.state.best_metric
        best = f"; best validation micro-F1 {best:.3f}" if best is not None else ""
        print(f"Trained {trainer.state.epoch:.3g} epochs in {figures['train_runtime']:.1f} s "
              f"({figures['train_characters_per_second']:,.0f} characters/s){best}. Test split, per type:\n")
        print(reports_to_markdown(metric.last_reports))
        print(f"Model, reports and plots in {output_dir}")


def argument_parser() -> HfArgumentParser:
    """The project's options in their own groups, listed by --help before transformers' TrainingArguments."""
    return HfArgumentParser(
        (ModelArguments, DataArguments, RunArguments, NerTrainingArguments),
        prog="train.py", usage="train.py [CONFIG.json] [--option VALUE ...]",
        description="Fine-tune BERT -> BiLSTM -> CRF for character-level NER on a brat corpus. A JSON file of "
                    "option values may come first; options after it override its values.",
    )


if __name__ == "__main__":
    run_main(main, "train.py")
