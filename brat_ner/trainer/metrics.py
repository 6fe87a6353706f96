"""``compute_metrics`` for Trainer: entity F1 of the CRF's Viterbi paths, strict and overlap."""

from __future__ import annotations

import datasets
import evaluate
from seqeval.metrics import classification_report

from brat_ner.evaluation import plain_report, score_overlapping_entities, summary
from processing_bert_bilstm_crf import bio_to_spans


class EntitySeqeval(evaluate.Metric):
    """Entity-level precision, recall and F1 of BIO tag sequences, per type and averaged (seqeval, IOB2,
    default mode: an ``I-X`` that continues no ``X`` starts a new entity, as ``bio_to_spans`` reads it).

    The metric is defined here rather than fetched with ``evaluate.load("seqeval")`` because that loads a
    script from the Hugging Face Hub, which offline machines cannot reach.
    """

    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision, recall and F1 (seqeval) per type, micro and macro averaged.",
            citation="seqeval: https://github.com/chakki-works/seqeval",
            inputs_description="predictions, references: lists of BIO tag sequences of equal lengths.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        report = classification_report(references, predictions, output_dict=True, zero_division=0)
        return plain_report(report)


class NerMetrics:
    """``compute_metrics`` for Trainer: entity-level scores of CRF-decoded tag ids (``-100`` where the label is
    ``-100``), strict (seqeval) and overlap (``score_overlapping_entities`` on the entities of the same decoded
    windows, each window its own document). Keeps the last full per-type reports, ``{"strict": ...,
    "overlap": ...}``, for the test report; the headline metrics are the strict ones, the overlap ones are
    prefixed ``overlap_``."""

    def __init__(self, label_names):
        self.label_names = label_names
        self.metric = EntitySeqeval()
        self.last_reports = None

    def __call__(self, eval_prediction):
        predictions, references = [], []
        for predicted, gold in zip(eval_prediction.predictions, eval_prediction.label_ids):
            visible = gold != -100
            predictions.append([self.label_names[tag] for tag in predicted[visible]])
            references.append([self.label_names[tag] for tag in gold[visible]])
        strict = self.metric.compute(predictions=predictions, references=references)
        overlap = score_overlapping_entities(_window_entities(references), _window_entities(predictions))
        self.last_reports = {"strict": strict, "overlap": overlap}
        per_type = {f"f1_{name}": row["f1-score"] for name, row in strict.items() if "avg" not in name}
        overlap_summary = {f"overlap_{name}": value for name, value in summary(overlap).items()}
        return {**summary(strict), **per_type, **overlap_summary}


def _window_entities(tag_sequences):
    """``(window index, type, start, end)`` of BIO tag sequences, read as seqeval reads them (``bio_to_spans``)."""
    return [(index, *span) for index, tags in enumerate(tag_sequences) for span in bio_to_spans(tags)]

