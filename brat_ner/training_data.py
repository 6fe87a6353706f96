"""Training windows as model inputs: one position per character, labels on the window only, rare types
repeated, unlabelled text for a teacher, and the checks that a corpus can train a model."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import datasets
import torch

from brat_ner.cli import UsageError
from dataset_script import ruijin_ner
from dataset_script.brat import files_with_suffix, read_text
from processing_bert_bilstm_crf import CharacterEncoder, is_blank, split_into_windows, window_context

logger = logging.getLogger(__name__)

UNTAGGED = -1
"""The label of a position the CRF sees but no gold tag covers: the windows of unlabelled text
(``untagged_windows``), which only a teacher's soft targets train (``brat_ner/trainer/distillation.py``)."""


def check_splits_have_text(stats, data_dir):
    """Training, validation and the test report each need text; say so before training rather than after."""
    empty = [str(split) for split in ruijin_ner.SPLITS if not stats.windows[str(split)]]
    if empty:
        verb = "splits have" if len(empty) > 1 else "split has"
        raise UsageError(f"{data_dir}: the {' and '.join(empty)} {verb} no text (documents per split: "
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
        add_window(columns, encoder, characters, before, after, tags)
        columns["blank_only_entities"].append(lost)
    return with_lengths(columns)


def add_window(columns, encoder, characters, before, after, tags) -> None:
    """A window's ``input_ids`` ([CLS], context, window, context, [SEP]), its ``labels`` (``tags`` on the window's
    fed characters, -100 on the rest) and its ``characters``, appended to ``columns``."""
    columns["input_ids"].append(encoder.window_ids(characters, before, after))
    columns["labels"].append([-100] * (1 + len(encoder.fed(before))) + tags + [-100] * (len(encoder.fed(after)) + 1))
    columns["characters"].append(len(before) + len(characters) + len(after))


def with_lengths(columns: dict) -> dict:
    """``columns`` with the ``attention_mask`` and ``length`` of its ``input_ids``."""
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
    rare = rare_types(Counter(entity_type for labels in train_set["labels"] for tag in labels
                              if (entity_type := begin_types.get(tag))), data_args.rare_type_share)
    repeats = [data_args.rare_type_oversampling if types & rare else 1 for types in window_types]
    logger.info("Rare types %s: %d windows repeated %d times", sorted(rare), sum(r > 1 for r in repeats),
                data_args.rare_type_oversampling)
    return train_set.select([index for index, repeat in enumerate(repeats) for _ in range(repeat)])


def window_key(input_ids, visible) -> tuple[bytes, bytes]:
    """A window found again by its input ids and the positions its labels cover (unpadded tensors): two windows
    alike in both are one window to the model, whatever their row."""
    return input_ids.cpu().numpy().tobytes(), visible.cpu().numpy().tobytes()


def batches_of_one_length(keyed_rows, batch_size: int, device=None):
    """``(batch, input_ids, visible)`` for batches of at most ``batch_size`` of ``keyed_rows`` (``(key, row)``
    pairs, rows with ``input_ids`` and ``labels``), each batch of windows of one length, so a model computes no
    padding: the batch's pairs, their ids and the positions their labels cover (not -100)."""
    by_length = {}
    for key, row in keyed_rows:
        by_length.setdefault(len(row["input_ids"]), []).append((key, row))
    for same_length in by_length.values():
        for first in range(0, len(same_length), batch_size):
            batch = same_length[first:first + batch_size]
            input_ids = torch.tensor([row["input_ids"] for _, row in batch], device=device)
            visible = torch.tensor([row["labels"] for _, row in batch], device=device) != -100
            yield batch, input_ids, visible


def rare_types(type_counts: Counter, share: float) -> set[str]:
    """The entity types with less than ``share`` of all entities (``--rare_type_share``): the types that
    oversampling repeats and augmentation (``brat_ner/augmentation.py``) copies."""
    total = sum(type_counts.values())
    return {entity_type for entity_type, count in type_counts.items() if count < share * total}


def untagged_windows(folders, data_dir, tokenizer, data_args, skip_blanks, features) -> datasets.Dataset:
    """The windows of the .txt files in ``folders`` (unlabelled text, e.g. ``ruijin_round1/unlabeled``) as rows of
    the encoded training split (``features``), cut and encoded as the corpus's windows are, every window position
    labelled ``UNTAGGED``. A file whose text is a document of the corpus at ``data_dir`` is refused: as unlabelled
    text it would put validation or test documents into training, or train documents twice."""
    corpus_texts = ruijin_ner.corpus_texts(Path(data_dir).resolve())
    encoder = CharacterEncoder(tokenizer, skip_blanks)
    columns = {name: [] for name in ("id", "document_id", "offset", "input_ids", "labels", "characters",
                                     "blank_only_entities")}
    for path in (path for folder in folders for path in files_with_suffix(Path(folder), ".txt")):
        text = read_text(path)
        if text in corpus_texts:
            raise UsageError(f"--extra_text_dirs: {path} is the text of the corpus document {corpus_texts[text]}; "
                             "unlabelled text must not be a text of --data_dir")
        windows = split_into_windows(text, data_args.window_chars, cuts=ruijin_ner.TRAINING_CUTS)
        for index, (start, end) in enumerate(windows):
            window = text[start:end]
            positions = len(encoder.fed(window))
            if not positions:  # nothing but blanks, with --skip_blanks: no position to learn
                continue
            before, after = window_context(text, start, end, data_args.context_chars)
            columns["id"].append(f"{path}-{index}")
            columns["document_id"].append(str(path))
            columns["offset"].append(start)
            add_window(columns, encoder, window, before, after, [UNTAGGED] * positions)
            columns["blank_only_entities"].append(0)
    if not columns["input_ids"]:
        raise UsageError(f"--extra_text_dirs {' '.join(map(str, folders))}: no text in any .txt file")
    columns = with_lengths(columns)
    return datasets.Dataset.from_dict({name: columns[name] for name in features}, features=features)


def blank_free_tags(characters, tags) -> tuple[list[str], int]:
    """The tags of the non-blank characters (what a ``skip_blanks`` model is trained on), and how many entities
    were lost because they hold nothing but blanks. An entity that starts on a blank starts at its first
    non-blank character (its ``I-`` becomes ``B-``), so that no two entities merge."""
    kept, starts_pending, lost = [], None, 0
    for character, tag in zip(characters, tags, strict=True):
        if is_blank(character):
            if tag.startswith("B-"):
                lost += starts_pending is not None  # the previous entity began on a blank and held only blanks
                starts_pending = tag[2:]
            elif not tag.startswith("I-") and starts_pending is not None:
                lost, starts_pending = lost + 1, None
            continue
        if starts_pending is not None:
            if tag == f"I-{starts_pending}":
                tag = f"B-{starts_pending}"
            else:
                lost += 1
            starts_pending = None
        kept.append(tag)
    return kept, lost + (starts_pending is not None)

