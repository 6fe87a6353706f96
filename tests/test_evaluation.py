"""error_breakdown: each category, the precedence between them, and that gold categories add up to the support."""

from collections import Counter

from brat_ner.evaluation import ERROR_CATEGORIES, error_breakdown


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
