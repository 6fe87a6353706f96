"""brat_ner/training_data.py: windows encoded for training (encode_batch), the context hidden from the labels and
blanks given no position (blank_free_tags)."""

from transformers import AutoTokenizer

from brat_ner.training_data import blank_free_tags, encode_batch
from conftest import TINY_BERT
from modeling_bert_bilstm_crf import CharacterEncoder


def test_encode_batch_hides_the_context_from_the_labels():
    tokenizer = AutoTokenizer.from_pretrained(TINY_BERT)
    batch = {"tokens": [list("糖尿病")], "ner_tags": [[1, 2, 2]], "context_before": ["患"], "context_after": ["者。"]}
    encoded = encode_batch(batch, tokenizer, ["O", "B-Disease", "I-Disease"])
    encoder = CharacterEncoder(tokenizer)
    assert encoded["input_ids"] == [[tokenizer.cls_token_id, *encoder.ids("患糖尿病者。"), tokenizer.sep_token_id]]
    assert encoded["labels"] == [[-100, -100, 1, 2, 2, -100, -100, -100]]
    assert encoded["length"] == [8]


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
