"""dataset_script/formats/labelstudio.py: Label Studio JSON and JSON_MIN exports read at the exact character
(code points, and UTF-16 units for older exports), the sample corpus round-tripped, tasks with scored
predictions, the labeling config, and malformed files refused naming the place."""

import json
import logging
import re
import xml.etree.ElementTree as ElementTree

import pytest

from conftest import SAMPLE
from dataset_script.formats import AnnotationFormatError, labelstudio, registry

# U+20000 (CJK Extension B) is one code point and two UTF-16 units: every offset after it tells the units apart.
TEXT = "𠀀患者有2型糖尿病。"
DISEASE, NESTED = (4, 9), (6, 9)  # "2型糖尿病" and "糖尿病" in code points; UTF-16 adds one to each


def spans(documents):
    return [(d.document_id, d.text, [(e.type, e.start, e.end) for e in d.entities]) for d in documents]


def export(path, results, **task):
    task = {"id": 7, "data": {"text": TEXT}, "annotations": [{"result": results}], **task}
    path.write_text(json.dumps([task], ensure_ascii=False), encoding="utf-8")
    return path


def span(start, end, label, text):
    return {"from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "text": text, "labels": [label]}}


def test_code_point_export_puts_each_entity_on_its_characters(tmp_path):
    path = export(tmp_path / "export.json", [span(4, 9, "Disease", "2型糖尿病"), span(6, 9, "Disease", "糖尿病"),
                                             {"type": "choices", "value": {"choices": ["done"]}}])
    (document,) = labelstudio.read(path)
    assert document.document_id == "7" and document.text == TEXT
    assert [(e.start, e.end, e.text) for e in document.entities] == [(*DISEASE, "2型糖尿病"), (*NESTED, "糖尿病")]
    assert document.skipped_lines == {"choices result": 1}


def test_utf16_export_reads_with_the_utf16_unit_and_fails_the_text_check_without_it(tmp_path, caplog):
    path = export(tmp_path / "export.json", [span(5, 10, "Disease", "2型糖尿病")])
    (document,) = labelstudio.read(path, offset_unit="utf16")
    assert [(e.start, e.end) for e in document.entities] == [DISEASE]
    with caplog.at_level(logging.WARNING):
        (document,) = labelstudio.read(path)
    assert not document.entities and document.rejected == {("text_mismatch", "Disease"): 1}
    assert "outside the BMP" in caplog.text and f"{path}: task 0 (id 7), result 0" in caplog.text


def test_json_min_export_and_further_annotations_and_unannotated_tasks(tmp_path, caplog):
    minimal = [{"id": 3, "text": TEXT, "label": [{"start": 6, "end": 9, "text": "糖尿病", "labels": ["Disease"]}]}]
    (tmp_path / "min.json").write_text(json.dumps(minimal, ensure_ascii=False), encoding="utf-8")
    assert registry.detect_format(tmp_path / "min.json") == "labelstudio"
    assert spans(labelstudio.read(tmp_path / "min.json")) == [("3", TEXT, [("Disease", *NESTED)])]

    tasks = [{"id": 1, "data": {"text": TEXT, "document_id": "12_3"},
              "annotations": [{"was_cancelled": True, "result": []}, {"result": [span(6, 9, "Disease", "糖尿病")]},
                              {"result": []}]},
             {"id": 2, "data": {"text": "无"}, "predictions": [{"result": []}]}]
    (tmp_path / "full.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        (document,) = labelstudio.read(tmp_path / "full.json")
    assert document.document_id == "12_3" and len(document.entities) == 1
    assert document.skipped_lines == {"further annotation of the task": 1}
    assert "task 1 (id 2): no annotation" in caplog.text


@pytest.mark.parametrize("results, place, message", [
    ([span(4, 99, "Disease", "x")], "task 0 (id 7), result 0", "beyond the text"),
    ([span(9, 4, "Disease", "x")], "task 0 (id 7), result 0", "empty or reversed"),
    ([{"type": "labels", "value": {"start": 4, "end": 9, "labels": []}}], "task 0 (id 7), result 0", "non-empty"),
    ([span("4", 9, "Disease", "x")], "task 0 (id 7), result 0", "whole numbers"),
    ([span(1, 9, "Disease", None)], "task 0 (id 7), result 0", "inside a character"),
])
def test_malformed_results_are_refused_naming_the_file_and_task(tmp_path, results, place, message):
    path = export(tmp_path / "export.json", results)
    unit = "utf16" if message == "inside a character" else "code_point"
    with pytest.raises(AnnotationFormatError, match=f"{re.escape(f'{path}: {place}')}.*{message}"):
        labelstudio.read(path, offset_unit=unit)


def test_broken_json_is_refused_with_its_line(tmp_path):
    path = tmp_path / "export.json"
    path.write_text('[{"data": {"text": "a"},\n "annotations": [}]', encoding="utf-8")
    with pytest.raises(AnnotationFormatError, match=rf"{path}:2:\d+: not valid JSON"):
        labelstudio.read(path)


@pytest.mark.parametrize("offset_unit", ["code_point", "utf16"])
def test_sample_corpus_round_trips_exactly(tmp_path, offset_unit):
    documents = registry.read_documents(SAMPLE)
    (name, content), = registry.write_documents(documents, "labelstudio", offset_unit=offset_unit)[0].items()
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert spans(labelstudio.read(tmp_path / name, offset_unit=offset_unit)) == spans(documents)


def test_predicted_tasks_carry_scores_in_the_tools_unit_and_the_config_names_every_type():
    text = "𠀀糖尿病"
    prediction = labelstudio.prediction(text, [("Disease", 1, 4, 0.25)], score=0.25, model_version="m",
                                        offset_unit="utf16")
    task = labelstudio.task("d1", text, predictions=[prediction])
    (result,) = task["predictions"][0]["result"]
    assert result["value"] == {"start": 2, "end": 5, "text": "糖尿病", "labels": ["Disease"]}
    assert result["score"] == 0.25 and task["predictions"][0]["score"] == 0.25 and task["data"]["document_id"] == "d1"
    config = ElementTree.fromstring(labelstudio.labeling_config(["Disease", "A&B"]))
    assert [label.get("value") for label in config.iter("Label")] == ["Disease", "A&B"]
    assert config.find("Labels").get("toName") == config.find("Text").get("name") == result["to_name"]
