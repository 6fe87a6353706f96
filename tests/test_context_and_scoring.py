"""Issue 13: overlap scoring beside strict, context windows, BIO-constrained Viterbi and the zero-layer (classic
character BiLSTM-CRF) encoder, through the same code as the rest of the project."""

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, EvalPrediction, pipeline

import modeling_bert_bilstm_crf as modeling
import predict
from brat_ner.evaluation import _maximum_overlap_matching, score_both, score_entities, score_overlapping_entities
from brat_ner.trainer import NerMetrics
from brat_ner.training_data import encode_batch
from conftest import REPO, TINY_BERT, run_script, small_training
from dataset_script import ruijin_ner
from dataset_script.brat import find_documents, read_document
from modeling_bert_bilstm_crf import (
    CRF,
    BertBiLstmCrfConfig,
    BertBiLstmCrfForTokenClassification,
    CharacterEncoder,
    bio_to_spans,
    bio_transition_constraints,
    split_into_windows,
    tags_with_blanks,
)

SAMPLE = REPO / "data" / "sample"
REAL_CORPUS = REPO.parent / "shared" / "data" / "ruijin_round1" / "train"
LABELS = ["O", "B-Drug", "I-Drug", "B-Test", "I-Test"]
ID2LABEL = dict(enumerate(LABELS))


# ----- Overlap scoring -----


def overlap_counts(gold, predicted, entity_type="Drug"):
    """(found, predicted, gold) of one type in the overlap report, recovered from its precision and recall."""
    row = score_overlapping_entities(gold, predicted)[entity_type]
    predicted_count = sum(entity[1] == entity_type for entity in set(predicted))
    return round(row["precision"] * predicted_count), predicted_count, row["support"]


def test_overlap_matches_each_gold_entity_once():
    gold = [("d", "Drug", 0, 4)]
    predicted = [("d", "Drug", 0, 2), ("d", "Drug", 2, 4)]  # both overlap the one gold entity
    report = score_overlapping_entities(gold, predicted)
    assert report["Drug"]["precision"] == 0.5 and report["Drug"]["recall"] == 1.0  # one TP, one FP
    assert report["micro avg"]["f1-score"] == pytest.approx(2 / 3)
    assert score_entities(gold, predicted)["micro avg"]["f1-score"] == 0.0  # strict finds neither


def test_overlap_needs_the_same_type_and_document():
    gold = [("d", "Drug", 0, 4)]
    report = score_overlapping_entities(gold, [("d", "Test", 0, 4), ("e", "Drug", 0, 4)])
    assert report["Drug"]["recall"] == 0.0 and report["Test"]["precision"] == 0.0
    assert report["micro avg"]["f1-score"] == 0.0


def test_overlap_end_is_exclusive():
    gold = [("d", "Drug", 2, 4)]
    assert score_overlapping_entities(gold, [("d", "Drug", 4, 6)])["Drug"]["recall"] == 0.0  # adjacent after
    assert score_overlapping_entities(gold, [("d", "Drug", 0, 2)])["Drug"]["recall"] == 0.0  # adjacent before
    assert score_overlapping_entities(gold, [("d", "Drug", 3, 6)])["Drug"]["recall"] == 1.0  # shares character 3


def test_overlap_matching_is_maximum_not_greedy():
    # The first prediction overlaps both gold entities; matching it to the first one (as a greedy pass in
    # order would) leaves the second prediction, which only overlaps the first gold entity, unmatched.
    gold = [("d", "Drug", 0, 10), ("d", "Drug", 8, 12)]
    predicted = [("d", "Drug", 9, 11), ("d", "Drug", 0, 2)]
    assert overlap_counts(gold, predicted) == (2, 2, 2)


def brute_force_matching_size(gold, predicted):
    """The largest number of (prediction, gold) pairs that overlap, no entity in two pairs, by enumeration."""
    best = 0
    for choice in itertools.product([None, *range(len(gold))], repeat=len(predicted)):
        taken = [g for g in choice if g is not None]
        if len(taken) == len(set(taken)) and all(
                g is None or (predicted[p][0] < gold[g][1] and gold[g][0] < predicted[p][1])
                for p, g in enumerate(choice)):
            best = max(best, len(taken))
    return best


def test_overlap_matching_is_maximum_on_random_spans():
    generator = np.random.default_rng(1)
    for _ in range(40):
        gold, predicted = ([(int(s), int(s) + int(n)) for s, n in zip(generator.integers(0, 12, size),
                                                                      generator.integers(1, 5, size))]
                           for size in generator.integers(1, 6, 2))
        assert _maximum_overlap_matching(gold, predicted) == brute_force_matching_size(gold, predicted)


def test_overlap_matching_follows_long_augmenting_paths():
    # Prediction i overlaps gold i and i + 1 and takes gold i; the last prediction overlaps gold 0 only, so
    # matching it re-matches every earlier prediction one gold entity to the right.
    length = 3000
    gold = [(2 * i, 2 * i + 2) for i in range(length)]
    predicted = [(2 * i + 1, 2 * i + 3) for i in range(length - 1)] + [(0, 1)]
    assert _maximum_overlap_matching(gold, predicted) == length


def test_overlap_is_never_below_strict():
    generator = np.random.default_rng(0)
    entities = [("d", entity_type, int(start), int(start) + int(length))
                for entity_type, start, length in zip(generator.choice(["Drug", "Test"], 200),
                                                      generator.integers(0, 300, 200), generator.integers(1, 9, 200))]
    gold, predicted = entities[:100], entities[100:] + entities[:30]
    reports = score_both(gold, predicted)
    for name in ("Drug", "Test", "micro avg", "macro avg"):
        for metric in ("precision", "recall", "f1-score"):
            assert reports["overlap"][name][metric] >= reports["strict"][name][metric]
    assert reports["overlap"]["micro avg"]["f1-score"] > reports["strict"]["micro avg"]["f1-score"]
    assert reports["overlap"]["micro avg"]["support"] == reports["strict"]["micro avg"]["support"] == 100


def test_training_metrics_give_strict_and_overlap_of_the_same_windows():
    label_ids = {name: index for index, name in enumerate(LABELS)}
    gold = [["B-Drug", "I-Drug", "I-Drug", "O", "B-Test", "I-Test"], ["O", "B-Test", "I-Test", "O"]]
    predicted = [["B-Drug", "I-Drug", "O", "O", "B-Test", "I-Test"], ["O", "O", "O", "O"]]

    def padded(rows):  # Trainer's layout: one row per window, -100 where the label is -100
        array = np.full((len(rows), 8), -100)
        for row, tags in enumerate(rows):
            array[row, 1 : 1 + len(tags)] = [label_ids[tag] for tag in tags]
        return array

    metrics = NerMetrics(LABELS)
    results = metrics(EvalPrediction(predictions=padded(predicted), label_ids=padded(gold)))
    assert results["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # strict: Test 4..6 found only
    assert results["overlap_f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))  # and the shortened Drug
    assert set(metrics.last_reports) == {"strict", "overlap"}
    assert metrics.last_reports["overlap"]["Drug"]["recall"] == 1.0


def test_training_reports_strict_and_overlap(trained_model):
    output_dir, completed = trained_model
    strict = json.loads((output_dir / "test_report.json").read_text(encoding="utf-8"))
    overlap = json.loads((output_dir / "test_report_overlap.json").read_text(encoding="utf-8"))
    assert strict["micro avg"]["support"] == overlap["micro avg"]["support"] > 0
    assert overlap["micro avg"]["f1-score"] >= strict["micro avg"]["f1-score"]
    assert "| **micro avg** |" in (output_dir / "test_report_overlap.md").read_text(encoding="utf-8")
    assert "Strict (type, first and last offset" in completed.stdout and "Overlap (type must match" in completed.stdout
    test_results = json.loads((output_dir / "test_results.json").read_text(encoding="utf-8"))
    assert test_results["test_overlap_f1"] == pytest.approx(overlap["micro avg"]["f1-score"])


# ----- BIO-constrained Viterbi -----


def is_valid_bio(path):
    names = [LABELS[tag] for tag in path]
    return all(not name.startswith("I-") or (previous[2:] == name[2:] and previous != "O")
               for previous, name in zip(["O", *names], names))


def brute_force_best_valid_path(crf, emissions):
    """The best-scoring valid BIO path of one fully visible sequence, by enumeration."""
    best, best_score = None, float("-inf")
    for path in itertools.product(range(crf.num_tags), repeat=len(emissions)):
        if not is_valid_bio(path):
            continue
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(emissions[t, tag] for t, tag in enumerate(path))
        score = score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
        if score > best_score:
            best, best_score = list(path), score
    return best


@pytest.fixture(params=["sequential", "parallel"])
def algorithms(request, monkeypatch):
    """Both Viterbi implementations: the CPU's, and the CUDA chunked one selected on CPU tensors."""
    monkeypatch.setattr(modeling, "_parallel_over_time", lambda emissions: request.param == "parallel")


def random_crf(seed):
    torch.manual_seed(seed)
    crf = CRF(len(LABELS), batch_first=True)
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_(std=2.0)  # strong transitions: unconstrained paths are often invalid
    return crf


def test_bio_constraints_from_labels():
    start_allowed, allowed = bio_transition_constraints(ID2LABEL)
    assert start_allowed.tolist() == [True, True, False, True, False]
    # Into I-Drug only from B-Drug and I-Drug; into I-Test only from B-Test and I-Test; anything into O and B-.
    assert allowed[:, 2].tolist() == [False, True, True, False, False]
    assert allowed[:, 4].tolist() == [False, False, False, True, True]
    assert allowed[:, [0, 1, 3]].all()


@pytest.mark.parametrize("seq_len", [1, 2, 3, 6])
def test_constrained_viterbi_is_the_best_valid_path(algorithms, seq_len):
    crf = random_crf(seq_len)
    emissions = torch.randn(12, seq_len, len(LABELS), generator=torch.Generator().manual_seed(seq_len)) * 2
    allowed = bio_transition_constraints(ID2LABEL)
    constrained = crf.viterbi_tags(emissions, allowed=allowed)
    unconstrained = crf.viterbi_tags(emissions)
    for row in range(len(emissions)):
        assert constrained[row].tolist() == brute_force_best_valid_path(crf, emissions[row])
    if seq_len > 1:  # the check has teeth: without the constraint some best paths are invalid
        assert not all(is_valid_bio(path) for path in unconstrained.tolist())


def test_constrained_viterbi_with_holes_joins_visible_positions(algorithms):
    crf = random_crf(5)
    emissions = torch.randn(8, 9, len(LABELS), generator=torch.Generator().manual_seed(5)) * 2
    mask = torch.ones(8, 9, dtype=torch.bool)
    mask[:, [0, 3, 4, 8]] = False  # invisible first, middle and last positions
    tags = crf.viterbi_tags(emissions, mask, bio_transition_constraints(ID2LABEL))
    for row in range(len(emissions)):
        assert (tags[row][~mask[row]] == -100).all()
        assert tags[row][mask[row]].tolist() == brute_force_best_valid_path(crf, emissions[row][mask[row]])


def tiny_model(**overrides):
    config = BertBiLstmCrfConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS),
                                 id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}, lstm_hidden_size=8,
                                 cls_token_id=1, sep_token_id=2, **overrides)
    torch.manual_seed(0)
    return BertBiLstmCrfForTokenClassification(config)


def test_constrain_bio_leaves_training_gradients_finite():
    """Training is unconstrained (the loss never sees the option); gradients stay finite with it on, and the
    model's decoding follows the config unless overridden."""
    model = tiny_model(constrain_bio=True)
    with torch.no_grad():
        model.crf.start_transitions[2] = 50.0  # make an invalid start (I-Drug) the unconstrained favourite
    input_ids = torch.randint(3, 50, (3, 12))
    input_ids[:, 0], input_ids[:, -1] = 1, 2
    labels = torch.randint(len(LABELS), (3, 12))
    labels[:, 0] = labels[:, -1] = -100
    loss = model(input_ids, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    constrained, free = model.decode(input_ids), model.decode(input_ids, constrain_bio=False)
    assert (constrained[:, 1] != 2).all() and (free[:, 1] == 2).all()


# ----- Context windows -----


@pytest.mark.parametrize("seq_len", [1, 7, 40])
def test_masked_context_does_not_change_the_centres_path(algorithms, seq_len):
    """With the emissions fixed, positions the CRF does not see (context) change nothing: the centre's path
    depends on the context only through the encoder."""
    crf = random_crf(seq_len)
    generator = torch.Generator().manual_seed(seq_len)
    centre = torch.randn(4, seq_len, len(LABELS), generator=generator) * 2
    before, after = torch.randn(4, 5, len(LABELS), generator=generator) * 9, torch.randn(4, 3, len(LABELS)) * 9
    with_context = torch.cat([before, centre, after], 1)
    mask = torch.zeros(with_context.shape[:2], dtype=torch.bool)
    mask[:, 5 : 5 + seq_len] = True
    for allowed in (None, bio_transition_constraints(ID2LABEL)):
        alone = crf.viterbi_tags(centre, allowed=allowed)
        assert torch.equal(crf.viterbi_tags(with_context, mask, allowed)[:, 5 : 5 + seq_len], alone)


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


def test_context_windows_round_trip_offsets_on_the_real_corpus():
    if not REAL_CORPUS.is_dir():
        pytest.skip(f"real corpus not found at {REAL_CORPUS} (../shared beside the checkout)")
    assert check_context_windows(REAL_CORPUS, 254, 64) > 3000


def test_builder_keeps_the_centre_and_caches_per_setting(tmp_path):
    plain = ruijin_ner.load(SAMPLE, window_chars=62, cache_dir=tmp_path)["train"]
    with_context = ruijin_ner.load(SAMPLE, window_chars=62, context_chars=15, cache_dir=tmp_path)["train"]
    assert plain["tokens"] == with_context["tokens"] and plain["ner_tags"] == with_context["ner_tags"]
    assert set(plain["context_before"]) == {""} and any(with_context["context_before"])
    assert max(map(len, with_context["context_after"])) == 15
    assert plain.cache_files[0]["filename"] != with_context.cache_files[0]["filename"]


def test_encode_batch_hides_the_context_from_the_labels():
    tokenizer = AutoTokenizer.from_pretrained(TINY_BERT)
    batch = {"tokens": [list("糖尿病")], "ner_tags": [[1, 2, 2]], "context_before": ["患"], "context_after": ["者。"]}
    encoded = encode_batch(batch, tokenizer, ["O", "B-Disease", "I-Disease"])
    encoder = CharacterEncoder(tokenizer)
    assert encoded["input_ids"] == [[tokenizer.cls_token_id, *encoder.ids("患糖尿病者。"), tokenizer.sep_token_id]]
    assert encoded["labels"] == [[-100, -100, 1, 2, 2, -100, -100, -100]]
    assert encoded["length"] == [8]


@pytest.fixture(scope="module")
def tagger(trained_model):
    model_dir, _ = trained_model
    return pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")


def sample_texts():
    return [path.read_text(encoding="utf-8") for path in sorted(SAMPLE.glob("*.txt"))]


def test_pipeline_without_context_decodes_as_before(tagger):
    """context_chars=0 feeds [CLS] window [SEP] and decodes the window's characters with the model's default
    CRF mask, exactly as the pipeline did before context existed."""
    model, encoder, texts = tagger.model, tagger.character_encoder, sample_texts()
    all_entries = tagger(texts, context_chars=0, aggregation_strategy="none", batch_size=8)
    for text, entries in zip(texts, all_entries):
        expected = []
        for start, end in split_into_windows(text, model.config.window_chars):
            input_ids = torch.tensor([encoder.window_ids(text[start:end])])
            tags = model.decode(input_ids)[0, 1:-1].tolist()  # crf_mask from [CLS]/[SEP], the old default
            names = [model.config.id2label[tag] for tag in tags]
            if model.config.skip_blanks:  # one tag per non-blank character: the blanks' from their neighbours
                names, _ = tags_with_blanks(text[start:end], names)
            expected += [(start + i, name) for i, name in enumerate(names) if name != "O"]
        assert [(entry["start"], entry["entity"]) for entry in entries] == expected
    # The trained model's config has no context, so the default is the same.
    assert tagger(texts, batch_size=8) == tagger(texts, context_chars=0, batch_size=8)


def test_pipeline_with_context_decodes_each_character_once(tagger):
    texts = sample_texts()
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


def test_predict_can_override_constrained_decoding(trained_model):
    model_dir, _ = trained_model
    for setting in (True, False):
        arguments = predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu", constrain_bio=setting)
        assert predict.load_tagger(arguments)._forward_params == {"constrain_bio": setting}
    default = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu"))
    assert default._forward_params == {} and default.model.config.constrain_bio is True  # train.py's default


def test_pipeline_refuses_a_context_the_encoder_has_no_positions_for(tagger):
    positions = tagger.model.config.max_position_embeddings
    with pytest.raises(ValueError, match="window_chars \\+ 2 \\* context_chars"):
        tagger("糖尿病", window_chars=positions - 2, context_chars=1)


def test_context_reaches_the_encoder():
    """The centre's emissions change with the context (the encoder and BiLSTM see it), its path's positions do not."""
    model = tiny_model().eval()
    centre, context = torch.randint(3, 50, (6,)), torch.randint(3, 50, (4,))
    plain = model(torch.cat([torch.tensor([1]), centre, torch.tensor([2])])[None]).logits[0, 1:7]
    with_context = model(torch.cat([torch.tensor([1]), context, centre, context, torch.tensor([2])])[None]).logits
    assert not torch.allclose(plain, with_context[0, 5:11])


# ----- The classic baseline: zero transformer layers, context and constrained decoding through train.py -----


def test_classic_baseline_with_context_and_bigrams_trains_saves_reloads_and_predicts(tmp_path):
    config = json.loads((REPO / "configs" / "classic-bilstm-crf.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 0 and config["hidden_size"] == 128
    tiny_vocabulary = json.loads((TINY_BERT / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    classic = tmp_path / "classic.json"  # the same encoder over the tests' tiny vocabulary and positions
    classic.write_text(json.dumps({**config, "vocab_size": tiny_vocabulary, "max_position_embeddings": 128}))
    output_dir = tmp_path / "classic"
    arguments = small_training(output_dir, "--context_chars", "16", "--constrain_bio", "true", "--lstm_layers",
                               "2", "--num_train_epochs", "2", "--bigram_buckets", "211", "--bigram_embedding_size",
                               "8", encoder=("--encoder_config", str(classic)))
    run_script(arguments)
    saved = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert (saved["num_hidden_layers"], saved["context_chars"], saved["constrain_bio"]) == (0, 16, True)
    assert (saved["bigram_buckets"], saved["bigram_embedding_size"]) == (211, 8)
    assert json.loads((output_dir / "corpus.json").read_text(encoding="utf-8"))["context_chars"] == 16
    assert (output_dir / "test_report_overlap.json").is_file()
    tagger = pipeline("token-classification", model=str(output_dir), trust_remote_code=True, device="cpu")
    assert tagger.model.config.context_chars == 16 and len(tagger.model.bert.encoder.layer) == 0
    assert tagger.model.bigram_embeddings.weight.shape == (211, 8)
    texts = sample_texts()
    assert any(item["input_ids"].shape[1] > len(item["window"]) + 2 for item in tagger.preprocess(texts[0]))
    for entries in tagger(texts, aggregation_strategy="none", batch_size=8):
        assert all(is_valid_bio_names([entry["entity"] for entry in entries], [entry["index"] for entry in entries]))
    for text, entities in zip(texts, tagger(texts, batch_size=8)):
        assert all(entity["word"] == text[entity["start"] : entity["end"]] for entity in entities)


def is_valid_bio_names(names, indices):
    """Per character: an I-X continues an X at the previous character (only non-O characters are listed)."""
    previous = dict(zip(indices, names))
    for index, name in zip(indices, names):
        if name.startswith("I-"):
            before = previous.get(index - 1, "O")
            yield before != "O" and before[2:] == name[2:]
        else:
            yield True
