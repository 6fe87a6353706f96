"""dataset_script/formats/__init__.py and records.py: offsets between code points and UTF-16 units, and entities
added from offsets, checked."""

import pytest

from dataset_script.brat import Document
from dataset_script.formats import AnnotationFormatError, OffsetConverter
from dataset_script.formats.records import add_entity, record_id


def test_utf16_offsets_count_a_character_outside_the_bmp_twice():
    text = "a𠀀b😀c"
    converter = OffsetConverter(text, "utf16")
    assert [converter.from_characters(i) for i in range(len(text) + 1)] == [0, 1, 3, 4, 6, 7]
    assert [converter.to_characters(u) for u in range(8)] == [0, 1, None, 2, 3, None, 4, 5]
    plain = OffsetConverter(text, "code_point")
    assert [plain.to_characters(i) for i in (0, 5, 6)] == [0, 5, None]
    with pytest.raises(ValueError, match="offset unit must be one of code_point, utf16"):
        OffsetConverter(text, "bytes")


def test_entities_from_offsets_are_checked_against_the_text():
    document = Document("d", "糖尿病患者")
    offsets = OffsetConverter(document.text, "code_point")
    add_entity(document, "Disease", 0, 3, "here", offsets, "糖尿病")
    add_entity(document, "Disease", 1, 3, "here", offsets, "糖尿")  # the file's text says otherwise
    assert [(e.id, e.start, e.end, e.text) for e in document.entities] == [("T1", 0, 3, "糖尿病")]
    assert document.rejected == {("text_mismatch", "Disease"): 1}
    with pytest.raises(AnnotationFormatError, match="here: entity without a type"):
        add_entity(document, None, 0, 3, "here", offsets)
    with pytest.raises(AnnotationFormatError, match="here: offsets must be whole numbers"):
        add_entity(document, "Disease", True, 3, "here", offsets)


def test_records_without_ids_are_each_a_group_of_their_own(tmp_path):
    assert record_id({"document_id": "12_3", "id": 4}, ("document_id", "id"), tmp_path / "a.json", 0) == "12_3"
    assert record_id({"id": 4}, ("document_id", "id"), tmp_path / "a.json", 0) == "4"
    assert record_id({}, ("id",), tmp_path / "CMeEE_dev.json", 7) == "CMeEE-dev-7"
