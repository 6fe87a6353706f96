"""The model's pipeline (BertBiLstmCrfNerPipeline): CRF marginals as scores, windows joined, blanks and invisible
characters, context windows and skip_blanks models, on the session's tiny trained model."""

import random

import pytest
import torch
from transformers import pipeline

from conftest import SAMPLE, sample_texts
from processing_bert_bilstm_crf import is_blank, split_into_windows, tags_with_blanks

# ----- scores, windows and blanks -----


def test_pipeline_scores_are_crf_marginals_and_windows_join(trained_model):
    from transformers import pipeline

    model_dir, _ = trained_model
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    # Windows of 20 characters instead of the trained 62: offsets still point into the whole text.
    for entity in ner(text, window_chars=20):
        assert text[entity["start"] : entity["end"]] == entity["word"]
    characters = ner("二甲双胍片", aggregation_strategy="none")
    assert all(0 < c["score"] <= 1 and c["entity"][:2] in ("B-", "I-") for c in characters)
    assert ner("") == []
    with pytest.raises(ValueError, match="window_chars must be between 1 and"):
        ner(text, window_chars=ner.model.config.max_position_embeddings - 1)


def test_invisible_characters_are_fed_as_blanks_and_never_edge_an_entity(trained_model):
    from transformers import pipeline

    model_dir, _ = trained_model
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    # A byte-order mark (character 0, as brat counts it) and a zero-width space: the model sees what it would see
    # for spaces, so the entities are the same, and none starts or ends with an invisible character.
    invisible = ner("\ufeff" + text.replace("。", "。\u200b"))
    spaced = ner(" " + text.replace("。", "。 "))
    assert invisible and [(e["entity_group"], e["start"], e["end"]) for e in invisible] == [
        (e["entity_group"], e["start"], e["end"]) for e in spaced]
    assert all(not is_blank(e["word"][0]) and not is_blank(e["word"][-1]) for e in invisible)


# ----- context windows -----


@pytest.fixture(scope="module")
def tagger(trained_model):
    model_dir, _ = trained_model
    return pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")


def test_pipeline_without_context_decodes_as_before(tagger):
    """context_chars=0 feeds [CLS] window [SEP] and decodes the window's characters with the model's default
    CRF mask, exactly as the pipeline did before context existed."""
    model, encoder, texts = tagger.model, tagger.character_encoder, sample_texts(SAMPLE)
    all_entries = tagger(texts, context_chars=0, aggregation_strategy="none", batch_size=8)
    for text, entries in zip(texts, all_entries):
        expected = []
        for start, end in split_into_windows(text, model.config.window_chars):
            input_ids = torch.tensor([encoder.window_ids(text[start:end])])
            tags = model.decode(input_ids).tags[0, 1:-1].tolist()  # crf_mask from [CLS]/[SEP], the old default
            names = [model.config.id2label[tag] for tag in tags]
            if model.config.skip_blanks:  # one tag per non-blank character: the blanks' from their neighbours
                names, _ = tags_with_blanks(text[start:end], names)
            expected += [(start + i, name) for i, name in enumerate(names) if name != "O"]
        assert [(entry["start"], entry["entity"]) for entry in entries] == expected
    # The trained model's config has no context, so the default is the same.
    assert tagger(texts, batch_size=8) == tagger(texts, context_chars=0, batch_size=8)


def test_pipeline_with_context_decodes_each_character_once(tagger):
    texts = sample_texts(SAMPLE)
    for text in texts:
        centres = []
        for item in tagger.preprocess(text, window_chars=30, context_chars=12):
            visible = item["crf_mask"][0]
            start, window = item["offset"], item["window"]
            before, after = text[max(start - 12, 0) : start], text[start + len(window) :][:12]
            ids = item["input_ids"][0].tolist()
            assert ids == tagger.character_encoder.window_ids(window, before, after)
            first, fed = 1 + len(tagger.character_encoder.fed(before)), tagger.character_encoder.fed(window)
            assert visible.nonzero().squeeze(1).tolist() == list(range(first, first + len(fed)))
            centres.append((start, window))
        assert "".join(window for _, window in centres) == text
        assert all(start == sum(len(w) for _, w in centres[:i]) for i, (start, _) in enumerate(centres))
    settings = dict(window_chars=30, context_chars=12, batch_size=8)
    for entries in tagger(texts, aggregation_strategy="none", **settings):
        assert len({entry["index"] for entry in entries}) == len(entries)  # no character decoded twice
    for text, entities in zip(texts, tagger(texts, **settings)):
        assert all(entity["word"] == text[entity["start"] : entity["end"]] for entity in entities)


def test_pipeline_refuses_a_context_the_encoder_has_no_positions_for(tagger):
    positions = tagger.model.config.max_position_embeddings
    with pytest.raises(ValueError, match="window_chars \\+ 2 \\* context_chars"):
        tagger("糖尿病", window_chars=positions - 2, context_chars=1)


# ----- skip_blanks models -----


@pytest.fixture(scope="module")
def skip_blanks_tagger(trained_model):
    """The tests' trained model: train.py skips blanks by default."""
    model_dir, _ = trained_model
    return pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")


def test_a_skip_blanks_model_tags_the_same_with_or_without_blanks(skip_blanks_tagger):
    """Blanks change nothing the model sees: blanks inserted into a sentence leave every other character's tag
    as it was, and a blank inside an entity belongs to it."""
    assert skip_blanks_tagger.model.config.skip_blanks is True
    generator = random.Random(1)
    sentences = [line for path in sorted(SAMPLE.glob("*.txt")) for line in
                 path.read_text(encoding="utf-8").replace(" ", "").splitlines() if 5 <= len(line) <= 40]
    window_chars = skip_blanks_tagger.model.config.window_chars
    checked_inside = 0
    for sentence in sentences:
        spaced, original_index = "", []
        for index, character in enumerate(sentence):
            if index and generator.random() < 0.3:
                spaced += generator.choice([" ", "\n", "\u3000 "])
            original_index.append(len(spaced))
            spaced += character
        assert len(spaced) <= window_chars  # one window each, so the model sees the same characters
        plain_tags = per_character_tags(skip_blanks_tagger, sentence)
        spaced_tags = per_character_tags(skip_blanks_tagger, spaced)
        assert [spaced_tags[i] for i in original_index] == plain_tags
        for entity in skip_blanks_tagger(spaced):
            assert entity["word"] == spaced[entity["start"] : entity["end"]] and not is_blank(entity["word"][0])
            checked_inside += sum(map(is_blank, entity["word"]))
    assert checked_inside > 0, "no predicted entity held a blank: the test showed nothing"


def per_character_tags(tagger, text: str) -> list[str]:
    tags = ["O"] * len(text)
    for entry in tagger(text, aggregation_strategy="none"):
        tags[entry["start"]] = entry["entity"]
    return tags


def test_a_skip_blanks_model_feeds_only_non_blank_characters(skip_blanks_tagger):
    text = "糖尿病 患者\n口服二甲双胍。" * 8
    for item in skip_blanks_tagger.preprocess(text, window_chars=30, context_chars=5):
        fed = [character for character in item["window"] if not is_blank(character)]
        visible = item["crf_mask"][0].nonzero().squeeze(1).tolist()
        assert len(visible) == len(fed) and visible == list(range(visible[0], visible[0] + len(fed)))
        assert skip_blanks_tagger.character_encoder.vocab["[unused1]"] not in item["input_ids"][0].tolist()


# ----- windows packed across texts -----


def mixed_texts() -> list[str]:
    """Texts of mixed lengths: empty, blanks only, one character, the sample's documents, and all of them joined
    (many windows of the trained 62 characters)."""
    texts = sample_texts(SAMPLE)
    return ["", *texts[:3], " \n\u3000 ", "糖", "\n".join(texts), *texts[3:]]


def spans(results):
    """(type, start, end, word) of each entity (or tagged character, ``aggregation_strategy="none"``)."""
    return [[(e.get("entity_group") or e["entity"], e["start"], e["end"], e["word"]) for e in entities]
            for entities in results]


def assert_same_entities(results, expected):
    """The same entities, with scores equal up to float32 summation order (a padded batch sums in other blocks)."""
    assert spans(results) == spans(expected)
    torch.testing.assert_close([e["score"] for entities in results for e in entities],
                               [e["score"] for entities in expected for e in entities], atol=1e-5, rtol=0)


@pytest.fixture
def encoder_batches(tagger, monkeypatch):
    """The attention masks of the batches the model's ``emissions`` runs, recorded while the test runs."""
    masks, emissions = [], tagger.model.emissions

    def recorded(input_ids, attention_mask=None, token_type_ids=None):
        masks.append(torch.ones_like(input_ids) if attention_mask is None else attention_mask)
        return emissions(input_ids, attention_mask, token_type_ids)

    monkeypatch.setattr(tagger.model, "emissions", recorded)
    return masks


def padded_share(masks) -> float:
    return 1 - sum(int(mask.sum()) for mask in masks) / sum(mask.numel() for mask in masks)


@pytest.mark.parametrize("settings", [{}, {"window_chars": 30, "context_chars": 12}, {"aggregation_strategy": "none"}])
def test_packed_windows_give_the_entities_of_unpacked_batching_in_input_order(tagger, encoder_batches, settings):
    """Windows sorted by length across texts and padded per batch: each text's entities as in input-order batching
    (each length alone, no padding) and as the text tagged alone, in input order, every offset into its text."""
    texts = mixed_texts()
    packed = tagger(texts, batch_size=4, pack_windows=8, **settings)
    packed_masks = encoder_batches[:]
    unpacked = tagger(texts, batch_size=4, pack_windows=0, **settings)
    assert sum(map(len, packed)) > 20 and [] in packed[:1]
    assert_same_entities(packed, unpacked)
    assert_same_entities(packed, [tagger(text, **settings) for text in texts])
    for text, entities in zip(texts, packed):
        assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)
    # The packed run fed padded batches of several windows; input-order batching ran each length alone.
    assert padded_share(packed_masks) > 0 and max(len(mask) for mask in packed_masks) == 4
    assert padded_share(encoder_batches[len(packed_masks) :]) == 0


def test_sorted_windows_leave_a_small_share_of_padding(tagger, encoder_batches):
    """Consecutive windows of the joined sample, batched in input order and padded, would be one sixth padding
    (windows end at sentence ends, so their lengths vary); sorted, a few percent."""
    text = "\n".join(sample_texts(SAMPLE) * 4)
    lengths = [item["input_ids"].shape[1] for item in tagger.preprocess(text)]
    in_order_share = 1 - sum(lengths) / sum(max(lengths[i : i + 8]) * len(lengths[i : i + 8])
                                             for i in range(0, len(lengths), 8))
    tagger(text, batch_size=8)
    assert len(encoder_batches) == -(-len(lengths) // 8)
    assert padded_share(encoder_batches) < 0.05 < in_order_share


def test_packed_results_stream_text_by_text(tagger):
    """tag_texts' generator is read one pool of windows at a time: the first texts' entities come before the last
    text is read, and every text's once, in order."""
    from brat_ner.tagging import stream_entities, tag_texts

    texts, read = mixed_texts(), []

    def reading(texts):
        for text in texts:
            read.append(text)
            yield text

    results = iter(stream_entities(tagger, reading(texts), batch_size=4, pack_windows=8))
    first = next(results)
    assert first == [] and len(read) < len(texts)
    assert_same_entities([first, *results], [tagger(text) for text in texts])
    assert_same_entities(tag_texts(tagger, texts, 4), tag_texts(tagger, texts, 4, pack_windows=0))


def test_pack_windows_must_not_be_negative(tagger):
    with pytest.raises(ValueError, match="pack_windows must not be negative"):
        tagger(["糖尿病"], batch_size=2, pack_windows=-1)
