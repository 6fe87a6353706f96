"""dataset_script/formats/doccano.py: sequence-labelling and relation-mode JSONL read at the exact character in
both units (doccano's UTF-16 by default, code points on request), the sample corpus round-tripped, and malformed
lines refused naming the file and line."""

import json

import pytest

from conftest import SAMPLE
from dataset_script.formats import AnnotationFormatError, doccano, registry

TEXT = "🩺患者有2型糖尿病。"  # U+1FA7A: one code point, two UTF-16 units, before every entity
DISEASE, NESTED = (4, 9), (6, 9)  # "2型糖尿病" and "糖尿病" in code points


def spans(documents):
    return [(d.document_id, d.text, [(e.type, e.start, e.end) for e in d.entities]) for d in documents]


def jsonl(path, *records):
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def test_doccano_offsets_count_utf16_units_by_default_and_code_points_on_request(tmp_path):
    utf16 = jsonl(tmp_path / "utf16.jsonl", {"id": 5, "text": TEXT, "label": [[5, 10, "Disease"], [7, 10, "Disease"]]})
    code_points = jsonl(tmp_path / "python.jsonl", {"text": TEXT, "label": [[4, 9, "Disease"], [6, 9, "Disease"]]})
    (from_doccano,) = doccano.read(utf16)
    (from_python,) = doccano.read(code_points, offset_unit="code_point")
    assert [(e.start, e.end, e.text) for e in from_doccano.entities] == [(*DISEASE, "2型糖尿病"), (*NESTED, "糖尿病")]
    assert spans([from_doccano])[0][1:] == spans([from_python])[0][1:]
    assert from_doccano.document_id == "5" and from_python.document_id == "python-1"  # no id: file and line


def test_relation_mode_reads_entities_and_counts_relations(tmp_path):
    record = {"id": 9, "text": TEXT, "relations": [{"id": 1, "from_id": 1, "to_id": 2, "type": "is"}],
              "entities": [{"id": 1, "label": "Disease", "start_offset": 7, "end_offset": 10}]}
    (document,) = doccano.read(jsonl(tmp_path / "relations.jsonl", record))
    assert [(e.type, e.start, e.end) for e in document.entities] == [("Disease", *NESTED)]
    assert document.skipped_lines == {"relation": 1}


@pytest.mark.parametrize("record, message", [
    ({"text": TEXT, "label": [[5, 99, "Disease"]]}, "beyond the text"),
    ({"text": TEXT, "label": [[1, 5, "Disease"]]}, "inside a character"),
    ({"text": TEXT, "label": [[5, 10]]}, r"expected labels as \[start, end, type\]"),
    ({"text": TEXT, "label": [[5, 10, ""]]}, "without a type"),
    ({"label": []}, "expected an object with a 'text' string"),
])
def test_malformed_lines_are_refused_naming_the_file_and_line(tmp_path, record, message):
    path = jsonl(tmp_path / "export.jsonl", {"text": "无", "label": []}, record)
    with pytest.raises(AnnotationFormatError, match=rf"{path}:2: .*{message}"):
        doccano.read(path)


def test_a_line_that_is_not_json_is_refused_with_its_number(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text('{"text": "a", "label": []}\n{"text": \n', encoding="utf-8")
    with pytest.raises(AnnotationFormatError, match=rf"{path}:2: not valid JSON"):
        doccano.read(path)


@pytest.mark.parametrize("offset_unit", ["utf16", "code_point"])
def test_sample_corpus_round_trips_exactly(tmp_path, offset_unit):
    documents = registry.read_documents(SAMPLE)
    (name, content), = registry.write_documents(documents, "doccano", offset_unit=offset_unit)[0].items()
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert registry.detect_format(tmp_path) == "doccano"
    assert spans(doccano.read(tmp_path / name, offset_unit=offset_unit)) == spans(documents)
