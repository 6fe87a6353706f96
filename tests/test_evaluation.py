"""brat_ner/evaluation.py: error_breakdown (each category, the precedence between them, gold categories adding up
to the support) and overlap scoring beside strict (a maximum matching of overlapping entities)."""

import itertools
from collections import Counter

import numpy as np
import pytest

from brat_ner.evaluation import (
    ERROR_CATEGORIES,
    _maximum_overlap_matching,
    error_breakdown,
    score_both,
    score_entities,
    score_overlapping_entities,
)

# ----- error_breakdown -----


def test_each_category():
    gold = [
        ("d1", "Drug", 0, 4),        # predicted exactly: correct
        ("d1", "Disease", 10, 15),   # same span, predicted as Symptom: wrong_type
        ("d1", "Test", 20, 25),      # predicted as Test 21..25: wrong_boundary
        ("d1", "Anatomy", 30, 32),   # nothing predicted there: missed
        ("d2", "Drug", 0, 4),        # same offsets in another document are not a prediction for d2: missed
        ("d1", "Level", 40, 45),     # only a Symptom 42..48 overlaps: wrong_type_and_boundary
    ]
    predicted = [
        ("d1", "Drug", 0, 4),
        ("d1", "Symptom", 10, 15),
        ("d1", "Test", 21, 25),
        ("d1", "Symptom", 42, 48),
        ("d1", "Drug", 32, 36),      # touches Anatomy 30..32 (end exclusive) but does not overlap: spurious
        ("d3", "Drug", 0, 4),        # a document without gold entities: spurious
    ]
    breakdown = error_breakdown(gold, predicted)
    assert breakdown == {
        "Anatomy": Counter(missed=1),
        "Disease": Counter(wrong_type=1),
        "Drug": Counter(correct=1, missed=1, spurious=2),
        "Level": Counter(wrong_type_and_boundary=1),
        "Test": Counter(wrong_boundary=1),
    }
    assert list(breakdown) == sorted(breakdown)
    assert set().union(*breakdown.values()) <= set(ERROR_CATEGORIES)


def test_precedence_and_support():
    gold = [("d", "Drug", 0, 4), ("d", "Disease", 10, 15)]
    predicted = [
        ("d", "Drug", 0, 4), ("d", "Drug", 1, 3),          # exact match wins over a boundary error: correct
        ("d", "Symptom", 10, 15), ("d", "Disease", 12, 20),  # exact span, other type wins: wrong_type
    ]
    breakdown = error_breakdown(gold, predicted)
    assert breakdown == {"Drug": Counter(correct=1), "Disease": Counter(wrong_type=1)}
    # No prediction is spurious: each overlaps a gold entity. Gold categories add up to the support.
    support = Counter(entity[1] for entity in gold)
    for entity_type, counts in breakdown.items():
        assert sum(counts.values()) - counts["spurious"] == support[entity_type]


def test_no_entities_and_duplicates():
    assert error_breakdown([], []) == {}
    assert error_breakdown([], [("d", "Drug", 0, 1)]) == {"Drug": Counter(spurious=1)}
    # Entities are sets, as in score_entities: a repeated tuple counts once.
    assert error_breakdown([("d", "Drug", 0, 1)] * 2, [("d", "Drug", 0, 1)] * 3) == {"Drug": Counter(correct=1)}


# ----- Overlap scoring -----


def overlap_counts(gold, predicted, entity_type="Drug"):
    """(found, predicted, gold) of one type in the overlap report, recovered from its precision and recall."""
    row = score_overlapping_entities(gold, predicted)[entity_type]
    predicted_count = sum(entity[1] == entity_type for entity in set(predicted))
    return round(row["precision"] * predicted_count), predicted_count, row["support"]


def test_overlap_matches_each_gold_entity_once():
    gold = [("d", "Drug", 0, 4)]
    predicted = [("d", "Drug", 0, 2), ("d", "Drug", 2, 4)]  # both overlap the one gold entity
    report = score_overlapping_entities(gold, predicted)
    assert report["Drug"]["precision"] == 0.5 and report["Drug"]["recall"] == 1.0  # one TP, one FP
    assert report["micro avg"]["f1-score"] == pytest.approx(2 / 3)
    assert score_entities(gold, predicted)["micro avg"]["f1-score"] == 0.0  # strict finds neither


def test_overlap_needs_the_same_type_and_document():
    gold = [("d", "Drug", 0, 4)]
    report = score_overlapping_entities(gold, [("d", "Test", 0, 4), ("e", "Drug", 0, 4)])
    assert report["Drug"]["recall"] == 0.0 and report["Test"]["precision"] == 0.0
    assert report["micro avg"]["f1-score"] == 0.0


def test_overlap_end_is_exclusive():
    gold = [("d", "Drug", 2, 4)]
    assert score_overlapping_entities(gold, [("d", "Drug", 4, 6)])["Drug"]["recall"] == 0.0  # adjacent after
    assert score_overlapping_entities(gold, [("d", "Drug", 0, 2)])["Drug"]["recall"] == 0.0  # adjacent before
    assert score_overlapping_entities(gold, [("d", "Drug", 3, 6)])["Drug"]["recall"] == 1.0  # shares character 3


def test_overlap_matching_is_maximum_not_greedy():
    # The first prediction overlaps both gold entities; matching it to the first one (as a greedy pass in
    # order would) leaves the second prediction, which only overlaps the first gold entity, unmatched.
    gold = [("d", "Drug", 0, 10), ("d", "Drug", 8, 12)]
    predicted = [("d", "Drug", 9, 11), ("d", "Drug", 0, 2)]
    assert overlap_counts(gold, predicted) == (2, 2, 2)


def brute_force_matching_size(gold, predicted):
    """The largest number of (prediction, gold) pairs that overlap, no entity in two pairs, by enumeration."""
    best = 0
    for choice in itertools.product([None, *range(len(gold))], repeat=len(predicted)):
        taken = [g for g in choice if g is not None]
        if len(taken) == len(set(taken)) and all(
                g is None or (predicted[p][0] < gold[g][1] and gold[g][0] < predicted[p][1])
                for p, g in enumerate(choice)):
            best = max(best, len(taken))
    return best


def test_overlap_matching_is_maximum_on_random_spans():
    generator = np.random.default_rng(1)
    for _ in range(40):
        gold, predicted = ([(int(s), int(s) + int(n)) for s, n in zip(generator.integers(0, 12, size),
                                                                      generator.integers(1, 5, size))]
                           for size in generator.integers(1, 6, 2))
        assert _maximum_overlap_matching(gold, predicted) == brute_force_matching_size(gold, predicted)


def test_overlap_matching_follows_long_augmenting_paths():
    # Prediction i overlaps gold i and i + 1 and takes gold i; the last prediction overlaps gold 0 only, so
    # matching it re-matches every earlier prediction one gold entity to the right.
    length = 3000
    gold = [(2 * i, 2 * i + 2) for i in range(length)]
    predicted = [(2 * i + 1, 2 * i + 3) for i in range(length - 1)] + [(0, 1)]
    assert _maximum_overlap_matching(gold, predicted) == length


def test_overlap_is_never_below_strict():
    generator = np.random.default_rng(0)
    entities = [("d", entity_type, int(start), int(start) + int(length))
                for entity_type, start, length in zip(generator.choice(["Drug", "Test"], 200),
                                                      generator.integers(0, 300, 200), generator.integers(1, 9, 200))]
    gold, predicted = entities[:100], entities[100:] + entities[:30]
    reports = score_both(gold, predicted)
    for name in ("Drug", "Test", "micro avg", "macro avg"):
        for metric in ("precision", "recall", "f1-score"):
            assert reports["overlap"][name][metric] >= reports["strict"][name][metric]
    assert reports["overlap"]["micro avg"]["f1-score"] > reports["strict"]["micro avg"]["f1-score"]
    assert reports["overlap"]["micro avg"]["support"] == reports["strict"]["micro avg"]["support"] == 100
