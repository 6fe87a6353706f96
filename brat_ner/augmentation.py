"""Augmented training windows (train.py's ``--augment``), after Dai & Adel, "An Analysis of Simple Data
Augmentation for Named Entity Recognition" (COLING 2020), for the rare entity types.

Each window of the training split that holds an entity of a rare type (``training_data.rare_types``, the
rule of the rare-type oversampling) gets ``copies`` augmented copies, made by these methods in this order, each with its
rate:

- ``mention``: each entity is replaced by another mention of its type from the training windows (drawn at
  random among the distinct mentions); the copy's tags are made anew from its spans (``spans_to_bio``), so every
  entity of the copy stands at its exact characters. A mention that would make the window longer than the
  windows train.py cuts is not used.
- ``token``: each character is replaced by a character that carries the same tag somewhere in the training
  windows (label-wise token replacement); blanks are neither replaced nor put in.
- ``shuffle``: the characters of each segment (an entity, or a run of characters outside entities) are shuffled;
  the tags stay where they are.

The paper's synonym replacement needs a Chinese synonym resource this project cannot ship; it is left out.

Rare types first: the rate at an entity of type T (and at its characters) is ``rate * sqrt(most frequent type's
count / T's count)``, at most 1, so the rarer the type the more of it changes; outside entities the rate is as
given. Only training windows are augmented (never validation or test), once, before training, from ``seed``:
the same seed gives the same copies.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter

import datasets

from brat_ner.training_data import rare_types
from dataset_script.ruijin_ner import spans_to_bio
from processing_bert_bilstm_crf import bio_to_spans, is_blank

logger = logging.getLogger(__name__)

METHODS = ("mention", "token", "shuffle")


def parse_rates(options: list[str]) -> dict[str, float]:
    """``["mention=0.5", "shuffle=0.1"]`` as ``{"mention": 0.5, "shuffle": 0.1}``; ``ValueError`` (a one-line
    refusal of the option) for an unknown method or a rate outside 0..1."""
    rates = {}
    for option in options:
        method, _, rate = option.partition("=")
        if method not in METHODS:
            raise ValueError(f"--augment {option}: the methods are {', '.join(METHODS)} (e.g. --augment mention=0.5)")
        try:
            rates[method] = float(rate)
        except ValueError:
            raise ValueError(f"--augment {option}: a rate is a number between 0 and 1 (e.g. {method}=0.3)") from None
        if not 0 <= rates[method] <= 1:
            raise ValueError(f"--augment {option}: a rate is a number between 0 and 1")
    return rates


def augmented_windows(train: datasets.Dataset, rates: dict[str, float], copies: int, rare_share: float,
                      window_chars: int, seed: int) -> tuple[datasets.Dataset, dict[str, int]]:
    """The augmented copies of the rare-type windows of the ``bio`` training split ``train`` (same features,
    ids ``<window id>-aug<k>``), and counts of what was done, for the log."""
    label_names = train.features["ner_tags"].feature.names
    windows = [(row, bio_to_spans([label_names[tag] for tag in row["ner_tags"]])) for row in train]
    type_counts = Counter(entity_type for _, spans in windows for entity_type, _, _ in spans)
    rare = rare_types(type_counts, rare_share)
    most = max(type_counts.values(), default=1)
    type_rates = {entity_type: {method: min(1.0, rate * math.sqrt(most / count)) for method, rate in rates.items()}
                  for entity_type, count in type_counts.items()}
    augmenter = _Augmenter(windows, rates, type_rates, window_chars, random.Random(seed))
    label_ids = {name: index for index, name in enumerate(label_names)}
    rows = []
    for row, spans in windows:
        if not any(entity_type in rare for entity_type, _, _ in spans):
            continue
        for copy in range(copies):
            characters, new_spans = augmenter.augment(row["tokens"], spans)
            tags, not_encoded = spans_to_bio(len(characters), new_spans)
            assert not not_encoded and len(characters) <= window_chars, "augmentation kept spans apart and short"
            rows.append({**row, "id": f"{row['id']}-aug{copy}", "tokens": characters,
                         "ner_tags": [label_ids[tag] for tag in tags]})
    augmenter.counts["windows"] = len(rows)
    augmented = datasets.Dataset.from_list(rows, features=train.features) if rows else train.select([])
    return augmented, dict(augmenter.counts)


def with_augmented_windows(train: datasets.Dataset, data_args, seed: int) -> datasets.Dataset:
    """The training split and, after it, the augmented copies that train.py's ``--augment`` options ask for."""
    augmented, counts = augmented_windows(train, parse_rates(data_args.augment), data_args.augment_copies,
                                          data_args.rare_type_share, data_args.window_chars, seed)
    logger.info("--augment: %d augmented windows join the %d training windows (%s)", len(augmented), len(train),
                ", ".join(f"{name}: {count}" for name, count in counts.items() if name != "windows"))
    return datasets.concatenate_datasets([train, augmented])


class _Augmenter:
    """The three methods, drawing from one random generator in a fixed order (reproducible by seed)."""

    def __init__(self, windows, rates, type_rates, window_chars: int, rng: random.Random):
        self.rates, self.type_rates, self.window_chars, self.rng = rates, type_rates, window_chars, rng
        mentions, pools = {}, {}
        for row, spans in windows:
            characters = row["tokens"]
            for entity_type, start, end in spans:
                mentions.setdefault(entity_type, set()).add("".join(characters[start:end]))
            for character, tag in zip(characters, _tags(len(characters), spans)):
                if not is_blank(character):
                    pools.setdefault(tag, set()).add(character)
        self.mentions = {entity_type: sorted(found) for entity_type, found in mentions.items()}
        self.pools = {tag: sorted(found) for tag, found in pools.items()}
        self.counts = Counter()

    def rate(self, method: str, entity_type: str | None) -> float:
        return self.type_rates[entity_type].get(method, 0.0) if entity_type else self.rates.get(method, 0.0)

    def augment(self, characters: list[str], spans) -> tuple[list[str], list[tuple[str, int, int]]]:
        characters, spans = list(characters), list(spans)
        if "mention" in self.rates:
            characters, spans = self.replace_mentions(characters, spans)
        tags = _tags(len(characters), spans)
        if "token" in self.rates:
            for index, (character, tag) in enumerate(zip(characters, tags)):
                entity_type = tag[2:] if tag != "O" else None
                if not is_blank(character) and self.rng.random() < self.rate("token", entity_type):
                    characters[index] = self.rng.choice(self.pools[tag])
                    self.counts["token replacements"] += 1
        if "shuffle" in self.rates:
            for entity_type, start, end in _segments(len(characters), spans):
                if end - start > 1 and self.rng.random() < self.rate("shuffle", entity_type):
                    segment = characters[start:end]
                    self.rng.shuffle(segment)
                    characters[start:end] = segment
                    self.counts["shuffled segments"] += 1
        return characters, spans

    def replace_mentions(self, characters, spans):
        """Each span replaced, at its type's rate, by a mention of its type that keeps the window short enough;
        the text between spans is kept, the spans moved by the change in length before them."""
        new_characters, new_spans, position = [], [], 0
        room = self.window_chars - len(characters)
        for entity_type, start, end in sorted(spans, key=lambda span: span[1]):
            new_characters += characters[position:start]
            mention = characters[start:end]
            if self.rng.random() < self.rate("mention", entity_type):
                drawn = self.rng.choice(self.mentions[entity_type])
                if len(drawn) - len(mention) <= room:
                    room -= len(drawn) - len(mention)
                    mention = list(drawn)
                    self.counts["mention replacements"] += 1
            new_spans.append((entity_type, len(new_characters), len(new_characters) + len(mention)))
            new_characters += mention
            position = end
        return new_characters + characters[position:], new_spans


def _tags(length: int, spans) -> list[str]:
    tags, not_encoded = spans_to_bio(length, spans)
    assert not not_encoded, "spans read from BIO tags never overlap"
    return tags


def _segments(length: int, spans):
    """``(type, start, end)`` of each entity and ``(None, start, end)`` of each run outside entities, in order."""
    position = 0
    for entity_type, start, end in sorted(spans, key=lambda span: span[1]):
        if start > position:
            yield None, position, start
        yield entity_type, start, end
        position = end
    if position < length:
        yield None, position, length
