"""notebooks/explore.ipynb runs top to bottom on the sample corpus with nbclient, as Jupyter runs it (working
directory notebooks/): once without a model, when the prediction sections say they are skipped, and once with a
tiny model trained by the real train.py, when it shows highlighted predictions and the per-type error table."""

import json
import re
from collections import Counter

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from dataset_script import ruijin_ner
from dataset_script.ruijin_ner import spans_to_bio
from processing_bert_bilstm_crf import bio_to_spans

NOTEBOOK = REPO / "notebooks" / "explore.ipynb"
# Appended to the executed copy only: the error table as data, to check its numbers rather than its rendering.
PROBE = ('import json; print("PROBE" + json.dumps(errors.to_dict() if "errors" in globals() else None, '
         'ensure_ascii=False))')


@pytest.fixture(scope="module")
def model_dir(trained_model):
    return trained_model[0]


@pytest.fixture(scope="module")
def test_documents():
    return list(ruijin_ner.load(REPO / "data" / "sample", name="brat")["test"])


def execute(monkeypatch, tmp_path, model_dir=None):
    """The notebook executed in a fresh kernel (which inherits this environment), plus the probe's result."""
    if model_dir:
        monkeypatch.setenv("NER_MODEL_DIR", str(model_dir))
    else:
        monkeypatch.delenv("NER_MODEL_DIR", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in Jupyter
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    before = sorted(NOTEBOOK.parent.rglob("*"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), "commit the notebook with outputs cleared"
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    nbformat.write(notebook, tmp_path / "explore.ipynb")  # the executed copy, outside the repository
    assert sorted(NOTEBOOK.parent.rglob("*")) == before, "executing the notebook left files in notebooks/"
    probe = json.loads(stream(notebook.cells.pop()).split("PROBE", 1)[1])
    assert not [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
                if output.output_type == "error" or output.get("name") == "stderr"], "errors or warnings in the output"
    return notebook, probe


def cell(notebook, tag):
    (found,) = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    return found


def stream(cell):
    return "".join(output.text for output in cell.outputs if output.output_type == "stream")


def rich(cell, mime="text/html"):
    return "".join(output.data[mime] for output in cell.outputs if mime in output.get("data", {}))


def images(notebook):
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs)


def test_without_a_model_the_prediction_sections_are_skipped(monkeypatch, tmp_path):
    notebook, errors = execute(monkeypatch, tmp_path)
    stats = stream(cell(notebook, "corpus-stats"))
    assert "entities read: 157" in stats and "documents: {'train': 6, 'validation': 1, 'test': 1}" in stats
    types = rich(cell(notebook, "type-table"))
    for entity_type, name in ruijin_ner.RUIJIN_TYPE_NAMES_ZH.items():
        assert f"<th>{entity_type}</th>" in types and name in types
    assert "二甲双胍 (" in rich(cell(notebook, "top-entities"))
    assert images(notebook) >= 2  # the type bar chart and the length histograms
    assert "3 windows of at most 62; overlapping entities not encoded: 1" in stream(cell(notebook, "windows"))
    window = cell(notebook, "window-table")
    assert "that column is skipped" in stream(window)
    assert "<td>B-Drug</td>" in rich(window)
    assert "input_id" not in rich(window)
    assert "skipping predictions and the error breakdown" in stream(cell(notebook, "predict"))
    assert rich(cell(notebook, "prediction-html")) == "" and errors is None


def test_with_a_model_predictions_are_highlighted_and_errors_broken_down(
        monkeypatch, tmp_path, model_dir, test_documents):
    notebook, errors = execute(monkeypatch, tmp_path, model_dir)
    window = cell(notebook, "window-table")
    assert "model input: [CLS] = " in stream(window) and "<th>input_id</th>" in rich(window)

    gold = [(d["document_id"], e["type"], e["start"], e["end"]) for d in test_documents for e in d["entities"]]
    printed = re.search(r"(\d+) documents, (\d+) gold entities, (\d+) predicted", stream(cell(notebook, "predict")))
    assert printed and [int(printed[1]), int(printed[2])] == [len(test_documents), len(gold)]

    # The shown document: every gold entity is highlighted with its type, or listed as hidden by an overlap.
    shown = test_documents[0]
    page = rich(cell(notebook, "prediction-html"))
    gold_html = page.split('<div class="gold"', 1)[1].split("</div>", 1)[0]
    predicted_html = page.split('<div class="predicted"', 1)[1].split("</div>", 1)[0]
    drawn = bio_to_spans(spans_to_bio(len(shown["text"]), [(e["type"], e["start"], e["end"])
                                                            for e in shown["entities"]])[0])
    assert gold_html.count('class="entity"') == len(drawn) > 0
    for entity_type, start, end in drawn:
        covered = shown["text"][start:end].replace("<", "&lt;").replace("\n", "<br>")
        assert re.search(f'title="{entity_type}" style="background:#[0-9a-f]{{8}};[^"]*">{re.escape(covered)}<sub',
                         gold_html), (entity_type, covered)
    hidden = len(shown["entities"]) - len(drawn)
    assert page.count("<li>") == hidden
    # One test document in the sample corpus: all predictions are drawn (the pipeline's do not overlap).
    assert predicted_html.count('class="entity"') == int(printed[3])
    for entity_type in {e["type"] for e in shown["entities"]}:
        assert f"{entity_type} {ruijin_ner.RUIJIN_TYPE_NAMES_ZH[entity_type]}</span>" in page  # the legend

    # Scores and the error table: each gold type of the test split, with its support.
    table = cell(notebook, "error-table")
    assert "| **micro avg** |" in rich(table, "text/markdown")
    support = Counter(entity_type for _, entity_type, _, _ in gold)
    for entity_type in support:
        assert f"<th>{entity_type}</th>" in rich(table)
        assert errors["support"][entity_type] == support[entity_type]
    gold_categories = ("correct", "wrong_type", "wrong_boundary", "wrong_type_and_boundary", "missed")
    for entity_type, count in errors["support"].items():
        assert count == sum(errors[category][entity_type] for category in gold_categories)
    assert errors["support"]["total"] == len(gold)
