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
``--max_chars``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    set_seed,
)
from transformers.modeling_outputs import MaskedLMOutput

from dataset_script import ruijin_ner
from dataset_script.brat import files_with_suffix, read_text
from modeling_bert_bilstm_crf import (
    TRAINING_CUTS,
    CharacterEncoder,
    check_window_fits,
    encoder_positions,
    split_into_windows,
)
from run_safety import (
    RunArguments,
    claim_output_dir,
    parse_arguments,
    resume_checkpoint,
    run_main,
    training_arguments,
)
from time_budget import TimeBudgetTrainer, TimeBudgetTrainingArguments, measured_throughput

logger = logging.getLogger(__name__)


@dataclass
class PretrainingTextArguments:
    """The text to pretrain on (``pretraining_texts``), for this script and pretrain_embeddings.py."""

    data_dir: str = field(
        default="data/sample", metadata={"help": "Brat corpus whose training split provides text."}
    )
    extra_text_dirs: list[str] = field(
        default_factory=list, metadata={"help": "Folders of unlabelled .txt files to add (never evaluation text)."}
    )


@dataclass
class PretrainArguments(PretrainingTextArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from this BERT checkpoint (e.g. bert-base-chinese)."}
    )
    encoder_config: str | None = field(
        default=None, metadata={"help": "Or start from random weights with this BERT config."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder or Hub id."})
    max_chars: int = field(default=254, metadata={"help": "Characters per training window."})
    mlm_probability: float = field(default=0.15)
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


def main():
    parser = HfArgumentParser((PretrainArguments, MlmTrainingArguments, RunArguments))
    args, training_args, run_args = parse_arguments(parser)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)
    if (args.model_name_or_path is None) == (args.encoder_config is None):
        parser.error("give exactly one of --model_name_or_path and --encoder_config")
    check_window_fits(args.max_chars, encoder_positions(args.encoder_config, args.model_name_or_path), "--max_chars")
    claim_output_dir("pretrain_mlm.py", training_args, run_args, finished_marker="train_results.json")

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


class BertForMaskedLMOnMaskedPositions(BertForMaskedLM):
    """``BertForMaskedLM`` that runs the prediction head on the masked positions only.

    The head (hidden size -> 21,128 characters) costs more than a small encoder, and the stock model computes it
    at every position only for the loss to ignore the 85% that are not masked. Same weights, same loss (mean
    cross-entropy over masked positions); ``logits`` hold the masked positions' scores only.
    """

    # The loss is a mean over this batch, so Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if labels is None:
            return super().forward(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        masked = labels != -100
        scores = self.cls(hidden[masked])
        loss = torch.nn.functional.cross_entropy(scores.float(), labels[masked], reduction="sum")
        return MaskedLMOutput(loss=loss / masked.sum().clamp(min=1), logits=scores)


def vocabulary_size(tokenizer) -> int:
    """Rows the embedding needs: the largest token id + 1.

    Not ``len(tokenizer)``: bert-base-chinese's vocab.txt repeats some lines (21,128 ids, 21,075 distinct
    tokens), so ids reach beyond the number of distinct tokens.
    """
    return max(tokenizer.get_vocab().values()) + 1


def encoded_windows(texts: list[str], tokenizer, args) -> list[list[int]]:
    """Model input ids ([CLS] ... [SEP]) of each window of ``args.max_chars`` characters of ``texts``, blanks fed
    or not as ``args.skip_blanks`` says."""
    encoder = CharacterEncoder(tokenizer, args.skip_blanks)
    return [encoder.window_ids(text[start:end]) for text in texts
            for start, end in split_into_windows(text, args.max_chars, cuts=TRAINING_CUTS)]


def pretraining_texts(args) -> list[str]:
    """The training split's documents of --data_dir and the .txt files of --extra_text_dirs."""
    texts = list(ruijin_ner.load(args.data_dir, name="brat")["train"]["text"])
    for folder in map(Path, args.extra_text_dirs):
        texts += [read_text(path) for path in files_with_suffix(folder, ".txt")]
    return [text for text in texts if text]


if __name__ == "__main__":
    run_main(main, "pretrain_mlm.py")
