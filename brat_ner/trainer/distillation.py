"""Distillation (``--teacher`` of train.py): a model learns a teacher's distribution over tag paths, beside the gold
tags. The teacher is a model folder of the same labels and windows, typically an ensemble (ensemble.py): the
student then costs what one model costs and keeps part of what the ensemble gains.

The soft target is the teacher's whole CRF, not one tag per position: ``CRF.expected_counts`` gives its posterior
of each tag at each position and its expected transitions, and ``CRF.cross_entropy`` is the exact cross-entropy
from the teacher's distribution over paths to the student's. The loss of a training step is
``(1 - teacher_weight) * gold NLL + teacher_weight * that cross-entropy``; with weight 0 the teacher is never run
and training is plain training. The teacher runs once over the training windows before training starts
(``TeacherCounts``), not at every step, so its cost takes nothing from a time budget. Windows of unlabelled text
(train.py's ``--extra_text_dirs``, labels ``UNTAGGED``) have no gold NLL: they learn from the teacher alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import PretrainedConfig

from brat_ner.cli import UsageError
from brat_ner.runs import check_model_folder
from brat_ner.training_data import UNTAGGED, batches_of_one_length, window_key
from brat_ner.trust import foreign_code, project_code
from configuration_bert_bilstm_crf import BertBiLstmCrfEnsembleConfig
from modeling_bert_bilstm_crf import BertBiLstmCrfEnsembleForTokenClassification, BertBiLstmCrfForTokenClassification

logger = logging.getLogger(__name__)

WINDOW_SETTINGS = ("window_chars", "context_chars", "skip_blanks")  # train.py's options of the same names
TOKENIZER_SETTINGS = ("vocab_size", "cls_token_id", "sep_token_id")
"""What a teacher must share with the student to read the same windows as the same input ids."""


def load_teacher(folder: str, label_names: list[str], student_config, option: str = "--teacher"):
    """The teacher model in ``folder``, a folder this project wrote (train.py or ensemble.py), built with this
    version's classes, which load every earlier version's folders and have what distillation needs; checked
    against the student: the same labels in the same order and the same windows and tokenizer ids. Frozen, in
    evaluation mode. ``option`` names the folder in refusals."""
    check_teacher(folder, option)
    config, _ = PretrainedConfig.get_config_dict(folder)
    model_class = (BertBiLstmCrfEnsembleForTokenClassification
                   if config.get("model_type") == BertBiLstmCrfEnsembleConfig.model_type
                   else BertBiLstmCrfForTokenClassification)
    teacher = model_class.from_pretrained(folder)
    teacher_labels = [teacher.config.id2label[index] for index in range(len(teacher.config.id2label))]
    if teacher_labels != list(label_names):
        raise UsageError(f"{option} {folder} tags {len(teacher_labels)} labels {teacher_labels[:5]}..., the corpus "
                         f"{len(label_names)} labels {list(label_names)[:5]}...: a teacher must have the student's "
                         "labels in the same order")
    for name in WINDOW_SETTINGS + TOKENIZER_SETTINGS:
        mine, theirs = getattr(student_config, name), getattr(teacher.config, name)
        if mine != theirs:
            fix = f"give --{name} {theirs}" if name in WINDOW_SETTINGS else "the teacher's tokenizer"
            raise UsageError(f"{option} {folder} has {name} {theirs} and this run {mine}: the teacher must read the "
                             f"same windows as the same ids ({fix})")
    teacher.requires_grad_(False)
    return teacher.float().eval()


def check_teacher(folder: str, option: str = "--teacher") -> None:
    """Refuse (``UsageError``, one line) a teacher (``option``: --teacher or --silver_model) that is no model folder
    (missing, no config.json, weights that cannot or may not be loaded) or whose code is not this project's: the
    teacher is built with this version's classes, which fit only folders this project wrote (train.py or
    ensemble.py)."""
    check_model_folder(folder, option)
    problem = foreign_code(Path(folder), project_code())
    if problem:
        raise UsageError(f"{option} {folder} {problem}: a teacher must be a model folder of this project's code "
                         "(written by train.py or ensemble.py)")


class TeacherCounts:
    """The teacher's ``expected_counts`` of each training window, computed once before training (offline), so
    that training runs the student alone: a teacher as costly as a five-model ensemble then takes none of the
    time budget's steps. Kept per window, found again by the window's input ids and visible positions (windows
    alike in both have the same counts, so the oversampled copies of a window share them)."""

    def __init__(self):
        self.by_window: dict[tuple[bytes, bytes], tuple[torch.Tensor, ...]] = {}

    @classmethod
    @torch.no_grad()
    def of_windows(cls, teacher, windows, batch_size: int = 64) -> TeacherCounts:
        """The counts of every window of ``windows`` (rows with ``input_ids`` and ``labels``), the teacher run on
        batches of windows of one length (no padding)."""
        counts = cls()
        distinct = {}
        for row in windows:
            distinct.setdefault(window_key(torch.tensor(row["input_ids"]), torch.tensor(row["labels"]) != -100), row)
        device = next(teacher.parameters()).device
        for batch, input_ids, visible in batches_of_one_length(distinct.items(), batch_size, device):
            logits = teacher(input_ids=input_ids).logits.float()
            for index, (key, _) in enumerate(batch):  # start, end and transitions are per window
                node, *totals = teacher.crf.expected_counts(logits[index:index + 1], visible[index:index + 1])
                counts.by_window[key] = (node[0], *totals)
        return counts

    def of_batch(self, input_ids, attention_mask, labels) -> tuple[torch.Tensor, ...] | None:
        """The counts of a padded batch as ``expected_counts`` gives them (node posteriors per window and
        position, the rest summed over the batch), or None when a window of it was not counted."""
        full = [input_ids.shape[1]] * len(input_ids)
        lengths = attention_mask.sum(1).tolist() if attention_mask is not None else full
        found = [self.by_window.get(window_key(ids[:length], visible[:length]))
                 for ids, visible, length in zip(input_ids, labels != -100, lengths)]
        if any(window is None for window in found):
            return None
        node = found[0][0].new_zeros((*input_ids.shape, found[0][0].shape[-1]))
        for row, (window_node, *_), length in zip(node, found, lengths):
            row[:length] = window_node
        return (node, *(sum(window[part] for window in found) for part in (1, 2, 3)))


class DistillationTrainerMixin:
    """For a ``Trainer`` subclass: with a ``teacher`` and a positive ``teacher_weight``, the training loss mixes the
    gold NLL with the cross-entropy from the teacher's CRF (evaluation keeps the gold NLL). The teacher's counts
    of the training windows are computed once, when the trainer is made (``TeacherCounts``); a batch of other
    windows has its counts computed then and there."""

    def __init__(self, *args, teacher=None, teacher_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= teacher_weight <= 1:
            raise UsageError(f"--teacher_weight must be between 0 and 1, got {teacher_weight}")
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        self.teacher_weight = teacher_weight
        self._teacher_cache = None  # (input_ids, counts): FGM's second pass reuses the first's
        self.precomputed_counts = None
        if self.teacher is not None and teacher_weight and self.train_dataset is not None:
            started = time.perf_counter()
            self.precomputed_counts = TeacherCounts.of_windows(self.teacher, self.train_dataset,
                                                               self.args.per_device_eval_batch_size)
            logger.info("--teacher: its CRF's expected counts of the %d distinct training windows computed once, in "
                        "%.0f s", len(self.precomputed_counts.by_window), time.perf_counter() - started)

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
        if self.precomputed_counts is not None:
            counts = self.precomputed_counts.of_batch(input_ids, inputs.get("attention_mask"), inputs["labels"])
            if counts is not None:
                return counts
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
