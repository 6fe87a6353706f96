"""dataset_script/formats/cmeee.py: CMeEE JSON with inclusive ends and nested entities read at the exact
character, unlabelled records left out with a warning, the sample corpus round-tripped, and malformed records
refused naming the file and record."""

import json
import logging

import pytest

from conftest import SAMPLE
from dataset_script.formats import AnnotationFormatError, cmeee, registry

TEXT = "𠀀患者有2型糖尿病。"


def spans(documents):
    return [(d.document_id, d.text, [(e.type, e.start, e.end) for e in d.entities]) for d in documents]


def records(path, *items):
    path.write_text(json.dumps(list(items), ensure_ascii=False), encoding="utf-8")
    return path


def test_inclusive_ends_and_nested_entities_land_on_their_characters(tmp_path, caplog):
    path = records(tmp_path / "CMeEE_train.json",
                   {"text": TEXT, "entities": [{"start_idx": 4, "end_idx": 8, "type": "dis", "entity": "2型糖尿病"},
                                               {"start_idx": 6, "end_idx": 8, "type": "dis", "entity": "糖尿病"}]},
                   {"text": "未标注"})
    assert registry.detect_format(path) == "cmeee"
    with caplog.at_level(logging.WARNING):
        (document,) = cmeee.read(path)
    assert [(e.start, e.end, e.text) for e in document.entities] == [(4, 9, "2型糖尿病"), (6, 9, "糖尿病")]
    assert document.document_id == "CMeEE-train-0"  # its own group: the split by group reads up to the first _
    assert "record 1: no 'entities'" in caplog.text


def test_an_entity_whose_text_differs_is_not_used_and_counted(tmp_path):
    path = records(tmp_path / "c.json", {"text": TEXT, "entities": [
        {"start_idx": 5, "end_idx": 9, "type": "dis", "entity": "2型糖尿病"}]})  # counted with an exclusive end
    (document,) = cmeee.read(path)
    assert not document.entities and document.rejected == {("text_mismatch", "dis"): 1}


@pytest.mark.parametrize("entity, message", [
    ({"start_idx": 4, "end_idx": 30, "type": "dis"}, "beyond the text"),
    ({"start_idx": 4, "type": "dis"}, "'end_idx' \\(inclusive\\)"),
    ({"start_idx": 8, "end_idx": 3, "type": "dis"}, "empty or reversed"),
])
def test_malformed_records_are_refused_naming_the_file_and_record(tmp_path, entity, message):
    path = records(tmp_path / "c.json", {"text": "无", "entities": []}, {"text": TEXT, "entities": [entity]})
    with pytest.raises(AnnotationFormatError, match=rf"{path}: record 1: .*{message}"):
        cmeee.read(path)


def test_sample_corpus_round_trips_exactly(tmp_path):
    documents = registry.read_documents(SAMPLE)
    (name, content), = registry.write_documents(documents, "cmeee")[0].items()
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert spans(cmeee.read(tmp_path / name)) == spans(documents)
    first = json.loads(content)[0]["entities"][0]
    assert first["entity"] == documents[0].text[first["start_idx"]:first["end_idx"] + 1]
