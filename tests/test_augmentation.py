"""brat_ner/augmentation.py: augmented copies of the rare-type training windows keep every entity at its exact
characters, change only what their method changes, come out the same for the same seed, and reach training
through train.py's --augment without touching validation or test."""

import json
from collections import Counter

import pytest

import train
from brat_ner import augmentation, cli
from conftest import SAMPLE, load_corpus, run_script, small_training
from processing_bert_bilstm_crf import bio_to_spans, is_blank

WINDOW_CHARS = 62


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("augment") / "sample"
    folder.symlink_to(SAMPLE)
    corpus, _ = load_corpus(folder, window_chars=WINDOW_CHARS)
    return corpus["train"]


def windows_and_spans(dataset):
    names = dataset.features["ner_tags"].feature.names
    return {row["id"]: (row["tokens"], bio_to_spans([names[tag] for tag in row["ner_tags"]])) for row in dataset}


def augmented(train_split, seed=0, copies=1, share=0.1, **rates):
    windows, counts = augmentation.augmented_windows(train_split, rates, copies, share, WINDOW_CHARS, seed)
    return windows_and_spans(windows), counts


def outside_entities(characters, spans):
    inside = {position for _, start, end in spans for position in range(start, end)}
    return [character for position, character in enumerate(characters) if position not in inside]


def test_mention_replacement_puts_mentions_of_the_same_type_at_their_exact_characters(train_split):
    originals = windows_and_spans(train_split)
    mentions = Counter((entity_type, "".join(characters[start:end]))
                       for characters, spans in originals.values() for entity_type, start, end in spans)
    copies, counts = augmented(train_split, mention=1.0)
    assert copies and counts["mention replacements"] > 0
    replaced = 0
    for copy_id, (characters, spans) in copies.items():
        source_characters, source_spans = originals[copy_id.removesuffix("-aug0")]
        assert len(characters) <= WINDOW_CHARS
        assert [entity_type for entity_type, _, _ in spans] == [entity_type for entity_type, _, _ in source_spans]
        for entity_type, start, end in spans:  # every entity's text is a mention of its type, where the tags say
            assert (entity_type, "".join(characters[start:end])) in mentions
        assert outside_entities(characters, spans) == outside_entities(source_characters, source_spans)
        replaced += characters != source_characters
    assert replaced > 0


def test_token_replacement_and_shuffling_keep_the_tags_and_change_characters_within_their_tag(train_split):
    originals = windows_and_spans(train_split)
    pools = {}
    for characters, spans in originals.values():
        tags = augmentation._tags(len(characters), spans)
        for character, tag in zip(characters, tags):
            pools.setdefault(tag, set()).add(character)
    tokens, counts = augmented(train_split, token=0.5)
    assert counts["token replacements"] > 0
    shuffled, counts = augmented(train_split, shuffle=1.0)
    assert counts["shuffled segments"] > 0
    for copy_id in tokens:
        source_characters, source_spans = originals[copy_id.removesuffix("-aug0")]
        source_tags = augmentation._tags(len(source_characters), source_spans)
        characters, spans = tokens[copy_id]
        assert spans == source_spans
        for character, source, tag in zip(characters, source_characters, source_tags, strict=True):
            assert character == source or (character in pools[tag] and not is_blank(source))
        characters, spans = shuffled[copy_id]
        assert spans == source_spans
        for _, start, end in augmentation._segments(len(characters), spans):
            assert sorted(characters[start:end]) == sorted(source_characters[start:end])


def test_only_windows_of_rare_types_are_copied_and_rate_zero_copies_them_unchanged(train_split):
    originals = windows_and_spans(train_split)
    counts = Counter(entity_type for _, spans in originals.values() for entity_type, _, _ in spans)
    rare = augmentation.rare_types(counts, 0.1)
    assert rare and rare != set(counts)
    copies, _ = augmented(train_split, copies=2, mention=0.0, token=0.0, shuffle=0.0)
    expected = sorted(f"{window_id}-aug{copy}" for window_id, (_, spans) in originals.items()
                      if {entity_type for entity_type, _, _ in spans} & rare for copy in range(2))
    assert sorted(copies) == expected
    assert all(copies[copy_id] == originals[copy_id.rsplit("-aug", 1)[0]] for copy_id in copies)


def test_the_same_seed_gives_the_same_copies_and_another_seed_others(train_split):
    rates = {"mention": 0.5, "token": 0.2, "shuffle": 0.2}
    first, _ = augmented(train_split, seed=3, **rates)
    assert augmented(train_split, seed=3, **rates)[0] == first
    assert augmented(train_split, seed=4, **rates)[0] != first


def test_bad_augment_options_are_refused_in_one_line(capsys):
    for options, message in ((["--augment", "synonym=0.1"], "the methods are mention, token, shuffle"),
                             (["--augment", "mention=high"], "a rate is a number between 0 and 1"),
                             (["--augment", "token=1.5"], "a rate is a number between 0 and 1"),
                             (["--augment", "mention=0.5", "--augment_copies", "0"], "--augment_copies must be")):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_arguments(train.argument_parser(), ["--output_dir", "unused", *options])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_train_py_trains_on_the_copies_and_leaves_validation_and_test_alone(trained_model, tmp_path):
    plain_dir, _ = trained_model
    output_dir = tmp_path / "augmented"
    completed = run_script(small_training(output_dir, "--num_train_epochs", "1", "--augment", "mention=1",
                                          "token=0.1", "--rare_type_share", "0.1"))
    log = completed.stdout + completed.stderr
    assert "augmented windows join the 16 training windows" in log
    corpus = json.loads((output_dir / "corpus.json").read_text(encoding="utf-8"))["splits"]
    # Trained on the 16 windows, their rare-type windows repeated (oversampling) and their copies: more windows
    # than the oversampled split alone.
    results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    trained_windows = results["train_samples_per_second"] * results["train_runtime"]
    assert trained_windows > corpus["train"]["windows"] * 1.5
    # Validated and tested on the read windows alone: as many windows, the same gold entities as a plain run.
    state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    evaluation = next(entry for entry in state["log_history"] if "eval_runtime" in entry)
    assert evaluation["eval_samples_per_second"] * evaluation["eval_runtime"] == \
        pytest.approx(corpus["validation"]["windows"], rel=0.05)
    plain, augmented_run = (json.loads((folder / "test_report.json").read_text(encoding="utf-8"))
                            for folder in (plain_dir, output_dir))
    gold = [{name: row["support"] for name, row in report.items() if row["support"]}
            for report in (plain, augmented_run)]
    assert gold[0] and gold[0] == gold[1]
    arguments = json.loads((output_dir / "run_arguments.json").read_text(encoding="utf-8"))
    assert arguments["augment"] == ["mention=1", "token=0.1"]
