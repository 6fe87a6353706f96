"""Distillation (``--teacher`` of train.py): a model learns a teacher's distribution over tag paths, beside the gold
tags. The teacher is a model folder of the same labels and windows, typically an ensemble (ensemble.py): the
student then costs what one model costs and keeps part of what the ensemble gains.

The soft target is the teacher's whole CRF, not one tag per position: ``CRF.expected_counts`` gives its posterior
of each tag at each position and its expected transitions, and ``CRF.cross_entropy`` is the exact cross-entropy
from the teacher's distribution over paths to the student's. The loss of a training step is
``(1 - teacher_weight) * gold NLL + teacher_weight * that cross-entropy``; with weight 0 the teacher is never run
and training is plain training. Windows of unlabelled text (train.py's ``--extra_text_dirs``, labels
``UNTAGGED``) have no gold NLL: they learn from the teacher alone.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

from brat_ner.cli import UsageError
from brat_ner.training_data import UNTAGGED
from brat_ner.trust import is_project_folder
from configuration_bert_bilstm_crf import BertBiLstmCrfEnsembleConfig
from modeling_bert_bilstm_crf import BertBiLstmCrfEnsembleForTokenClassification, BertBiLstmCrfForTokenClassification

WINDOW_SETTINGS = ("window_chars", "context_chars", "skip_blanks")  # train.py's options of the same names
TOKENIZER_SETTINGS = ("vocab_size", "cls_token_id", "sep_token_id")
"""What a teacher must share with the student to read the same windows as the same input ids."""


def load_teacher(folder: str, label_names: list[str], student_config):
    """The teacher model in ``folder``, a folder this project wrote (train.py or ensemble.py), built with this
    version's classes, which load every earlier version's folders and have what distillation needs; checked
    against the student: the same labels in the same order and the same windows and tokenizer ids. Frozen, in
    evaluation mode."""
    if not is_project_folder(folder):
        raise UsageError(f"--teacher {folder} is not a model folder written by this project (train.py or ensemble.py)")
    config, _ = PretrainedConfig.get_config_dict(folder)
    model_class = (BertBiLstmCrfEnsembleForTokenClassification
                   if config.get("model_type") == BertBiLstmCrfEnsembleConfig.model_type
                   else BertBiLstmCrfForTokenClassification)
    teacher = model_class.from_pretrained(folder)
    teacher_labels = [teacher.config.id2label[index] for index in range(len(teacher.config.id2label))]
    if teacher_labels != list(label_names):
        raise UsageError(f"--teacher {folder} tags {len(teacher_labels)} labels {teacher_labels[:5]}..., the corpus "
                         f"{len(label_names)} labels {list(label_names)[:5]}...: a teacher must have the student's "
                         "labels in the same order")
    for name in WINDOW_SETTINGS + TOKENIZER_SETTINGS:
        mine, theirs = getattr(student_config, name), getattr(teacher.config, name)
        if mine != theirs:
            fix = f"give --{name} {theirs}" if name in WINDOW_SETTINGS else "the teacher's tokenizer"
            raise UsageError(f"--teacher {folder} has {name} {theirs} and this run {mine}: the teacher must read the "
                             f"same windows as the same ids ({fix})")
    teacher.requires_grad_(False)
    return teacher.float().eval()


class DistillationTrainerMixin:
    """For a ``Trainer`` subclass: with a ``teacher`` and a positive ``teacher_weight``, the training loss mixes the
    gold NLL with the cross-entropy from the teacher's CRF (evaluation keeps the gold NLL)."""

    def __init__(self, *args, teacher=None, teacher_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= teacher_weight <= 1:
            raise UsageError(f"--teacher_weight must be between 0 and 1, got {teacher_weight}")
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        self.teacher_weight = teacher_weight
        self._teacher_cache = None  # (input_ids, counts): FGM's second pass reuses the first's

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.teacher is None or not self.teacher_weight or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        crf = self.accelerator.unwrap_model(model).crf
        soft = crf.cross_entropy(outputs.logits, self._teacher_counts(inputs), labels != -100)
        loss = (1 - self.teacher_weight) * gold_nll(crf, outputs.logits, labels) + self.teacher_weight * soft
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _teacher_counts(self, inputs):
        input_ids = inputs["input_ids"]
        if self._teacher_cache is not None and torch.equal(self._teacher_cache[0], input_ids):
            return self._teacher_cache[1]
        logits = self.teacher(input_ids=input_ids, attention_mask=inputs.get("attention_mask"),
                              token_type_ids=inputs.get("token_type_ids")).logits
        counts = self.teacher.crf.expected_counts(logits.float(), inputs["labels"] != -100)
        self._teacher_cache = (input_ids, counts)
        return counts


def gold_nll(crf, emissions, labels) -> torch.Tensor:
    """The CRF's negative log-likelihood of the gold tags, averaged over the windows that have them (as the
    model's own loss); windows of ``UNTAGGED`` positions add nothing, and a batch of them only gives 0."""
    tagged = ((labels != -100) & (labels != UNTAGGED)).any(dim=1)
    if not tagged.any():
        return emissions.new_zeros(())
    labels = labels[tagged]
    return -crf(emissions[tagged], labels, mask=labels != -100, reduction="mean")
