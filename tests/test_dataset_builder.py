"""dataset_script/ruijin_ner.py, the `datasets` builder: the sample corpus as BIO windows and brat documents,
windows and context windows exact to the character, splits by document hash or by folder, caching per setting,
and the real corpus (under ../shared) round-tripped entity for entity."""

import logging
from collections import Counter

import datasets
import pytest
from transformers import AutoTokenizer

from conftest import REAL_CORPUS, SAMPLE, SHARED_DATA, load_corpus, sample_texts, write_corpus
from dataset_script import ruijin_ner
from dataset_script.brat import BratFormatError, find_documents, read_document
from dataset_script.formats import AnnotationFormatError
from dataset_script.ruijin_ner import spans_to_bio
from processing_bert_bilstm_crf import WHITESPACE_TOKEN, CharacterEncoder, bio_to_spans, is_blank

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


# ----- windows, statistics and settings -----


def test_entity_longer_than_a_window_is_cut_and_reported(tmp_path):
    text = "糖尿病" * 10
    folder = write_corpus(tmp_path / "c", {"a": (text, f"T1\tDisease 0 30\t{text}\n")})
    corpus, stats = load_corpus(folder, window_chars=12, split_fractions=(1.0, 0.0, 0.0))
    assert stats.cut_by_windows["Disease"] == 1
    windows = corpus["train"]
    names = windows.features["ner_tags"].feature.names
    assert [len(w["tokens"]) for w in windows] == [12, 12, 6]
    assert all(names[w["ner_tags"][0]] == "B-Disease" for w in windows)  # each piece is a valid BIO sequence


def test_document_shorter_than_a_window_and_empty_document(tmp_path):
    folder = write_corpus(tmp_path / "c", {"short": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"), "empty": ("", "")})
    corpus, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert [w["document_id"] for w in corpus["train"]] == ["short"]
    assert stats.documents["train"] == 2 and stats.windows["train"] == 1


def test_warnings_are_counted_in_the_statistics(tmp_path, caplog):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿\n"), "b": ("糖", None)})
    with caplog.at_level(logging.WARNING):
        _, stats = load_corpus(folder, split_fractions=(1.0, 0.0, 0.0))
    assert stats.warnings == {"text_mismatch": 1, "no_usable_entity": 1, "txt_without_ann": 1}
    assert len(caplog.records) == 3  # each said once
    assert "warnings: 3" in stats.format() and "not encoded (text_mismatch): 1 {'Disease': 1}" in stats.format()


@pytest.mark.parametrize("settings", [{"split_fractions": (0.8, 0.1)}, {"split_fractions": (0.5, 0.1, 0.1)},
                                      {"split_by": "sentence"}, {"window_chars": 0}])
def test_bad_settings_are_refused_before_reading(tmp_path, settings):
    with pytest.raises(ValueError):
        load_corpus(write_corpus(tmp_path / "c", {"a": ("糖", "")}), **settings)


# ----- splits and caching -----


def test_split_folders_are_the_splits(tmp_path):
    for split in ("train", "dev", "test"):
        write_corpus(tmp_path / "c" / split, {f"{split}1": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")})
    corpus, _ = load_corpus(tmp_path / "c")
    assert {split: corpus[split]["document_id"] for split in corpus} == {
        "train": ["train1"], "validation": ["dev1"], "test": ["test1"]}


def test_one_name_in_two_split_folders_is_two_documents_unless_folds_pool_them(tmp_path):
    for split in ("train", "validation", "test"):
        disease = f"T1\tDisease {len(split)} {len(split) + 3}\t糖尿病\n"
        write_corpus(tmp_path / "c" / split, {"01": (f"{split}糖尿病", disease),
                                              f"{split}2": ("血糖", "T1\tTest 0 2\t血糖\n")})
    corpus, _ = load_corpus(tmp_path / "c")
    assert {split: sorted(corpus[split]["document_id"]) for split in corpus} == {
        split: ["01", f"{split}2"] for split in ("train", "validation", "test")}
    with pytest.raises(AnnotationFormatError, match=r"validation/01.ann: document id '01' is already used by "):
        load_corpus(tmp_path / "c", folds=2, fold=0)


def test_only_train_folder_is_the_corpus_and_partial_split_folders_are_an_error(tmp_path):
    documents = {f"{i}_1": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n") for i in range(12)}
    write_corpus(tmp_path / "c" / "train", documents)
    (tmp_path / "c" / "unlabeled").mkdir()  # like ruijin_round1/: other folders are not splits
    corpus, stats = load_corpus(tmp_path / "c")
    assert sum(stats.documents.values()) == 12
    assert all(ruijin_ner.hash_split(d) == split for split in corpus for d in corpus[split]["document_id"])
    write_corpus(tmp_path / "c" / "test", {"t": ("糖", "")})
    with pytest.raises(BratFormatError, match=r"has split folders \['train', 'test'\]"):
        load_corpus(tmp_path / "c")


@pytest.mark.parametrize("split_folder", ["train", "test"])
def test_split_folders_beside_documents_are_an_error(tmp_path, split_folder):
    folder = write_corpus(tmp_path / "c", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")})
    write_corpus(folder / split_folder, {"b": ("糖尿病", "")})
    with pytest.raises(BratFormatError, match=rf"has both split folders \['{split_folder}'\] and annotation files"):
        load_corpus(folder)


def test_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(BratFormatError, match=r"nowhere: no such folder"):
        load_corpus(tmp_path / "nowhere")
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
    before, _ = load_corpus(folder)
    write_corpus(folder, {f"{i}": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n") for i in range(20, 40)})
    after, _ = load_corpus(folder)
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
    return ruijin_ner.load(REAL_CORPUS, cache_dir=str(tmp_path_factory.mktemp("cache")), return_stats=True)


@pytest.mark.real_corpus
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


@pytest.mark.real_corpus
def test_real_vocabulary_leaves_few_unknown_characters_and_one_position_each(real_corpus):
    corpus, _ = real_corpus
    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "bert-base-chinese")
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


# ----- context windows -----


def check_context_windows(folder, window_chars, context_chars):
    """Every window's centre is exactly its text, its context the neighbouring text, the centres cover each
    document once, and the encoded entities come back at their offsets."""
    windows = 0
    for txt_path, ann_path in find_documents(folder):
        document = read_document(txt_path, ann_path)
        text = document.text
        examples, not_encoded, _ = ruijin_ner.window_examples(document, window_chars, context_chars)
        assert "".join("".join(example["tokens"]) for example in examples) == text
        decoded = []
        for example in examples:
            start, end = example["offset"], example["offset"] + len(example["tokens"])
            assert "".join(example["tokens"]) == text[start:end]
            assert example["context_before"] == text[max(start - context_chars, 0) : start]
            assert example["context_after"] == text[end : end + context_chars]
            decoded += bio_to_spans(example["ner_tags"], start)
        spans = Counter((entity.type, entity.start, entity.end) for entity in document.entities)
        # An entity cut by a window boundary would come back in pieces; none of these corpora has one that long.
        assert sorted(decoded) == sorted(spans - Counter(not_encoded)), txt_path
        windows += len(examples)
    return windows


def test_context_windows_round_trip_offsets_on_the_sample():
    assert check_context_windows(SAMPLE, 62, 20) > 5
    assert check_context_windows(SAMPLE, 62, 0) > 5


@pytest.mark.real_corpus
def test_context_windows_round_trip_offsets_on_the_real_corpus():
    assert check_context_windows(REAL_CORPUS, 254, 64) > 3000


def test_builder_keeps_the_centre_and_caches_per_setting(tmp_path):
    plain = ruijin_ner.load(SAMPLE, window_chars=62, cache_dir=tmp_path)["train"]
    with_context = ruijin_ner.load(SAMPLE, window_chars=62, context_chars=15, cache_dir=tmp_path)["train"]
    assert plain["tokens"] == with_context["tokens"] and plain["ner_tags"] == with_context["ner_tags"]
    assert set(plain["context_before"]) == {""} and any(with_context["context_before"])
    assert max(map(len, with_context["context_after"])) == 15
    assert plain.cache_files[0]["filename"] != with_context.cache_files[0]["filename"]


# ----- the same corpus in every annotation format -----


def corpus_in_format(folder, data_format):
    """The sample corpus written in ``data_format`` (one file, or brat files) in ``folder``."""
    from dataset_script.formats import registry

    folder.mkdir(parents=True)
    for name, content in registry.write_documents(registry.read_documents(SAMPLE), data_format)[0].items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


@pytest.mark.parametrize("data_format", ["labelstudio", "doccano", "cmeee"])
def test_the_sample_in_another_format_builds_the_very_same_examples(tmp_path, sample, data_format):
    folder = corpus_in_format(tmp_path / data_format, data_format)
    path = next(folder.iterdir())
    for data_dir in (folder, path):  # a folder of the format's files, or the file itself
        corpus, stats = load_corpus(data_dir)
        assert {split: corpus[split].to_list() for split in corpus} == {split: sample[0][split].to_list()
                                                                       for split in sample[0]}
        assert (stats.entities_read, stats.entities_encoded, stats.dropped) == (
            sample[2].entities_read, sample[2].entities_encoded, sample[2].dropped)
    forced, _ = load_corpus(path, data_format=data_format)
    assert forced["train"]["id"] == sample[0]["train"]["id"]


def test_conll_builds_the_same_windows_but_for_what_it_cannot_hold(tmp_path, sample):
    corpus, stats = load_corpus(corpus_in_format(tmp_path / "conll", "conll"))
    assert sorted(corpus["train"]["document_id"]) == sorted(sample[0]["train"]["document_id"])
    assert stats.entities_read == sample[2].entities_encoded  # CoNLL held the entities that BIO can hold


def test_a_corpus_file_that_fits_no_format_or_the_named_one_is_refused(tmp_path):
    from dataset_script.formats import AnnotationFormatError

    (tmp_path / "notes.json").write_text('[{"title": "x"}]', encoding="utf-8")
    with pytest.raises(AnnotationFormatError, match="notes.json: not an annotation file of a known format"):
        load_corpus(tmp_path / "notes.json")
    folder = corpus_in_format(tmp_path / "ls", "labelstudio")
    with pytest.raises(AnnotationFormatError, match=r"ls: no doccano files \(.jsonl\)"):
        load_corpus(folder, data_format="doccano")
    with pytest.raises(ValueError, match="data_format must be one of brat, labelstudio"):
        load_corpus(folder, data_format="excel")


def test_corpus_texts_are_every_text_of_any_format(tmp_path):
    """What --extra_text_dirs must not repeat: brat texts with or without .ann, and the texts inside other files."""
    folder = write_corpus(tmp_path / "brat", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n"), "b": ("无", None)})
    assert ruijin_ner.corpus_texts(folder) == {"糖尿病": str(folder / "a.txt"), "无": str(folder / "b.txt")}
    path = next(corpus_in_format(tmp_path / "ls", "labelstudio").iterdir())
    assert sorted(ruijin_ner.corpus_texts(path)) == sorted(sample_texts(SAMPLE))


# ----- warnings and refusals of the corpus -----


def test_the_corpus_summary_counts_every_warning_it_printed(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a_1.txt").write_text("糖尿病患者\n", encoding="utf-8")
    (corpus / "a_1.ann").write_text("T1\tDiseas 0 3\t糖尿病\n", encoding="utf-8")  # a misspelt type: warned
    with caplog.at_level("WARNING"):
        _, stats = ruijin_ner.load(corpus, return_stats=True, cache_dir=tmp_path / "cache")
    warned = [record for record in caplog.records if record.levelname == "WARNING"]
    assert warned and "Diseas" in warned[0].getMessage()
    assert f"warnings: {len(warned)} printed above" in stats.format()


def test_gold_types_that_the_folders_annotation_conf_does_not_declare_are_refused(tmp_path):
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "a.txt").write_text("口服二甲双胍治疗\n", encoding="utf-8")
    (gold / "a.ann").write_text("T1\tDrug 2 6\t二甲双胍\nT2\tRemedy 0 2\t口服\n", encoding="utf-8")
    (gold / "annotation.conf").write_text("[entities]\nDrug\n[relations]\n[events]\n[attributes]\n",
                                          encoding="utf-8")
    with pytest.raises(ValueError, match=r"entity types \['Remedy'\] are not in .*annotation.conf"):
        ruijin_ner.read_corpus_documents(gold)
