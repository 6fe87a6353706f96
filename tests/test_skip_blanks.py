"""``skip_blanks``: blanks get no model position, and their tags come back from their neighbours, offsets exact."""

import random
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer, pipeline

from brat_ner.training_data import blank_free_tags, encode_batch
from conftest import REPO, TINY_BERT
from dataset_script import brat
from dataset_script.ruijin_ner import spans_to_bio
from modeling_bert_bilstm_crf import (
    CharacterEncoder,
    _strip_blanks,
    bio_to_spans,
    is_blank,
    tags_with_blanks,
)

SAMPLE = REPO / "data" / "sample"
REAL_CORPUS = REPO.parent / "shared" / "data" / "ruijin_round1" / "train"


def test_blank_free_tags_keep_entities_across_blanks_and_move_starts_off_blanks():
    text = "2 型糖 尿病\n患者"
    tags = ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "O",
            "B-Reason", "I-Reason"]
    assert blank_free_tags(text, tags) == (["B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease",
                                            "B-Reason", "I-Reason"], 0)
    # An entity that starts on a blank starts at its first character; one that is only blanks is counted as lost.
    assert blank_free_tags(" 糖尿病", ["B-Disease", "I-Disease", "I-Disease", "I-Disease"]) == (
        ["B-Disease", "I-Disease", "I-Disease"], 0)
    assert blank_free_tags("糖 病", ["B-Disease", "B-Test", "B-Disease"]) == (["B-Disease", "B-Disease"], 1)
    assert blank_free_tags("糖  ", ["O", "B-Test", "I-Test"]) == (["O"], 1)
    # Two entities of one type separated by a blank on which the second starts stay two entities.
    assert blank_free_tags("糖 病", ["B-Disease", "B-Disease", "I-Disease"]) == (["B-Disease", "B-Disease"], 0)


def test_tags_with_blanks_continue_an_entity_only_when_it_goes_on():
    text = "糖 尿\n病 患"
    tags, sources = tags_with_blanks(text, ["B-Disease", "I-Disease", "I-Disease", "B-Reason"])
    assert tags == ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "O", "B-Reason"]
    assert sources == [0, 1, 1, 2, 2, -1, 3]
    # O before, another type before, a B after: the blank is outside.
    assert tags_with_blanks("a b", ["O", "I-Test"])[0] == ["O", "O", "I-Test"]
    assert tags_with_blanks("a b", ["B-Drug", "I-Test"])[0] == ["B-Drug", "O", "I-Test"]
    assert tags_with_blanks("a b", ["B-Test", "B-Test"])[0] == ["B-Test", "O", "B-Test"]
    assert tags_with_blanks("  ", [])[0] == ["O", "O"]
    with pytest.raises(ValueError, match="2 tags for 1 non-blank"):
        tags_with_blanks("a ", ["O", "O"])


def round_trip(text: str, spans) -> tuple[list, list]:
    """Gold spans -> per-character BIO -> the tags of a skip_blanks model -> per-character BIO -> spans, and the
    spans expected back: each trimmed of edge blanks, blank-only ones and those BIO cannot encode left out."""
    tags, not_encoded = spans_to_bio(len(text), spans)
    kept, lost = blank_free_tags(text, tags)
    decoded = bio_to_spans(tags_with_blanks(text, kept)[0])
    expected = list(_strip_blanks(text, bio_to_spans(tags)))  # the pipeline's own trimming of edge blanks
    assert lost == len(bio_to_spans(tags)) - len(expected)
    return decoded, expected


def test_round_trip_on_random_texts_with_blanks():
    generator = random.Random(0)
    for _ in range(500):
        text = "".join(generator.choice("糖尿病 \n\u3000") for _ in range(generator.randint(0, 30)))
        spans = []
        for _ in range(generator.randint(0, 6)):
            if len(text) > 1:
                start = generator.randrange(len(text) - 1)
                spans.append((generator.choice("AB"), start, generator.randint(start + 1, len(text))))
        decoded, expected = round_trip(text, spans)
        assert decoded == expected, (text, spans)


def check_corpus_round_trip(folder: Path) -> int:
    """Every encodable gold entity of every document of ``folder`` comes back at its exact offsets."""
    total = 0
    for txt_path, ann_path in brat.find_documents(folder):
        document = brat.read_document(txt_path, ann_path)
        spans = [(entity.type, entity.start, entity.end) for entity in document.entities]
        decoded, expected = round_trip(document.text, spans)
        assert decoded == expected, txt_path
        _, not_encoded = spans_to_bio(len(document.text), spans)
        assert Counter(expected) == Counter(spans) - Counter(not_encoded), txt_path  # no entity has a blank edge
        total += len(decoded)
    return total


def test_round_trip_offsets_on_the_sample():
    assert check_corpus_round_trip(SAMPLE) > 50


def test_round_trip_offsets_on_the_real_corpus():
    if not REAL_CORPUS.is_dir():
        pytest.skip(f"real corpus not found at {REAL_CORPUS} (../shared beside the checkout)")
    assert check_corpus_round_trip(REAL_CORPUS) > 100_000


def test_encode_batch_gives_blanks_no_position():
    tokenizer = AutoTokenizer.from_pretrained(TINY_BERT)
    names = ["O", "B-Disease", "I-Disease"]
    batch = {"tokens": [list("糖 尿病")], "ner_tags": [[1, 2, 2, 2]], "context_before": ["患 "],
             "context_after": ["\n者"]}
    encoded = encode_batch(batch, tokenizer, names, skip_blanks=True)
    encoder = CharacterEncoder(tokenizer)
    assert encoded["input_ids"] == [[tokenizer.cls_token_id, *encoder.ids("患糖尿病者"), tokenizer.sep_token_id]]
    assert encoded["labels"] == [[-100, -100, 1, 2, 2, -100, -100]]
    assert encoded["characters"] == [8] and encoded["length"] == [7] and encoded["blank_only_entities"] == [0]
    every_position = encode_batch(batch, tokenizer, names)
    assert every_position["labels"] == [[-100, -100, -100, 1, 2, 2, 2, -100, -100, -100]]


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
