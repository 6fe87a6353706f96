"""dataset_script/formats/registry.py: each format detected from its files, folders of one format read, and
files or folders that fit no format, or mix formats, refused in one line naming what was expected."""

import json

import pytest

from conftest import SAMPLE
from dataset_script.formats import AnnotationFormatError, registry


def written(folder, data_format, documents):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in registry.write_documents(documents, data_format)[0].items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


@pytest.mark.parametrize("data_format", registry.FORMAT_MODULES)
def test_each_format_is_detected_from_its_file_and_its_folder(tmp_path, data_format):
    folder = written(tmp_path / data_format, data_format, registry.read_documents(SAMPLE))
    (path,) = folder.iterdir()
    assert registry.detect_format(path) == registry.detect_format(folder) == data_format
    assert registry.source_files(folder, data_format) == [path]
    assert len(registry.read_documents(folder)) == len(registry.read_documents(path)) == 8


def test_a_folder_of_several_files_is_one_corpus_and_ids_must_differ(tmp_path):
    documents = registry.read_documents(SAMPLE)
    folder = written(tmp_path / "c", "cmeee", documents[:3])
    (folder / "corpus.json").rename(folder / "part1.json")
    written(folder, "cmeee", documents[3:])
    assert [d.document_id for d in registry.read_documents(folder)] == [d.document_id for d in documents]
    written(folder, "cmeee", documents[:1])  # corpus.json now repeats part1.json's first document
    with pytest.raises(AnnotationFormatError, match="document id '01' is already used"):
        registry.read_documents(folder)


@pytest.mark.parametrize("name, content, message", [
    ("tasks.json", json.dumps([{"title": "x"}]), "not an annotation file of a known format"),
    ("empty.json", "[]", "without any entity to tell it by: give the format"),
    ("notes.json", '{"text": "a"}', "not an annotation file of a known format"),
])
def test_a_file_that_fits_no_format_is_refused_naming_what_was_expected(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(AnnotationFormatError, match=rf"{tmp_path / name}: .*{message}.*expected brat .*CMeEE JSON"):
        registry.detect_format(tmp_path / name)


def test_mixed_folders_and_empty_folders_are_refused(tmp_path):
    documents = registry.read_documents(SAMPLE)
    written(tmp_path / "mixed", "doccano", documents)
    written(tmp_path / "mixed", "cmeee", documents)
    with pytest.raises(AnnotationFormatError, match=r"mixed: holds files of different formats \(corpus.json \(cmeee\)"):
        registry.detect_format(tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationFormatError, match="empty: no annotation files; expected brat"):
        registry.detect_format(tmp_path / "empty")
    with pytest.raises(AnnotationFormatError, match="nowhere: no such file or folder"):
        registry.detect_format(tmp_path / "nowhere")


def test_a_named_format_reads_what_detection_cannot_tell(tmp_path):
    path = tmp_path / "unlabelled.jsonl"
    path.write_text('{"text": "无", "label": []}\n', encoding="utf-8")
    assert registry.detect_format(path) == "doccano"
    empty = tmp_path / "no_entities.json"
    empty.write_text('[{"text": "无", "entities": []}]', encoding="utf-8")
    with pytest.raises(AnnotationFormatError, match="give the format"):
        registry.detect_format(empty)
    (document,) = registry.read_documents(empty, "cmeee")
    assert document.text == "无" and not document.entities


@pytest.mark.parametrize("document_id", ["../notes", "a/b", ".hidden", ""])
def test_an_id_that_is_no_plain_file_name_is_refused_before_brat_files_are_named_after_it(tmp_path, document_id):
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"document_id": document_id, "text": "糖尿病", "label": [[0, 3, "Disease"]]}) + "\n",
                    encoding="utf-8")
    documents = registry.read_documents(path)
    with pytest.raises(AnnotationFormatError, match=rf"{path}:1: document id .* cannot be a brat file name"):
        registry.write_documents(documents, "brat")
    assert registry.write_documents(documents, "cmeee")[0]  # other formats hold any id
