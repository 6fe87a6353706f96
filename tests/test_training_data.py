"""brat_ner/training_data.py: windows encoded for training (encode_batch), the context hidden from the labels,
blanks given no position (blank_free_tags), and unlabelled text as untagged windows (untagged_windows)."""

import shutil
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from brat_ner.training_data import UNTAGGED, blank_free_tags, encode_batch, untagged_windows
from conftest import REPO, TINY_BERT
from dataset_script import ruijin_ner
from processing_bert_bilstm_crf import CharacterEncoder


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


@pytest.mark.parametrize("skip_blanks", [False, True])
def test_untagged_windows_cover_unlabelled_text_as_the_corpus_windows_are_encoded(skip_blanks, tmp_path):
    """Every character of every .txt in exactly one window, with its context; the window's positions UNTAGGED,
    the context's -100; rows of the training split's features; a window of nothing but blanks has no position to
    learn and is dropped only when blanks get none."""
    tokenizer = AutoTokenizer.from_pretrained(TINY_BERT)
    texts = {"a.txt": "糖尿病患者的血糖升高。二甲双胍 500mg 每日两次；餐后血糖 11.1 mmol/L。", "b.txt": "   \n   ",
             "c.txt": "胰岛素抵抗是2型糖尿病的主要病因之一，" * 3}
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    args = SimpleNamespace(window_chars=16, context_chars=4)
    corpus = ruijin_ner.load(REPO / "data" / "sample", window_chars=16, context_chars=4)
    names = corpus["train"].features["ner_tags"].feature.names
    encoded = corpus["train"].map(encode_batch, batched=True, fn_kwargs={"tokenizer": tokenizer, "label_names": names,
                                                                          "skip_blanks": skip_blanks},
                                  remove_columns=["tokens", "ner_tags", "context_before", "context_after"])
    rows = untagged_windows([tmp_path], REPO / "data" / "sample", tokenizer, args, skip_blanks, encoded.features)
    assert rows.features == encoded.features

    encoder = CharacterEncoder(tokenizer, skip_blanks)
    for name, text in texts.items():
        document = [row for row in rows if row["document_id"] == str(tmp_path / name)]
        if name == "b.txt" and skip_blanks:
            assert document == []  # nothing but blanks: no position to learn
            continue
        ends = [row["offset"] for row in document[1:]] + [len(text)]
        assert document[0]["offset"] == 0 and all(row["offset"] < end for row, end in zip(document, ends))
        for row, end in zip(document, ends):
            start, before, after = row["offset"], text[max(0, row["offset"] - 4):row["offset"]], text[end:end + 4]
            before_ids, window_ids, after_ids = (encoder.ids(encoder.fed(part)) for part in
                                                 (before, text[start:end], after))
            assert row["input_ids"] == [tokenizer.cls_token_id, *before_ids, *window_ids, *after_ids,
                                        tokenizer.sep_token_id]
            assert row["labels"] == ([-100] * (1 + len(before_ids)) + [UNTAGGED] * len(window_ids)
                                     + [-100] * (len(after_ids) + 1))
            assert row["characters"] == len(before) + end - start + len(after)


def test_untagged_windows_refuse_a_document_of_the_corpus_and_a_folder_without_text(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TINY_BERT)
    args = SimpleNamespace(window_chars=16, context_chars=0)
    sample = REPO / "data" / "sample"
    features = ruijin_ner.load(sample, window_chars=16)["train"].features
    shutil.copy(sample / "01.txt", tmp_path / "copy.txt")
    with pytest.raises(ValueError, match=f"{tmp_path / 'copy.txt'} is the text of the corpus document .*01.txt"):
        untagged_windows([tmp_path], sample, tokenizer, args, True, features)
    (tmp_path / "copy.txt").unlink()
    with pytest.raises(ValueError, match="no text in any .txt file"):
        untagged_windows([tmp_path], sample, tokenizer, args, True, features)
