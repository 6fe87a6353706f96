"""dataset_script/brat.py: brat documents and annotation.conf read as brat reads them (every form of
annotation.conf, event triggers, notes, line ends, BOM and CRLF offsets), and bad input named by file and line."""

import logging
import unicodedata
from pathlib import Path

import pytest
from transformers import pipeline

from conftest import load_corpus, run_script, small_training, write_corpus
from dataset_script import ruijin_ner
from dataset_script.brat import BratFormatError, read_annotation_conf
from processing_bert_bilstm_crf import bio_to_spans


def load_as_one_split(folder: Path, **kwargs):
    return ruijin_ner.load(folder, cache_dir=str(folder.parent / "cache"), return_stats=True,
                           split_fractions=(1.0, 0.0, 0.0), **kwargs)


def label_types(corpus) -> list[str]:
    return [name[2:] for name in corpus["train"].features["ner_tags"].feature.names if name.startswith("B-")]


# ----- annotation.conf as brat reads it -----


CONF_OF_EVERY_FORM = """\
# -*- Mode: Text; tab-width: 8 -*-
Stray line before any section: brat ignores it
[spans]
# entity types, nested by indentation; !Type is abstract
!Anatomical_entity
\tOrgan
\t\tCell | Cell type | Cell
  Tissue
-----
Protein|GO:0005515
<ANATOMY>=Organ|Cell|Tissue
[relations]
# macros are defined per section
<ORG>=Organ|Cell
Part-of Arg1:<ORG>, Arg2:Organ
<OVERLAP> Arg1:<ENTITY>, Arg2:<ENTITY>, <OVL-TYPE>:<ANY>
[events]
!Process
    Binding Theme+:Protein, Site?:Organ
    Gene_expression\tTheme:Protein
----------------------------------------
Phosphorylation Theme:Protein, Site?:Entity
[attributes]
Negation Arg:<EVENT>
Confidence Arg:<EVENT>, Value:L1|L2|L3
"""


def test_annotation_conf_of_every_form_is_read_as_brat_reads_it(tmp_path):
    conf_path = tmp_path / "annotation.conf"
    conf_path.write_bytes(CONF_OF_EVERY_FORM.encode("utf-8"))
    conf = read_annotation_conf(conf_path)
    assert conf.entity_types == ("Cell", "Organ", "Protein", "Tissue")
    assert conf.event_types == ("Binding", "Gene_expression", "Phosphorylation")
    assert conf.abstract_types == ("Anatomical_entity", "Process")
    # The same conf with CR-only or CRLF line endings and [entities] for [spans] reads the same.
    for line_end in ("\r", "\r\n"):
        conf_path.write_bytes(CONF_OF_EVERY_FORM.replace("[spans]", "[entities]").replace("\n", line_end).encode())
        assert read_annotation_conf(conf_path) == conf


@pytest.mark.parametrize("section", ["[entities]", "[spans]"])
def test_spans_is_the_older_name_of_entities(tmp_path, section):
    text = "BMP-6 binds Smad4"
    ann = "T1\tProtein 0 5\tBMP-6\nT2\tProtein 12 17\tSmad4\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)}, f"{section}\nProtein\nEntity\n[events]\n")
    corpus, stats = load_as_one_split(folder)
    assert label_types(corpus) == ["Entity", "Protein"] and stats.entities_encoded == 2


def test_separators_macros_and_abstract_types_are_not_labels(tmp_path):
    text = "肝细胞 肝"
    ann = "T1\tCell 0 3\t肝细胞\nT2\tOrgan 4 5\t肝\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)}, CONF_OF_EVERY_FORM)
    corpus, _ = load_as_one_split(folder)
    assert label_types(corpus) == ["Cell", "Organ", "Protein", "Tissue"]


def test_a_type_the_conf_declares_abstract_or_not_at_all_is_an_error_naming_it(tmp_path):
    text = "肝细胞 肝"
    ann = "T1\tCell 0 3\t肝细胞\nT2\tAnatomical_entity 4 5\t肝\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)}, CONF_OF_EVERY_FORM)
    with pytest.raises(BratFormatError, match=r"entity types \['Anatomical_entity'\] are not in .*annotation\.conf .*"
                                              r"\(Anatomical_entity first in a\).*abstract \(!Type\)"):
        load_as_one_split(folder)


# ----- event triggers -----


SHARED_TASK_TEXT = "BMP-6 induced phosphorylation of Smad1, and binding of Smad1 to Smad4 was not observed."


SHARED_TASK_CONF = """\
[entities]
Protein
Entity
[relations]
Coref Arg1:Protein, Arg2:Protein
[events]
Gene_expression Theme:Protein
Binding Theme+:Protein
Phosphorylation Theme:Protein, Site?:Entity
!Regulation
\tPositive_regulation Theme:<EVENT>|Protein, Cause?:<EVENT>|Protein
\tNegative_regulation Theme:<EVENT>|Protein, Cause?:<EVENT>|Protein
[attributes]
Negation Arg:<EVENT>
Speculation Arg:<EVENT>
"""
ENTITIES = ["Entity", "Protein"]
TRIGGER_TYPES = ["Binding", "Phosphorylation", "Positive_regulation"]  # those the document uses


def shared_task_ann(text: str) -> str:
    """A .ann in the style of the BioNLP Genia event-extraction task: proteins, triggers, events, a negation
    modifier, an attribute, a relation, an equivalence, a normalisation and a note."""
    def span(word, occurrence=0):
        start = text.index(word, text.index(word) + 1) if occurrence else text.index(word)
        return f"{start} {start + len(word)}\t{word}"

    return "\n".join([
        f"T1\tProtein {span('BMP-6')}", f"T2\tProtein {span('Smad1')}", f"T3\tProtein {span('Smad1', 1)}",
        f"T4\tProtein {span('Smad4')}", f"T5\tPositive_regulation {span('induced')}",
        f"T6\tPhosphorylation {span('phosphorylation')}", f"T7\tBinding {span('binding')}",
        "E1\tPhosphorylation:T6 Theme:T2", "E2\tPositive_regulation:T5 Theme:E1 Cause:T1",
        "E3\tBinding:T7 Theme:T3 Theme2:T4", "M1\tNegation E3", "A1\tSpeculation E2",
        "R1\tCoref Arg1:T2 Arg2:T3", "*\tEquiv T2 T3", "N1\tReference T1 UniProt:P22004\tBMP6",
        "#1\tAnnotatorNotes T1\tsecreted", "",
    ])


@pytest.fixture
def shared_task_corpus(tmp_path):
    return write_corpus(tmp_path / "c", {"a": (SHARED_TASK_TEXT, shared_task_ann(SHARED_TASK_TEXT))},
                        SHARED_TASK_CONF)


def test_event_triggers_are_not_labels_by_default_and_are_counted(shared_task_corpus):
    corpus, stats = load_as_one_split(shared_task_corpus)
    assert label_types(corpus) == ENTITIES
    assert stats.entities_read == stats.entities_encoded == 4
    assert stats.skipped_lines == {"event trigger": 3, "event": 3, "attribute": 2, "relation": 1,
                                   "equivalence": 1, "normalization": 1, "note": 1}
    documents = ruijin_ner.load(shared_task_corpus, name="brat", cache_dir=str(shared_task_corpus.parent / "cache"),
                                split_fractions=(1.0, 0.0, 0.0))
    assert {entity["type"] for entity in documents["train"][0]["entities"]} == {"Protein"}
    gold = ruijin_ner.read_corpus_documents(shared_task_corpus)  # what predictions are scored against
    assert [entity["id"] for entity in gold[0]["entities"]] == ["T1", "T2", "T3", "T4"]


def test_event_triggers_included_on_request_are_labels(shared_task_corpus):
    corpus, stats = load_as_one_split(shared_task_corpus, event_triggers="include")
    # Every non-abstract [events] type of the conf, as brat offers them; the abstract Regulation is not one.
    assert label_types(corpus) == ["Binding", "Entity", "Gene_expression", "Negative_regulation",
                                   "Phosphorylation", "Positive_regulation", "Protein"]
    assert stats.entities_read == stats.entities_encoded == 7 and "event trigger" not in stats.skipped_lines


def test_without_a_conf_the_t_lines_that_e_lines_name_are_triggers(shared_task_corpus, caplog):
    (shared_task_corpus / "annotation.conf").unlink()
    corpus, stats = load_as_one_split(shared_task_corpus)
    assert label_types(corpus) == ["Protein"] and stats.skipped_lines["event trigger"] == 3
    with caplog.at_level(logging.WARNING):
        corpus, _ = load_as_one_split(shared_task_corpus, event_triggers="include")
    assert label_types(corpus) == sorted(["Protein", *TRIGGER_TYPES])
    assert "Binding (first in a)" in caplog.text  # the label set comes from the data: said so


def test_an_event_type_missing_from_the_conf_is_an_error_naming_it(shared_task_corpus):
    conf = SHARED_TASK_CONF.replace("Binding Theme+:Protein\n", "")
    (shared_task_corpus / "annotation.conf").write_text(conf, encoding="utf-8")
    with pytest.raises(BratFormatError, match=r"entity types \['Binding'\] are not in .*\(Binding first in a\)"):
        load_as_one_split(shared_task_corpus)


def test_an_e_line_without_its_trigger_names_file_and_line(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("Smad4", "T1\tProtein 0 5\tSmad4\nE1\tBinding Theme:T1\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: expected 'ID<TAB>TYPE:TRIGGER"):
        load_as_one_split(folder)


def test_the_trigger_setting_and_the_conf_are_part_of_the_cache_key(shared_task_corpus):
    labels = sorted([*ENTITIES, *TRIGGER_TYPES])  # the same label set every time: only the setting or conf differs

    def tagged_types(**settings):
        corpus, stats = load_as_one_split(shared_task_corpus, entity_types=labels, **settings)
        names = corpus["train"].features["ner_tags"].feature.names
        return {names[tag][2:] for tag in corpus["train"][0]["ner_tags"] if tag}

    assert tagged_types(event_triggers="skip") == {"Protein"}
    assert tagged_types(event_triggers="include") == {"Protein", *TRIGGER_TYPES}
    assert tagged_types(event_triggers="skip") == {"Protein"}
    # Binding declared an entity type instead of an event type: its T line is an entity now.
    conf = SHARED_TASK_CONF.replace("Binding Theme+:Protein\n", "").replace("Entity\n", "Entity\nBinding\n", 1)
    (shared_task_corpus / "annotation.conf").write_text(conf, encoding="utf-8")
    assert tagged_types(event_triggers="skip") == {"Protein", "Binding"}
    with pytest.raises(ValueError, match="event_triggers must be 'skip' or 'include'"):
        load_as_one_split(shared_task_corpus, event_triggers="keep")


# ----- pre-annotated folders -----


def test_a_pre_annotated_folder_with_notes_and_a_conf_trains_as_it_is(tmp_path):
    text = "患者有糖尿病，服用二甲双胍。"
    ann = ("T1\tDisease 3 6\t糖尿病\n#1\tAnnotatorNotes T1\tconfidence 0.93\n"
           "T2\tMedicine 9 13\t二甲双胍\n#2\tAnnotatorNotes T2\tconfidence 0.61\n")
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)}, "[entities]\nDisease\nMedicine\nSymptom\n")
    corpus, stats = load_as_one_split(folder)
    assert label_types(corpus) == ["Disease", "Medicine", "Symptom"]
    assert stats.skipped_lines == {"note": 2} and stats.entities_encoded == 2


# ----- messages for files brat reads otherwise than they look -----


def test_a_type_name_with_a_space_is_named_as_such(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("口干多饮", "T1\tSide Effect 0 2\t口干\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:1: entity T1 has type 'Side Effect', but brat type names "
                                              r"cannot contain spaces \(brat itself would store 'Side_Effect'\)"):
        load_as_one_split(folder)


def test_a_text_mismatch_of_unicode_normalisation_only_says_so_with_code_points(tmp_path, caplog):
    text = unicodedata.normalize("NFD", "café au lait, naïve")  # the .txt in NFD, the .ann in NFC
    ann = f"T1\tFood 0 5\t{unicodedata.normalize('NFC', text[:5])}\nT2\tFood 14 19\tna\u00efve\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)})
    with caplog.at_level(logging.WARNING):
        _, stats = load_as_one_split(folder, entity_types=["Food"])
    assert ("a.ann:1: text 'caf\u00e9' differs from the .txt at its offsets ('cafe\u0301') only in Unicode "
            "normalisation (NFC vs NFD): .ann U+0063 U+0061 U+0066 U+00E9, .txt U+0063 U+0061 U+0066 U+0065 "
            "U+0301") in caplog.text
    # Offsets counted on an NFC copy of the .txt land elsewhere: the warning points at the normalisation.
    assert "a.ann:2: " in caplog.text and "the .txt is not in Unicode NFC form" in caplog.text
    assert stats.dropped == {("text_mismatch", "Food"): 2}


@pytest.mark.parametrize("line_end", ["\r", "\r\n", "\n"])
def test_ann_lines_end_where_brat_ends_them(tmp_path, line_end):
    text = "糖尿病\r高血压"
    ann = line_end.join(["T1\tDisease 0 3\t糖尿病", "#1\tAnnotatorNotes T1\tnote", "T2\tDisease 4 7\t高血压", ""])
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)})
    documents = ruijin_ner.load(folder, name="brat", cache_dir=str(tmp_path / "cache"), split_fractions=(1, 0, 0))
    entities = documents["train"][0]["entities"]
    assert [(e["id"], e["start"], e["end"], e["text"]) for e in entities] == [
        ("T1", 0, 3, "糖尿病"), ("T2", 4, 7, "高血压")]


# ----- end to end -----


def test_a_corpus_with_events_trains_and_predicts_without_trigger_labels(tmp_path):
    corpus = tmp_path / "events"
    for split in ("train", "dev", "test"):
        write_corpus(corpus / split, {f"{split}{i}": (SHARED_TASK_TEXT, shared_task_ann(SHARED_TASK_TEXT))
                                      for i in range(2)})
    (corpus / "annotation.conf").write_text(SHARED_TASK_CONF, encoding="utf-8")
    output_dir = tmp_path / "model"
    run_script(small_training(output_dir, "--data_dir", str(corpus), "--num_train_epochs", "1"))
    tagger = pipeline("token-classification", model=str(output_dir), trust_remote_code=True, device="cpu")
    labels = set(tagger.model.config.id2label.values())
    assert labels == {"O", "B-Entity", "I-Entity", "B-Protein", "I-Protein"}
    predicted = tagger(SHARED_TASK_TEXT)
    assert {entity["entity_group"] for entity in predicted} <= set(ENTITIES)


# ----- bad input -----


def test_offset_beyond_text_names_file_and_line(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\nT2\tDisease 1 9\t尿病\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: offset 9 is beyond the end of the text \(3"):
        load_corpus(folder)


@pytest.mark.parametrize("line", ["T1\tDisease 0\t糖", "T1 Disease 0 3 糖尿病", "T1\tDisease 0 x\t糖", "X1\tfoo",
                                  "T1\tDisease 3 1\t糖", "T1\t 0 3\t糖尿病", "T1\tDisease \u0660 \u0663\t糖尿病"])
def test_malformed_lines_name_file_and_line(tmp_path, line):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", f"#1\tnote\n{line}\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: "):
        load_corpus(folder)


def test_entity_id_used_twice_names_both_lines(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\nT1\tDisease 1 3\t尿病\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: entity id T1 is already used on line 1"):
        load_corpus(folder)


def test_entity_text_mismatch_is_a_warning_or_in_strict_mode_an_error(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病患者", "T1\tDisease 0 3\t糖尿病\nT2\tDisease 1 3\t糖尿\n")})
    with caplog.at_level(logging.WARNING):
        corpus, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    # Once, although the first load_corpus reads the files twice (statistics, then the builder).
    assert caplog.text.count("a.ann:2: text '糖尿' differs from the .txt at its offsets ('尿病')") == 1
    assert stats.dropped == {("text_mismatch", "Disease"): 1} and stats.entities_encoded == 1
    with pytest.raises(BratFormatError, match=r"a\.ann:2: text"):
        load_corpus(folder, strict=True)


def test_fragments_separated_by_text_are_reported(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿和病", "T1\tDisease 0 2;3 4\t糖尿 病\n")})
    with caplog.at_level(logging.WARNING):
        _, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "separated by text '和'" in caplog.text
    assert stats.dropped == {("gap_with_text", "Disease"): 1}


def test_ann_without_txt_is_an_error_and_txt_without_ann_a_warning(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": (None, "T1\tDisease 0 1\t糖\n"), "b": ("糖", "")})
    with pytest.raises(BratFormatError, match=r"a\.ann: no matching a\.txt"):
        load_corpus(folder)
    folder = write_corpus(tmp_path / "d", {"b": ("糖", ""), "c": ("糖", None)})
    with caplog.at_level(logging.WARNING):
        _, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "c.txt: no matching .ann; document not used" in caplog.text and stats.documents["train"] == 1
    with pytest.raises(BratFormatError, match=r"c\.txt: no matching \.ann"):
        load_corpus(folder, strict=True)


def test_upper_case_suffix_is_named_in_the_error(tmp_path):
    folder = write_corpus(tmp_path / "c", {"01": (None, "T1\tDisease 0 1\t糖\n")})
    (folder / "01.TXT").write_text("糖", encoding="utf-8")
    with pytest.raises(BratFormatError, match=r"01\.ann: no matching 01\.txt \(found 01\.TXT; brat reads lower-case"):
        load_corpus(folder)
    (folder / "01.TXT").rename(folder / "01.txt")
    (folder / "01.ann").rename(folder / "01.ANN")
    with pytest.raises(BratFormatError, match=r"01\.txt: no matching \.ann; document not used \(found 01\.ANN"):
        load_corpus(folder, strict=True)


def test_hidden_files_are_not_documents(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"), ".b": ("糖", "")})
    (folder / "._a.txt").write_bytes(b"\x00\x05\x16\x07\xff")  # a macOS side file: not text
    (folder / "._a.ann").write_bytes(b"\x00\x05\x16\x07\xff")
    corpus, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert list(corpus["train"]["document_id"]) == ["a"] and stats.documents == {"train": 1}


def test_non_utf8_file_is_an_error_naming_it(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")}, encoding="gbk")
    with pytest.raises(BratFormatError, match=r"a\.(txt|ann): not UTF-8"):
        load_corpus(folder)


def test_bom_and_crlf_keep_brat_offsets(tmp_path):
    # brat counts characters of the file as written: the BOM is character 0 and \r\n is two characters.
    text = "\ufeff患者有\r\n糖尿病\r\n史"
    start = text.index("糖")
    ann = f"T1\tDisease {start} {start + 3}\t糖尿病\r\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)})
    corpus, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    (window,) = corpus["train"]
    names = corpus["train"].features["ner_tags"].feature.names
    tags = [names[tag] for tag in window["ner_tags"]]
    assert "".join(window["tokens"]) == text
    assert bio_to_spans(tags) == [("Disease", start, start + 3)] and stats.entities_encoded == 1


def test_offsets_counted_without_the_bom_are_reported_not_shifted(tmp_path, caplog):
    text = "\ufeff患者有糖尿病，高血压"
    ann = "T1\tDisease 3 6\t糖尿病\nT2\tDisease 8 11\t高血压\n"  # T1 counted without the BOM, T2 with it
    folder = write_corpus(tmp_path / "c", {"a": (text, ann), "b": (text, "T1\tDisease 3 6\t糖尿病\n")})
    with caplog.at_level(logging.WARNING):
        corpus, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "byte-order mark, which brat counts as character 0" in caplog.text
    assert stats.entities_encoded == 1 and stats.dropped == {("text_mismatch", "Disease"): 2}
    (window,) = corpus["train"]  # b: none of its entities usable, so not trained as all O
    names = corpus["train"].features["ner_tags"].feature.names
    assert bio_to_spans([names[tag] for tag in window["ner_tags"]]) == [("Disease", 8, 11)]  # nothing shifted
    assert "b.ann: none of its 1 entities is usable; document not used" in caplog.text
    assert stats.left_out == {"train": 1} and stats.documents == {"train": 1}


def test_offsets_counted_with_lf_line_endings_are_reported_with_a_crlf_hint(tmp_path, caplog):
    text = "患者\r\n有糖尿病"
    folder = write_corpus(tmp_path / "c", {"a": (text, "T1\tDisease 4 7\t糖尿病\n")})  # 4 = \r\n counted once
    with caplog.at_level(logging.WARNING):
        _, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "CRLF line endings, which brat counts as two characters" in caplog.text
    assert stats.dropped == {("text_mismatch", "Disease"): 1}


def test_ann_with_bom_crlf_and_a_tab_inside_an_entity(tmp_path):
    text = "血糖\t7.0 mmol/L"
    ann = "\ufeffT1\tTest 0 2\t血糖\r\nT2\tTest_Value 0 13\t血糖\t7.0 mmol/L\r\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)})
    documents = ruijin_ner.load(folder, name="brat", cache_dir=str(tmp_path / "cache"), split_fractions=(1, 0, 0))
    entities = documents["train"][0]["entities"]
    assert [(e["id"], e["start"], e["end"], e["text"]) for e in entities] == [
        ("T1", 0, 2, "血糖"), ("T2", 0, 13, "血糖\t7.0 mmol/L")]


# ----- types beyond the Ruijin set -----


def test_other_types_non_entity_lines_and_annotation_conf(tmp_path):
    ann = "T1\tGene 0 2\tBR\nT2\tProtein 3 5\tCA\nR1\tBinds Arg1:T1 Arg2:T2\nT3\tBind 0 2\tBR\n" \
          "E1\tBind:T3 Theme:T1\nA1\tNeg T1\nN1\tReference T1 db:1\t x\n#1\tAnnotatorNotes T1\tnote\n"
    folder = write_corpus(tmp_path / "c", {"a": ("BR CA", ann)})
    corpus, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert corpus["train"].features["ner_tags"].feature.names == ["O", "B-Gene", "I-Gene", "B-Protein", "I-Protein"]
    assert stats.skipped_lines == {"relation": 1, "event": 1, "event trigger": 1, "attribute": 1,
                                   "normalization": 1, "note": 1}
    (folder / "annotation.conf").write_text("[entities]\nProtein\nGene\nChemical\n[relations]\nBinds\n"
                                            "[events]\nBind Theme:Gene\n")
    corpus, _ = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert corpus["train"].features["ner_tags"].feature.names[1::2] == ["B-Chemical", "B-Gene", "B-Protein"]


def test_types_outside_the_ruijin_set_are_named_in_a_warning(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"),
                                           "b": ("糖尿病", "T1\tDiseas 0 3\t糖尿病\n")})
    with caplog.at_level(logging.WARNING):
        corpus, _ = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "the label set is the 2 entity types found in the data" in caplog.text
    assert "Diseas (first in b)" in caplog.text
    assert corpus["train"].features["ner_tags"].feature.names == ["O", "B-Diseas", "I-Diseas", "B-Disease",
                                                                  "I-Disease"]


def test_annotation_conf_without_a_type_of_the_data_is_an_error(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("BR CA", "T1\tGene 0 2\tBR\nT2\tProtein 3 5\tCA\n")})
    (folder / "annotation.conf").write_text("[entities]\nGene\n", encoding="utf-8")
    with pytest.raises(BratFormatError, match=r"entity types \['Protein'\] are not in .*annotation\.conf"):
        load_corpus(folder)
    with pytest.raises(BratFormatError, match=r"\['Protein'\] are not in entity_types"):
        load_corpus(folder, entity_types=["Gene"])
