#!/usr/bin/env python
"""Domain-adaptive masked-language-model pretraining of the BERT encoder on raw .txt files.

Users with Hub access continue from ``bert-base-chinese``; offline, the encoder is built from a config with
the bert-base-chinese vocabulary and learns from the corpus itself:

    python pretrain_mlm.py --data_dir ../shared/data/ruijin_round1/train \
        --extra_text_dirs ../shared/data/ruijin_round1/unlabeled \
        --encoder_config configs/bert-small-chinese.json --tokenizer_name ../shared/data/bert-base-chinese \
        --output_dir outputs/mlm
    python train.py --model_name_or_path outputs/mlm ...

The text is the TRAINING split of ``--data_dir`` (the same document split as train.py, so no validation or
test document is ever seen) plus every .txt under ``--extra_text_dirs``. Characters are encoded exactly as for
NER (one position per character, blanks left out by default, ``CharacterEncoder``), in windows of
``--window_chars``.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "pretrain_mlm.py")  # --help from its stored page: the imports below take seconds

import logging
from dataclasses import dataclass, field

import datasets
import torch
from transformers import AutoTokenizer, BertConfig, DataCollatorForLanguageModeling, HfArgumentParser, set_seed

from brat_ner import distributed, fast_inference
from brat_ner.cli import parse_arguments, run_main
from brat_ner.encoders import check_window_fits, encoder_positions
from brat_ner.pretraining import (
    BertForMaskedLMOnMaskedPositions,
    PretrainingTextArguments,
    encoded_windows,
    pretraining_texts,
    vocabulary_size,
)
from brat_ner.runs import FINISHED, RunArguments, claim_output_dir, record_run, resume_checkpoint, training_arguments
from brat_ner.trainer import TimeBudgetTrainer, TimeBudgetTrainingArguments, measured_throughput

logger = logging.getLogger(__name__)


@dataclass
class PretrainArguments(PretrainingTextArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from this BERT checkpoint (e.g. bert-base-chinese)."}
    )
    encoder_config: str | None = field(
        default=None, metadata={"help": "Or start from random weights with this BERT config."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder or Hub id."})
    window_chars: int = field(default=254, metadata={"help": "Characters per training window (formerly --max_chars).",
                                                     "aliases": ["--max_chars"]})
    mlm_probability: float = field(default=0.15)
    num_threads: int | None = field(default=None, metadata={"help": fast_inference.NUM_THREADS_HELP})
    skip_blanks: bool = field(
        default=True, metadata={"help": "Give blanks no position, as train.py's --skip_blanks (its default) does: "
                                        "pretrain on what fine-tuning will feed."}
    )


@dataclass
class MlmTrainingArguments(TimeBudgetTrainingArguments):
    output_dir: str | None = field(default="outputs/mlm")
    learning_rate: float = field(default=5e-4)
    num_train_epochs: float = field(default=10.0)
    per_device_train_batch_size: int = field(default=64)
    warmup_steps: float = field(default=0.06)
    weight_decay: float = field(default=0.01)
    save_strategy: str = field(default="no")
    report_to: None | str | list[str] = field(default="none")
    bf16: bool = field(
        default_factory=lambda: torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        metadata={"help": "bf16 mixed precision; on by default where the GPU supports it."},
    )


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser((PretrainArguments, MlmTrainingArguments, RunArguments), prog="pretrain_mlm.py")


def main():
    parser = argument_parser()
    distributed.check_launch("pretrain_mlm.py")  # before the arguments set up the devices
    args, training_args, run_args = parse_arguments(parser)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    processes = distributed.describe_processes(training_args)
    if training_args.process_index == 0:
        print(f"pretrain_mlm.py: {processes}", flush=True)
    set_seed(training_args.seed)
    fast_inference.set_num_threads(args.num_threads)
    if (args.model_name_or_path is None) == (args.encoder_config is None):
        parser.error("give exactly one of --model_name_or_path and --encoder_config")
    positions = encoder_positions(args.encoder_config, args.model_name_or_path)
    check_window_fits(args.window_chars, positions, "--window_chars")
    claim_output_dir("pretrain_mlm.py", training_args, run_args, finished_marker="train_results.json",
                     arguments=training_arguments(args, training_args),
                     data_folders={"--data_dir": [args.data_dir], "--extra_text_dirs": args.extra_text_dirs})

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    texts = pretraining_texts(args)
    windows = datasets.Dataset.from_dict({"input_ids": encoded_windows(texts, tokenizer, args)})
    logger.info("MLM text: %d documents, %d characters, %d windows", len(texts), sum(map(len, texts)),
                len(windows))

    if args.model_name_or_path:
        model = BertForMaskedLMOnMaskedPositions.from_pretrained(args.model_name_or_path)
    else:
        config = BertConfig.from_pretrained(args.encoder_config, vocab_size=vocabulary_size(tokenizer))
        model = BertForMaskedLMOnMaskedPositions(config)
    trainer = TimeBudgetTrainer(
        model=model,
        args=training_args,
        train_dataset=windows,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability),
        processing_class=tokenizer,
    )
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args, run_args,
                                                                    training_arguments(args, training_args)))
    trainer.save_model()
    trainer.save_metrics("train", measured_throughput(result.metrics, trainer.state.epoch, trainer.state.global_step,
                                                      len(windows)))
    if trainer.is_world_process_zero():
        record_run(training_args.output_dir, "pretrain_mlm.py", FINISHED)  # last: all it writes is written


if __name__ == "__main__":
    run_main(main, "pretrain_mlm.py")
