"""What the pretraining commands share: the text they learn from (the training split and unlabelled folders),
its windows as model input, and a masked-LM model that scores only the masked positions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from dataset_script import ruijin_ner
from dataset_script.brat import files_with_suffix, read_text
from processing_bert_bilstm_crf import CharacterEncoder, split_into_windows


@dataclass
class PretrainingTextArguments:
    """The text to pretrain on (``pretraining_texts``), for this script and pretrain_embeddings.py."""

    data_dir: str = field(
        default="data/sample", metadata={"help": "Brat corpus whose training split provides text."}
    )
    extra_text_dirs: list[str] = field(
        default_factory=list, metadata={"help": "Folders of unlabelled .txt files to add (never evaluation text)."}
    )


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
    """Model input ids ([CLS] ... [SEP]) of each window of ``args.window_chars`` characters of ``texts``, blanks fed
    or not as ``args.skip_blanks`` says."""
    encoder = CharacterEncoder(tokenizer, args.skip_blanks)
    return [encoder.window_ids(text[start:end]) for text in texts
            for start, end in split_into_windows(text, args.window_chars, cuts=ruijin_ner.TRAINING_CUTS)]


def pretraining_texts(args) -> list[str]:
    """The training split's documents of --data_dir and the .txt files of --extra_text_dirs."""
    texts = list(ruijin_ner.load(args.data_dir, name="brat")["train"]["text"])
    for folder in map(Path, args.extra_text_dirs):
        texts += [read_text(path) for path in files_with_suffix(folder, ".txt")]
    return [text for text in texts if text]

