"""The data foundation: brat -> datasets (bio windows, brat documents) -> spans, exact to the character."""

import logging
import random
from collections import Counter
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from dataset_script import ruijin_ner
from dataset_script.brat import BratFormatError
from dataset_script.ruijin_ner import TRAINING_CUTS, spans_to_bio
from modeling_bert_bilstm_crf import (
    WHITESPACE_TOKEN,
    CharacterEncoder,
    bio_to_spans,
    is_blank,
    split_into_windows,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED = REPO.parent / "shared" / "data"
REAL_CORPUS = SHARED / "ruijin_round1" / "train"
needs_shared = pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"real corpus not found at {REAL_CORPUS}")


def write_corpus(folder: Path, documents: dict[str, tuple[str, str]], encoding="utf-8") -> Path:
    """documents: id -> (text, ann); ann None means no .ann file, text None no .txt file."""
    folder.mkdir(parents=True, exist_ok=True)
    for document_id, (text, ann) in documents.items():
        if text is not None:
            (folder / f"{document_id}.txt").write_bytes(text.encode(encoding))
        if ann is not None:
            (folder / f"{document_id}.ann").write_bytes(ann.encode(encoding))
    return folder


def load(folder, **kwargs):
    return ruijin_ner.load(folder, cache_dir=str(folder.parent / "cache"), return_stats=True, **kwargs)


# ----- the sample corpus through the builder -----


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    bio, stats = ruijin_ner.load(SAMPLE, cache_dir=cache, return_stats=True)
    brat = ruijin_ner.load(SAMPLE, name="brat", cache_dir=cache)
    return bio, brat, stats


def test_windows_hold_every_character_at_its_offset(sample):
    bio, brat, _ = sample
    texts = {doc["document_id"]: doc["text"] for split in brat.values() for doc in split}
    covered = {document_id: [] for document_id in texts}
    for split in bio.values():
        for window in split:
            text = texts[window["document_id"]]
            assert "".join(window["tokens"]) == text[window["offset"] : window["offset"] + len(window["tokens"])]
            assert len(window["ner_tags"]) == len(window["tokens"])
            covered[window["document_id"]].append((window["offset"], window["offset"] + len(window["tokens"])))
    for document_id, windows in covered.items():
        assert sorted(windows)[0][0] == 0 and sorted(windows)[-1][1] == len(texts[document_id])
        assert all(a[1] == b[0] for a, b in zip(sorted(windows), sorted(windows)[1:]))


def test_features_and_labels(sample):
    bio, brat, _ = sample
    names = bio["train"].features["ner_tags"].feature.names
    assert names == ruijin_ner.RUIJIN_LABELS and len(names) == 31 and names[0] == "O"
    assert names[1:5] == ["B-Amount", "I-Amount", "B-Anatomy", "I-Anatomy"]
    assert set(brat["train"].features["entities"].feature) == {"id", "type", "start", "end", "text", "fragments"}


def test_sample_covers_all_types_and_line_break_entities(sample):
    _, brat, stats = sample
    entities = [entity for split in brat.values() for doc in split for entity in doc["entities"]]
    assert {entity["type"] for entity in entities} == set(ruijin_ner.RUIJIN_ENTITY_TYPES)
    crossing = [(doc["text"], entity) for split in brat.values() for doc in split for entity in doc["entities"]
                if len(entity["fragments"]) > 1]
    assert len(crossing) >= 4
    for text, entity in crossing:  # merged into one span whose gap is the line break
        assert text[entity["start"] : entity["end"]].count("\n") == len(entity["fragments"]) - 1
    assert stats.dropped[("overlap", "Anatomy")] >= 1  # nested entities are counted, not lost
    assert stats.entities_encoded + sum(stats.dropped.values()) == stats.entities_read


def test_sample_splits_by_document_hash(sample):
    bio, _, stats = sample
    for split in ("train", "validation", "test"):
        assert stats.documents[split] >= 1
        for window in bio[split]:
            assert ruijin_ner.hash_split(window["document_id"]) == split


def test_prepared_dataset_survives_parquet_with_class_labels(sample, tmp_path):
    bio, _, _ = sample
    bio["train"].to_parquet(tmp_path / "train.parquet")
    reloaded = datasets.Dataset.from_parquet(str(tmp_path / "train.parquet"))
    assert reloaded.features == bio["train"].features
    assert reloaded["ner_tags"] == bio["train"]["ner_tags"]


# ----- BIO <-> spans and windows -----


def test_spans_round_trip_and_overlap_policy():
    spans = [("Disease", 0, 5), ("Anatomy", 1, 3), ("Test", 5, 7), ("Drug", 9, 10)]
    tags, not_encoded = spans_to_bio(12, spans)
    assert not_encoded == [("Anatomy", 1, 3)]  # longest first: the nested shorter one gives way
    assert tags[:8] == ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "B-Test", "I-Test", "O"]
    assert bio_to_spans(tags, offset=100) == [("Disease", 100, 105), ("Test", 105, 107), ("Drug", 109, 110)]


def test_bio_to_spans_reads_stray_inside_tags_as_entity_starts():
    assert bio_to_spans(["I-A", "I-A", "I-B", "O", "I-A", "B-A", "I-A"]) == [
        ("A", 0, 2), ("B", 2, 3), ("A", 4, 5), ("A", 5, 7)]


@pytest.fixture
def small_tokenizer(tmp_path):
    vocab = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "糖", "尿", "病", "h", "b", "a", "1", "c", "ａ"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}', encoding="utf-8")
    return AutoTokenizer.from_pretrained(tmp_path)


def test_character_tokens_follow_the_documented_fallbacks(small_tokenizer):
    encoder = CharacterEncoder(small_tokenizer)
    assert [encoder.token(ch) for ch in " \n\t\r\u3000\xa0"] == [WHITESPACE_TOKEN] * 6
    assert [encoder.token(ch) for ch in "\ufeff\u200b\u200d\u2060\xad"] == [WHITESPACE_TOKEN] * 5  # Cf: invisible
    assert [encoder.token(ch) for ch in "糖HbA1c"] == ["糖", "h", "b", "a", "1", "c"]
    assert encoder.token("Ａ") == "ａ"  # its lower case is in the vocabulary
    assert encoder.token("Ｈ") == "h"  # NFKC (full width -> ASCII), lower-cased
    assert encoder.token("１") == "1"
    assert [encoder.token(ch) for ch in ("腺", "ß", "ﬁ")] == ["[UNK]"] * 3  # "ss", "fi": not one character


def test_character_ids_one_per_character_and_window_input(small_tokenizer):
    encoder = CharacterEncoder(small_tokenizer)
    characters = list("糖尿病 HbA1c\n２型")
    vocab = small_tokenizer.get_vocab()
    ids = encoder.ids(characters)
    assert ids == [vocab[encoder.token(ch)] for ch in characters]
    assert ids[3] == ids[9] == vocab[WHITESPACE_TOKEN] and ids[-1] == vocab["[UNK]"]
    assert encoder.ids(characters) == ids  # memoised ids are the same
    assert encoder.window_ids("糖") == [vocab["[CLS]"], vocab["糖"], vocab["[SEP]"]]


def test_windows_cover_text_exactly_once_and_avoid_entities():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("糖尿病。；\n a") for _ in range(rng.randint(0, 300)))
        starts = range(0, max(len(text) - 8, 0), 10)  # entities of up to 8 characters, never overlapping
        spans = [(start, start + rng.randint(1, 8)) for start in rng.sample(starts, min(3, len(starts)))]
        window_chars = rng.randint(9, 60)
        windows = split_into_windows(text, window_chars, spans)
        assert "".join(text[a:b] for a, b in windows) == text
        assert all(0 < b - a <= window_chars for a, b in windows)
        assert all(prev[1] == nxt[0] for prev, nxt in zip(windows, windows[1:]))
        for start, end in spans:
            assert not any(start < a < end for a, _ in windows)  # no span shorter than a window is cut


def test_windows_prefer_sentence_ends():
    text = "甲乙丙。丁戊己庚辛壬癸子丑"
    assert split_into_windows(text, 8) == [(0, 4), (4, 12), (12, 13)]
    assert split_into_windows("甲乙\n丙丁! 戊", 4) == [(0, 3), (3, 6), (6, 8)]  # line break, then "!"
    # Prediction (no entities known): a sentence end beats a later clause separator or line break, a clause
    # separator beats a later line break (PDF text wraps its lines inside words).
    assert split_into_windows("甲乙。丙，丁\n戊己", 8) == [(0, 3), (3, 9)]
    assert split_into_windows("甲乙丙，丁\n戊己", 7) == [(0, 4), (4, 8)]
    assert split_into_windows("甲乙丙丁\n戊己庚", 7) == [(0, 5), (5, 8)]
    # Training (entities blocked): the last sentence end or line break, for the longest window.
    assert split_into_windows("甲乙。丙，丁\n戊己", 8, cuts=TRAINING_CUTS) == [(0, 7), (7, 9)]
    assert split_into_windows("甲乙。丙，丁\n戊己", 8, [(5, 8)], TRAINING_CUTS) == [(0, 3), (3, 9)]


def test_windows_at_their_limits():
    assert split_into_windows("", 5) == []
    assert split_into_windows("糖尿病", 510) == [(0, 3)]
    assert split_into_windows("糖尿病", 3) == [(0, 3)]
    # The only cut that splits no entity is taken, though no sentence ends there.
    assert split_into_windows("abcdefghijkl", 8, [(0, 6), (6, 12)]) == [(0, 6), (6, 12)]
    # A sentence end inside an entity is not a cut; the last cut before the entity is.
    assert split_into_windows("ab。cd。efgh", 7, [(3, 9)]) == [(0, 3), (3, 10)]
    # An entity longer than a window cannot be kept whole: cut at the window's limit.
    assert split_into_windows("a" * 10, 4, [(0, 10)]) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        split_into_windows("abc", 0)


def test_entity_longer_than_a_window_is_cut_and_reported(tmp_path):
    text = "糖尿病" * 10
    folder = write_corpus(tmp_path / "c", {"a": (text, f"T1\tDisease 0 30\t{text}\n")})
    corpus, stats = load(folder, window_chars=12, split_fractions=(1.0, 0.0, 0.0))
    assert stats.cut_by_windows["Disease"] == 1
    windows = corpus["train"]
    names = windows.features["ner_tags"].feature.names
    assert [len(w["tokens"]) for w in windows] == [12, 12, 6]
    assert all(names[w["ner_tags"][0]] == "B-Disease" for w in windows)  # each piece is a valid BIO sequence


def test_document_shorter_than_a_window_and_empty_document(tmp_path):
    folder = write_corpus(tmp_path / "c", {"short": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"), "empty": ("", "")})
    corpus, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert [w["document_id"] for w in corpus["train"]] == ["short"]
    assert stats.documents["train"] == 2 and stats.windows["train"] == 1


# ----- bad input -----


def test_offset_beyond_text_names_file_and_line(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\nT2\tDisease 1 9\t尿病\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: offset 9 is beyond the end of the text \(3"):
        load(folder)


@pytest.mark.parametrize("line", ["T1\tDisease 0\t糖", "T1 Disease 0 3 糖尿病", "T1\tDisease 0 x\t糖", "X1\tfoo",
                                  "T1\tDisease 3 1\t糖", "T1\t 0 3\t糖尿病", "T1\tDisease \u0660 \u0663\t糖尿病"])
def test_malformed_lines_name_file_and_line(tmp_path, line):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", f"#1\tnote\n{line}\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: "):
        load(folder)


def test_entity_id_used_twice_names_both_lines(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\nT1\tDisease 1 3\t尿病\n")})
    with pytest.raises(BratFormatError, match=r"a\.ann:2: entity id T1 is already used on line 1"):
        load(folder)


def test_entity_text_mismatch_is_a_warning_or_in_strict_mode_an_error(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病患者", "T1\tDisease 0 3\t糖尿病\nT2\tDisease 1 3\t糖尿\n")})
    with caplog.at_level(logging.WARNING):
        corpus, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    # Once, although the first load reads the files twice (statistics, then the builder).
    assert caplog.text.count("a.ann:2: text '糖尿' differs from the .txt at its offsets ('尿病')") == 1
    assert stats.dropped == {("text_mismatch", "Disease"): 1} and stats.entities_encoded == 1
    with pytest.raises(BratFormatError, match=r"a\.ann:2: text"):
        load(folder, strict=True)


def test_fragments_separated_by_text_are_reported(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿和病", "T1\tDisease 0 2;3 4\t糖尿 病\n")})
    with caplog.at_level(logging.WARNING):
        _, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "separated by text '和'" in caplog.text
    assert stats.dropped == {("gap_with_text", "Disease"): 1}


def test_ann_without_txt_is_an_error_and_txt_without_ann_a_warning(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": (None, "T1\tDisease 0 1\t糖\n"), "b": ("糖", "")})
    with pytest.raises(BratFormatError, match=r"a\.ann: no matching a\.txt"):
        load(folder)
    folder = write_corpus(tmp_path / "d", {"b": ("糖", ""), "c": ("糖", None)})
    with caplog.at_level(logging.WARNING):
        _, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "c.txt: no matching .ann; document not used" in caplog.text and stats.documents["train"] == 1
    with pytest.raises(BratFormatError, match=r"c\.txt: no matching \.ann"):
        load(folder, strict=True)


def test_upper_case_suffix_is_named_in_the_error(tmp_path):
    folder = write_corpus(tmp_path / "c", {"01": (None, "T1\tDisease 0 1\t糖\n")})
    (folder / "01.TXT").write_text("糖", encoding="utf-8")
    with pytest.raises(BratFormatError, match=r"01\.ann: no matching 01\.txt \(found 01\.TXT; brat reads lower-case"):
        load(folder)
    (folder / "01.TXT").rename(folder / "01.txt")
    (folder / "01.ann").rename(folder / "01.ANN")
    with pytest.raises(BratFormatError, match=r"01\.txt: no matching \.ann; document not used \(found 01\.ANN"):
        load(folder, strict=True)


def test_hidden_files_are_not_documents(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"), ".b": ("糖", "")})
    (folder / "._a.txt").write_bytes(b"\x00\x05\x16\x07\xff")  # a macOS side file: not text
    (folder / "._a.ann").write_bytes(b"\x00\x05\x16\x07\xff")
    corpus, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert list(corpus["train"]["document_id"]) == ["a"] and stats.documents == {"train": 1}


def test_non_utf8_file_is_an_error_naming_it(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")}, encoding="gbk")
    with pytest.raises(BratFormatError, match=r"a\.(txt|ann): not UTF-8"):
        load(folder)


def test_bom_and_crlf_keep_brat_offsets(tmp_path):
    # brat counts characters of the file as written: the BOM is character 0 and \r\n is two characters.
    text = "\ufeff患者有\r\n糖尿病\r\n史"
    start = text.index("糖")
    ann = f"T1\tDisease {start} {start + 3}\t糖尿病\r\n"
    folder = write_corpus(tmp_path / "c", {"a": (text, ann)})
    corpus, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
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
        corpus, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
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
        _, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
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


def test_warnings_are_counted_in_the_statistics(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿\n"), "b": ("糖", None)})
    _, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert stats.warnings == {"text_mismatch": 1, "no_usable_entity": 1, "txt_without_ann": 1}
    assert "warnings: 3" in stats.format() and "not encoded (text_mismatch): 1 {'Disease': 1}" in stats.format()


@pytest.mark.parametrize("settings", [{"split_fractions": (0.8, 0.1)}, {"split_fractions": (0.5, 0.1, 0.1)},
                                      {"split_by": "sentence"}, {"window_chars": 0}])
def test_bad_settings_are_refused_before_reading(tmp_path, settings):
    with pytest.raises(ValueError):
        load(write_corpus(tmp_path / "c", {"a": ("糖", "")}), **settings)


# ----- other corpora and splits -----


def test_other_types_non_entity_lines_and_annotation_conf(tmp_path):
    ann = "T1\tGene 0 2\tBR\nT2\tProtein 3 5\tCA\nR1\tBinds Arg1:T1 Arg2:T2\nT3\tBind 0 2\tBR\n" \
          "E1\tBind:T3 Theme:T1\nA1\tNeg T1\nN1\tReference T1 db:1\t x\n#1\tAnnotatorNotes T1\tnote\n"
    folder = write_corpus(tmp_path / "c", {"a": ("BR CA", ann)})
    corpus, stats = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert corpus["train"].features["ner_tags"].feature.names == ["O", "B-Gene", "I-Gene", "B-Protein", "I-Protein"]
    assert stats.skipped_lines == {"relation": 1, "event": 1, "event trigger": 1, "attribute": 1,
                                   "normalization": 1, "note": 1}
    (folder / "annotation.conf").write_text("[entities]\nProtein\nGene\nChemical\n[relations]\nBinds\n"
                                            "[events]\nBind Theme:Gene\n")
    corpus, _ = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert corpus["train"].features["ner_tags"].feature.names[1::2] == ["B-Chemical", "B-Gene", "B-Protein"]


def test_types_outside_the_ruijin_set_are_named_in_a_warning(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"),
                                           "b": ("糖尿病", "T1\tDiseas 0 3\t糖尿病\n")})
    with caplog.at_level(logging.WARNING):
        corpus, _ = load(folder, split_fractions=(1.0, 0.0, 0.0))
    assert "the label set is the 2 entity types found in the data" in caplog.text
    assert "Diseas (first in b)" in caplog.text
    assert corpus["train"].features["ner_tags"].feature.names == ["O", "B-Diseas", "I-Diseas", "B-Disease",
                                                                  "I-Disease"]


def test_annotation_conf_without_a_type_of_the_data_is_an_error(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("BR CA", "T1\tGene 0 2\tBR\nT2\tProtein 3 5\tCA\n")})
    (folder / "annotation.conf").write_text("[entities]\nGene\n", encoding="utf-8")
    with pytest.raises(BratFormatError, match=r"entity types \['Protein'\] are not in .*annotation\.conf"):
        load(folder)
    with pytest.raises(BratFormatError, match=r"\['Protein'\] are not in entity_types"):
        load(folder, entity_types=["Gene"])


def test_split_folders_are_the_splits(tmp_path):
    for split in ("train", "dev", "test"):
        write_corpus(tmp_path / "c" / split, {f"{split}1": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")})
    corpus, _ = load(tmp_path / "c")
    assert {split: corpus[split]["document_id"] for split in corpus} == {
        "train": ["train1"], "validation": ["dev1"], "test": ["test1"]}


def test_only_train_folder_is_the_corpus_and_partial_split_folders_are_an_error(tmp_path):
    documents = {f"{i}_1": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n") for i in range(12)}
    write_corpus(tmp_path / "c" / "train", documents)
    (tmp_path / "c" / "unlabeled").mkdir()  # like ruijin_round1/: other folders are not splits
    corpus, stats = load(tmp_path / "c")
    assert sum(stats.documents.values()) == 12
    assert all(ruijin_ner.hash_split(d) == split for split in corpus for d in corpus[split]["document_id"])
    write_corpus(tmp_path / "c" / "test", {"t": ("糖", "")})
    with pytest.raises(BratFormatError, match=r"has split folders \['train', 'test'\]"):
        load(tmp_path / "c")


@pytest.mark.parametrize("split_folder", ["train", "test"])
def test_split_folders_beside_documents_are_an_error(tmp_path, split_folder):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")})
    write_corpus(folder / split_folder, {"b": ("糖尿病", "")})
    with pytest.raises(BratFormatError, match=rf"has both split folders \['{split_folder}'\] and \.txt/\.ann files"):
        load(folder)


def test_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(BratFormatError, match=r"nowhere: no such folder"):
        load(tmp_path / "nowhere")
    with pytest.raises(BratFormatError, match=r"nowhere: no such folder"):
        ruijin_ner.read_corpus_documents(tmp_path / "nowhere")


def test_hash_split_is_stable_keeps_groups_together_and_is_configurable():
    ids = [f"{group}_{part}" for group in range(60) for part in range(1, 4)]
    splits = {document_id: ruijin_ner.hash_split(document_id) for document_id in ids}
    for group in range(60):
        assert len({splits[f"{group}_{part}"] for part in range(1, 4)}) == 1
    shares = {split: list(splits.values()).count(split) / len(ids) for split in ("train", "validation", "test")}
    assert 0.6 < shares["train"] < 0.95 and shares["validation"] > 0 and shares["test"] > 0
    by_document = {d: ruijin_ner.hash_split(d, split_by="document") for d in ids}
    assert any(len({by_document[f"{g}_{p}"] for p in range(1, 4)}) > 1 for g in range(60))
    assert all(ruijin_ner.hash_split(d, (0.5, 0.5, 0.0)) != "test" for d in ids)


def test_adding_documents_moves_no_document_between_splits(tmp_path):
    documents = {f"{i}": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n") for i in range(20)}
    folder = write_corpus(tmp_path / "c", documents)
    before, _ = load(folder)
    write_corpus(folder, {f"{i}": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n") for i in range(20, 40)})
    after, _ = load(folder)
    for split in before:
        assert set(before[split]["document_id"]) <= set(after[split]["document_id"])


def test_changed_settings_or_files_build_anew_in_the_same_cache(tmp_path):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病。糖尿病。", "T1\tDisease 0 3\t糖尿病\n")})
    cache = str(tmp_path / "cache")
    settings = {"cache_dir": cache, "split_fractions": (1.0, 0.0, 0.0)}
    assert ruijin_ner.load(folder, **settings)["train"]["offset"] == [0]
    assert ruijin_ner.load(folder, window_chars=4, **settings)["train"]["offset"] == [0, 4]
    write_corpus(folder, {"a": ("糖尿病。", "T1\tDisease 0 3\t糖尿病\n")})
    assert ruijin_ner.load(folder, **settings)["train"]["tokens"] == [list("糖尿病。")]
    copy = write_corpus(tmp_path / "other", {"a": ("高血压", "T1\tDisease 0 3\t高血压\n")})
    assert ruijin_ner.load(copy, **settings)["train"]["tokens"] == [list("高血压")]


# ----- the real corpus -----


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory):
    if not REAL_CORPUS.is_dir():
        pytest.skip(f"real corpus not found at {REAL_CORPUS} (../shared beside the checkout)")
    return ruijin_ner.load(REAL_CORPUS, cache_dir=str(tmp_path_factory.mktemp("cache")), return_stats=True)


@needs_shared
def test_real_corpus_round_trip_reproduces_every_encoded_entity(real_corpus):
    corpus, stats = real_corpus
    names = corpus["train"].features["ner_tags"].feature.names
    decoded = set()
    for split in corpus.values():
        for window in split.select_columns(["document_id", "offset", "ner_tags"]):
            tags = [names[tag] for tag in window["ner_tags"]]
            decoded |= {(window["document_id"], *span) for span in bio_to_spans(tags, window["offset"])}
    assert stats.entities_read > 120_000 and sum(stats.documents.values()) == 327
    assert stats.entities_encoded + sum(stats.dropped.values()) == stats.entities_read
    assert sum(stats.cut_by_windows.values()) == 0
    # Every encoded entity comes back at its exact first and last offset with its type, and nothing else.
    from dataset_script.brat import find_documents, read_document

    expected = set()
    for txt, ann in find_documents(REAL_CORPUS):
        document = read_document(txt, ann)
        spans = [(e.type, e.start, e.end) for e in document.entities]
        _, not_encoded = spans_to_bio(len(document.text), spans)
        expected |= {(document.document_id, *span) for span in Counter(spans) - Counter(not_encoded)}
    assert decoded == expected
    assert len(decoded) == stats.entities_encoded


@needs_shared
def test_real_vocabulary_leaves_few_unknown_characters_and_one_position_each(real_corpus):
    corpus, _ = real_corpus
    tokenizer = AutoTokenizer.from_pretrained(SHARED / "bert-base-chinese")
    encoder = CharacterEncoder(tokenizer)
    unknown = characters = 0
    whitespace_id = tokenizer.convert_tokens_to_ids(WHITESPACE_TOKEN)
    for split in corpus.values():
        for tokens in split["tokens"]:
            ids = encoder.ids(tokens)
            assert len(ids) == len(tokens)
            for character, token_id in zip(tokens, ids):
                if is_blank(character):
                    assert token_id == whitespace_id
                else:
                    characters += 1
                    unknown += token_id == tokenizer.unk_token_id
    assert characters > 2_000_000
    assert unknown / characters <= 0.001, f"{unknown} of {characters} characters are [UNK]"
