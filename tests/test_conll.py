"""dataset_script/formats/conll.py: character-per-line BIO files read at the exact character (line breaks
restored, entities across them), BIOES tags, what the format cannot hold counted, the sample corpus
round-tripped, and malformed lines refused naming the file and line."""

import pytest

from conftest import SAMPLE
from dataset_script.brat import Document, Entity
from dataset_script.formats import AnnotationFormatError, conll, registry
from processing_bert_bilstm_crf import is_blank


def spans(documents):
    return [(d.document_id, d.text, [(e.type, e.start, e.end) for e in d.entities]) for d in documents]


def document(document_id, text, *entities):
    return Document(document_id, text, [Entity(f"T{n}", t, s, e, text[s:e], [(s, e)])
                                        for n, (t, s, e) in enumerate(entities, start=1)])


def test_lines_entities_across_line_breaks_and_empty_lines_come_back_exactly(tmp_path):
    original = [document("12_1", "𠀀糖\n尿病\n\n无", ("Disease", 1, 5)),
                document("x", "\n口服二甲双胍\n", ("Drug", 3, 7))]
    content, losses = conll.write(original)
    assert content.startswith("-DOCSTART- -X- 12_1 O\n\n𠀀 O\n糖 B-Disease\n\n尿 I-Disease\n病 I-Disease\n\n\n无 O\n\n")
    assert losses == {}
    (tmp_path / "c.conll").write_text(content, encoding="utf-8")
    assert spans(conll.read(tmp_path / "c.conll")) == spans(original)


def test_blanks_overlaps_and_entities_on_blanks_are_counted_not_silently_dropped(tmp_path):
    text = "2 型糖尿病 ，\r\n糖尿病"
    original = [document("d", text, ("Disease", 0, 6), ("Disease", 3, 6), ("Disease", 7, 9), ("Disease", 10, 13))]
    content, losses = conll.write(original)
    assert losses == {"blank character": 3, "overlapping entity": 1, "entity starting or ending on a blank": 1}
    (tmp_path / "c.conll").write_text(content, encoding="utf-8")
    (back,) = conll.read(tmp_path / "c.conll")
    assert back.text == "".join(c for c in text if c == "\n" or not is_blank(c)) == "2型糖尿病，\n糖尿病"
    assert [back.text[e.start:e.end] for e in back.entities] == ["2型糖尿病", "，", "糖尿病"]


def test_sentences_without_document_markers_are_documents_and_bioes_reads_as_bio(tmp_path):
    path = tmp_path / "weibo_train.bmes"
    path.write_text("糖 B-Disease\n尿 M-Disease\n病 E-Disease\n\n\n无 O\n胰 S-Drug\n", encoding="utf-8")
    assert spans(conll.read(path)) == [("weibo-train-0", "糖尿病", [("Disease", 0, 3)]),
                                       ("weibo-train-1", "无胰", [("Drug", 1, 2)])]


@pytest.mark.parametrize("line", ["糖 X-Disease", "糖", "糖\tB_Disease"])
def test_malformed_lines_are_refused_naming_the_file_and_line(tmp_path, line):
    path = tmp_path / "c.conll"
    path.write_text(f"无 O\n\n{line}\n", encoding="utf-8")
    with pytest.raises(AnnotationFormatError, match=rf"{path}:3: expected 'CHARACTER TAG'"):
        conll.read(path)


def test_sample_corpus_round_trips_exactly_but_for_the_counted_losses(tmp_path):
    documents = registry.read_documents(SAMPLE)
    files, losses = registry.write_documents(documents, "conll")
    ((name, content),) = files.items()
    (tmp_path / name).write_text(content, encoding="utf-8")
    back = conll.read(tmp_path / name)
    blanks = sum(1 for d in documents for c in d.text if c != "\n" and is_blank(c))
    assert losses["blank character"] == blanks > 0
    kept = 0
    for before, after in zip(documents, back):
        # Offsets in the text without its dropped blanks: where each character went.
        moved = [index - sum(1 for c in before.text[:index] if c != "\n" and is_blank(c))
                 for index in range(len(before.text) + 1)]
        assert after.document_id == before.document_id
        assert after.text == "".join(c for c in before.text if c == "\n" or not is_blank(c))
        expected = {(e.type, moved[e.start], moved[e.end]) for e in before.entities}
        assert {(e.type, e.start, e.end) for e in after.entities} <= expected
        kept += len(after.entities)
    assert kept == sum(len(d.entities) for d in documents) - losses["overlapping entity"]
