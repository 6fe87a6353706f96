"""A learning curve for annotation planning: cross-validated F1 against the number of training documents.

``cross_validate.py --train_fractions 0.25 0.5 1`` runs the same cross-validation once per share of each fold's
training documents (``train.py --train_fraction``: whole document groups, nested, the out-of-fold documents
unchanged, so every size is scored on the same documents). This module gathers the sizes' results into
``learning_curve.json`` and ``learning_curve.png``: strict and overlap, micro and macro F1, mean ± standard
deviation over folds. A curve still rising at its right end says that annotating more documents still pays.
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

from brat_ner.cross_validation import fold_folder
from brat_ner.files import atomic_write

CURVE_FILE = "learning_curve.json"
PLOT_FILE = "learning_curve.png"
CURVES = (("strict", "f1", "strict micro-F1"), ("strict", "macro_f1", "strict macro-F1"),
          ("overlap", "f1", "overlap micro-F1"), ("overlap", "macro_f1", "overlap macro-F1"))


def training_documents(cv_dir: Path, folds: int) -> float:
    """Mean number of training documents per fold, as each fold's train.py recorded them (``corpus.json``)."""
    return statistics.mean(
        json.loads((fold_folder(cv_dir, fold) / "corpus.json").read_text(encoding="utf-8"))["splits"]["train"]
        ["documents"] for fold in range(folds))


def curve_point(fraction: float, cv_dir: Path, folds: int, results: dict) -> dict:
    """One size of the curve: its share, its folder, its training documents and its scores over folds."""
    return {"train_fraction": fraction, "cross_validation_dir": str(cv_dir),
            "training_documents": training_documents(cv_dir, folds),
            "mean": results["mean"], "standard_deviation": results["standard_deviation"]}


def write_learning_curve(points: list[dict], output_dir: Path) -> None:
    """``learning_curve.json`` and ``learning_curve.png`` in ``output_dir``, each written whole or not at all."""
    points = sorted(points, key=lambda point: point["training_documents"])
    atomic_write(output_dir / CURVE_FILE, json.dumps({"points": points}, indent=2, ensure_ascii=False))
    atomic_write(output_dir / PLOT_FILE, plot(points))


def plot(points: list[dict]) -> bytes:
    """The curves as PNG bytes: one line per score, error bars of one standard deviation over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    documents = [point["training_documents"] for point in points]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for rule, name, label in CURVES:
        axes.errorbar(documents, [point["mean"][rule][name] for point in points],
                      yerr=[point["standard_deviation"][rule][name] for point in points],
                      marker="o", capsize=3, label=label)
    axes.set_xlabel("training documents per fold")
    axes.set_ylabel("out-of-fold F1 (mean ± sd over folds)")
    axes.set_title("Learning curve: is annotating more documents still paying?")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def curve_table(points: list[dict]) -> str:
    """The terminal's summary: per size, mean ± sd over folds of the four F1 scores."""
    rows = ["| training share | documents per fold | strict micro-F1 | strict macro-F1 | overlap micro-F1 | "
            "overlap macro-F1 |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for point in sorted(points, key=lambda point: point["training_documents"]):
        cells = " | ".join(f"{point['mean'][rule][name]:.4f} ± {point['standard_deviation'][rule][name]:.4f}"
                           for rule, name, _ in CURVES)
        # A mean over folds of whole documents: one decimal says it (2.7, not 2.66667).
        rows.append(f"| {point['train_fraction']:g} | {round(point['training_documents'], 1):g} | {cells} |")
    return "\n".join(rows)
