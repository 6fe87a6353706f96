"""Entity-level scoring shared by training, prediction and the notebook.

Two scorers, one report layout (seqeval's ``classification_report(output_dict=True)``: one row per entity
type with ``precision``, ``recall``, ``f1-score`` and ``support``, plus ``micro avg``, ``macro avg`` and
``weighted avg``):

* ``brat_ner.trainer.metrics.EntitySeqeval``, an ``evaluate`` metric over BIO tag sequences (the windows seen in
  training), which this module leaves out so that the commands that only score brat entities start without
  importing ``evaluate``;
* :func:`score_entities`, strict matching of brat entities (same document, type, first and last offset),
  the level at which the Ruijin competition was scored;
* :func:`score_overlapping_entities`, lenient matching (same document and type, spans overlap; each entity
  matched at most once), the rule of many public competition entries.

:func:`score_both` gives the strict and the overlap report of the same entities, as the training and
prediction reports show them side by side.

Averages run over the entity types that occur in the gold or the predicted entities, as seqeval's do.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from brat_ner.files import atomic_write

AVERAGE_ROWS = ("micro avg", "macro avg", "weighted avg")
MATCHING_RULES = {  # the headings of the reports of score_both, as printed
    "strict": "Strict (type, first and last offset must match):",
    "overlap": "Overlap (type must match, spans must overlap; one-to-one):",
}


def score_entities(gold: Iterable[tuple], predicted: Iterable[tuple]) -> dict:
    """Strict entity scores: an entity is a tuple ``(document_id, type, start, end)`` and counts as found
    only when the same tuple is predicted; an entity annotated twice counts once. Returns the shared report
    layout."""
    gold_set, predicted_set = set(gold), set(predicted)
    found = Counter(entity[1] for entity in gold_set & predicted_set)
    support = Counter(entity[1] for entity in gold_set)
    predicted_count = Counter(entity[1] for entity in predicted_set)
    return _report(found, predicted_count, support)


def score_overlapping_entities(gold: Iterable[tuple], predicted: Iterable[tuple]) -> dict:
    """Lenient entity scores: entities are ``(document_id, type, start, end)`` tuples (end exclusive) and a
    predicted entity finds a gold one when both have the same document and type and their spans share at least
    one character (``start < other_end and other_start < end``: adjacent spans do not overlap).

    Matching rule: one to one, as large as possible. Within each document and type the gold and predicted
    entities form a bipartite graph (an edge where two spans overlap) and the counted matches are a maximum
    matching of it (augmenting paths), so each gold entity is found at most once and each prediction finds
    at most one: two predictions over one gold entity give one true positive and one false positive. Found =
    the matching's size; precision = found / predicted, recall = found / gold. An entity listed twice counts
    once, as in :func:`score_entities`. Returns the shared report layout."""
    gold_groups, predicted_groups = _by_document_and_type(set(gold)), _by_document_and_type(set(predicted))
    found = Counter()
    for key, predicted_spans in predicted_groups.items():
        found[key[1]] += _maximum_overlap_matching(gold_groups.get(key, []), predicted_spans)
    support = Counter()
    for (_, entity_type), spans in gold_groups.items():
        support[entity_type] += len(spans)
    predicted_count = Counter()
    for (_, entity_type), spans in predicted_groups.items():
        predicted_count[entity_type] += len(spans)
    return _report(found, predicted_count, support)


def score_both(gold: Iterable[tuple], predicted: Iterable[tuple]) -> dict[str, dict]:
    """``{"strict": score_entities(...), "overlap": score_overlapping_entities(...)}`` of the same entities."""
    gold, predicted = list(gold), list(predicted)
    return {"strict": score_entities(gold, predicted), "overlap": score_overlapping_entities(gold, predicted)}


def score_against_gold(gold_documents: list[dict], predictions: dict[str, list[dict]]) -> dict[str, dict]:
    """Brat-level scores over the predicted documents, ``{"strict": ..., "overlap": ...}`` (``score_both``):
    strict needs the same document, type, first and last offset; overlap the same document and type and
    overlapping spans, one to one. Every usable gold entity counts, nested ones too (the model can predict one
    entity per character)."""
    gold_documents = {doc["document_id"]: doc for doc in gold_documents}
    gold = [(document_id, entity["type"], entity["start"], entity["end"])
            for document_id in predictions for entity in gold_documents[document_id]["entities"]]
    predicted = [(document_id, entity["entity_group"], entity["start"], entity["end"])
                 for document_id, entities in predictions.items() for entity in entities]
    return score_both(gold, predicted)



def _by_document_and_type(entities) -> dict[tuple[str, str], list[tuple[int, int]]]:
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for document_id, entity_type, start, end in sorted(entities):
        groups.setdefault((document_id, entity_type), []).append((start, end))
    return groups


def _maximum_overlap_matching(gold_spans: list[tuple[int, int]], predicted_spans: list[tuple[int, int]]) -> int:
    """Size of a maximum one-to-one matching between overlapping spans: Kuhn's algorithm, one augmenting-path
    search per prediction, iterative (a chain of overlapping entities must not hit Python's recursion limit)."""
    neighbours = [[g for g, (gold_start, gold_end) in enumerate(gold_spans) if start < gold_end and gold_start < end]
                  for start, end in predicted_spans]
    owner: dict[int, int] = {}  # gold index -> the prediction matched to it
    return sum(_augment(prediction, neighbours, owner) for prediction in range(len(predicted_spans)))


def _augment(prediction: int, neighbours: list[list[int]], owner: dict[int, int]) -> bool:
    """Match ``prediction``, re-matching the owners of the gold entities on the way (an alternating path from it
    to a free gold entity), if such a path exists. The depth-first search keeps its path on explicit stacks."""
    visited: set[int] = set()
    path = [(prediction, iter(neighbours[prediction]))]  # predictions on the path, each with its untried golds
    via: list[int] = []  # via[i]: the gold entity, owned by path[i + 1]'s prediction, that path[i]'s would take
    while path:
        current, untried = path[-1]
        gold = next((g for g in untried if g not in visited), None)
        if gold is None:
            path.pop()
            if via:
                via.pop()
            continue
        visited.add(gold)
        if gold not in owner:
            for (matched, _), taken in zip(path, [*via, gold]):
                owner[taken] = matched
            return True
        via.append(gold)
        path.append((owner[gold], iter(neighbours[owner[gold]])))
    return False


def summary(report: dict) -> dict[str, float]:
    """The headline numbers of a report: micro precision, recall and F1, and macro F1."""
    return {
        "precision": report["micro avg"]["precision"],
        "recall": report["micro avg"]["recall"],
        "f1": report["micro avg"]["f1-score"],
        "macro_f1": report["macro avg"]["f1-score"],
    }


def report_to_markdown(report: dict) -> str:
    """A Markdown table in the layout of seqeval's classification report."""
    lines = ["| type | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in report.items():
        label = f"**{name}**" if name in AVERAGE_ROWS else name
        lines.append(
            f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | {row['support']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, path_stem: str | Path) -> None:
    """Write ``<path_stem>.json`` and ``<path_stem>.md``."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path_stem.with_suffix(".json"), json.dumps(report, indent=2, ensure_ascii=False))
    atomic_write(path_stem.with_suffix(".md"), report_to_markdown(report))


def write_reports(reports: dict[str, dict], path_stem: str | Path) -> None:
    """Write the ``strict`` report as ``<path_stem>.json``/``.md`` (the layout the model card and older readers
    expect) and every other one (``overlap``) as ``<path_stem>_<name>.json``/``.md``."""
    path_stem = Path(path_stem)
    for name, report in reports.items():
        write_report(report, path_stem if name == "strict" else path_stem.with_name(f"{path_stem.name}_{name}"))


def reports_to_markdown(reports: dict[str, dict]) -> str:
    """The reports' tables one after the other, each under a heading naming its matching rule."""
    return "\n".join(f"{MATCHING_RULES.get(name, name)}\n\n{report_to_markdown(report)}"
                      for name, report in reports.items())


def _report(found: Counter, predicted: Counter, support: Counter) -> dict:
    """The shared layout from per-type counts of found, predicted and gold entities."""
    report = {entity_type: _scores(found[entity_type], predicted[entity_type], support[entity_type])
              for entity_type in sorted(support.keys() | predicted.keys())}
    report["micro avg"] = _scores(sum(found.values()), sum(predicted.values()), sum(support.values()))
    report.update(_averages(report))
    return report


def _scores(found: int, predicted: int, support: int) -> dict:
    precision = found / predicted if predicted else 0.0
    recall = found / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1-score": f1, "support": support}


def _averages(report: dict) -> dict:
    rows = [row for name, row in report.items() if name not in AVERAGE_ROWS]
    total = sum(row["support"] for row in rows)
    metrics = ("precision", "recall", "f1-score")
    macro = {m: sum(row[m] for row in rows) / len(rows) if rows else 0.0 for m in metrics}
    weighted = {m: sum(row[m] * row["support"] for row in rows) / total if total else 0.0 for m in metrics}
    return {"macro avg": {**macro, "support": total}, "weighted avg": {**weighted, "support": total}}


def plain_report(report: dict) -> dict:
    """seqeval returns numpy scalars; reports are written as JSON, so keep plain Python numbers."""
    return {name: {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}
            for name, row in report.items()}


ERROR_CATEGORIES = ("correct", "wrong_type", "wrong_boundary", "wrong_type_and_boundary", "missed", "spurious")
"""The categories of :func:`error_breakdown`, in table order (``spurious`` counts predictions, the others gold)."""


def error_breakdown(gold: Iterable[tuple], predicted: Iterable[tuple]) -> dict[str, Counter]:
    """Where the entities went, per type: entities are ``(document_id, type, start, end)`` tuples, end exclusive.

    Each gold entity counts once under its own type, in the first of these that applies:

    1. ``correct``: the same tuple is predicted;
    2. ``wrong_type``: a predicted entity has exactly the same span but another type;
    3. ``wrong_boundary``: an overlapping predicted entity has the same type but other offsets;
    4. ``missed``: no predicted entity overlaps it;
    5. ``wrong_type_and_boundary``: only predicted entities of other types and other offsets overlap it
       (counted so that a type's gold categories add up to its support).

    Each predicted entity that overlaps no gold entity counts as ``spurious`` under its predicted type.
    Types with no count are absent; a type's Counter returns 0 for the categories it lacks.
    """
    gold_set, predicted_set = set(gold), set(predicted)
    gold_by_document, predicted_by_document = _by_document(gold_set), _by_document(predicted_set)

    def overlapping(entity, by_document):
        return [other for other in by_document.get(entity[0], ()) if other[2] < entity[3] and entity[2] < other[3]]

    breakdown: dict[str, Counter] = {}
    for entity in gold_set:
        document_id, entity_type, start, end = entity
        others = overlapping(entity, predicted_by_document)
        if entity in predicted_set:
            category = "correct"
        elif any((other[2], other[3]) == (start, end) for other in others):
            category = "wrong_type"
        elif any(other[1] == entity_type for other in others):
            category = "wrong_boundary"
        elif not others:
            category = "missed"
        else:
            category = "wrong_type_and_boundary"
        breakdown.setdefault(entity_type, Counter())[category] += 1
    for entity in predicted_set:
        if not overlapping(entity, gold_by_document):
            breakdown.setdefault(entity[1], Counter())["spurious"] += 1
    return dict(sorted(breakdown.items()))


def _by_document(entities) -> dict[str, list[tuple]]:
    by_document: dict[str, list[tuple]] = {}
    for entity in entities:
        by_document.setdefault(entity[0], []).append(entity)
    return by_document
