"""predict.py: brat files with scores, standard input, CRLF offsets, bad input in one line, scoring a split,
outputs that never destroy inputs, model code only when trusted, pre-annotation folders for brat, and every
other output format (Label Studio tasks scored least certain first)."""

import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

import pytest
from transformers import pipeline

import predict
import processing_bert_bilstm_crf
from brat_ner import cli, tagging, trust
from conftest import (
    REAL_CORPUS,
    REPO,
    SAMPLE,
    SCRIPT_ENVIRONMENT,
    parse_error,
    predict_error,
    run_predict,
    run_script,
)
from dataset_script import ruijin_ner
from dataset_script.brat import find_documents, read_annotation_conf, read_document
from dataset_script.formats import labelstudio, registry
from dataset_script.ruijin_ner import spans_to_bio
from processing_bert_bilstm_crf import bio_to_spans

# ----- entities written as brat .ann lines -----


def ann_entities(ann_text: str) -> Counter:
    """(type, offsets, text) of the T lines of a .ann, ids ignored."""
    return Counter(tuple(line.split("\t")[1:]) for line in ann_text.splitlines() if line.startswith("T"))


def gold_through_span_decoding(folder: Path):
    """For every document: the gold .ann's encodable entities, and the .ann written from their BIO tags."""
    for txt_path, ann_path in find_documents(folder):
        document = read_document(txt_path, ann_path)
        spans = [(entity.type, entity.start, entity.end) for entity in document.entities]
        tags, not_encoded = spans_to_bio(len(document.text), spans)
        entities = [{"entity_group": t, "start": s, "end": e} for t, s, e in bio_to_spans(tags)]
        gold = ann_entities(ann_path.read_text(encoding="utf-8"))
        for entity_type, start, end in not_encoded:
            match = next(e for e in document.entities if (e.type, e.start, e.end) == (entity_type, start, end))
            offsets = ";".join(f"{a} {b}" for a, b in match.fragments)
            gold[(f"{entity_type} {offsets}", match.text)] -= 1
        yield document, +gold, ann_entities(predict.brat_annotations(document.text, entities))


def test_gold_tags_reproduce_the_gold_ann_on_the_sample():
    for _, gold, written in gold_through_span_decoding(SAMPLE):
        assert written == gold


@pytest.mark.real_corpus
def test_gold_tags_reproduce_the_gold_ann_on_the_real_corpus():
    documents = 0
    for document, gold, written in gold_through_span_decoding(REAL_CORPUS):
        if written != gold:  # entities whose .ann text disagrees with the .txt are not used (and reported)
            assert sum((gold - written).values()) == sum(document.rejected.values()), document.document_id
            assert not written - gold, document.document_id
        documents += 1
    assert documents == 327


def test_line_fragments_split_at_line_breaks():
    text = "糖\n尿病\r\n肾病"
    assert processing_bert_bilstm_crf.line_fragments(text, 0, len(text)) == [(0, 1), (2, 4), (6, 8)]
    assert predict.brat_annotations(text, [{"entity_group": "Disease", "start": 0, "end": 4}]) == \
        "T1\tDisease 0 1;2 4\t糖 尿病\n"


# ----- predict.py's outputs and refusals -----


@pytest.fixture(scope="module")
def predictions(trained_model, tmp_path_factory):
    model_dir, _ = trained_model
    output_dir = tmp_path_factory.mktemp("predicted")
    completed = run_script(["predict.py", "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE),
                            "--output_dir", str(output_dir), "--gold_dir", str(SAMPLE), "--batch_size", "4"])
    return model_dir, output_dir, completed


def test_predict_writes_valid_brat_files_with_scores(predictions):
    _, output_dir, completed = predictions
    texts = sorted(SAMPLE.glob("*.txt"))
    assert sorted(path.stem for path in output_dir.glob("*.ann")) == [path.stem for path in texts]
    for txt_path in texts:
        # The reader checks every entity's text against the .txt at its offsets (strict: no mismatch allowed).
        shutil.copy(txt_path, output_dir / txt_path.name)
        read_document(output_dir / txt_path.name, output_dir / f"{txt_path.stem}.ann", strict=True)
    report = json.loads((output_dir / "brat_scores.json").read_text(encoding="utf-8"))
    gold = {(txt.stem, e.type, e.start, e.end) for txt, ann in find_documents(SAMPLE)
            for e in read_document(txt, ann).entities}
    assert report["micro avg"]["support"] == len(gold)  # every gold entity, nested ones included
    assert "| **micro avg** |" in completed.stdout


def test_pipeline_agrees_with_predict_entity_for_entity(predictions):
    from transformers import pipeline

    model_dir, output_dir, _ = predictions
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    assert type(ner).__name__ == "BertBiLstmCrfNerPipeline"
    total = 0
    for txt_path in sorted(SAMPLE.glob("*.txt")):
        text = predict.read_texts(SAMPLE)[txt_path.stem]
        entities = ner(text, aggregation_strategy="simple")
        written = ann_entities((output_dir / f"{txt_path.stem}.ann").read_text(encoding="utf-8"))
        assert ann_entities(predict.brat_annotations(text, entities)) == written
        for entity in entities:
            assert text[entity["start"] : entity["end"]] == entity["word"] and 0 < entity["score"] <= 1
            assert entity["word"] == entity["word"].strip()
        total += len(entities)
    assert total > 0


def test_predict_reads_standard_input_and_prints_json(trained_model):
    """The entities printed for a document given on standard input are the pipeline's for that document: the
    same types, offsets into the text as given, words and scores."""
    model_dir, _ = trained_model
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    completed = run_script(["predict.py", "--model_name_or_path", str(model_dir), "--input_file", "-"], stdin=text)
    printed = json.loads(completed.stdout)
    ner = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    expected = ner(text, aggregation_strategy="simple")
    assert printed, "no entity found in a sample document"
    assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in printed] == [
        (e["entity_group"], e["start"], e["end"], e["word"]) for e in expected]
    # predict.py batches the windows otherwise than one call of the pipeline: float32 sums in another order.
    assert [e["score"] for e in printed] == pytest.approx([float(e["score"]) for e in expected], abs=1e-4)
    assert all(text[e["start"] : e["end"]] == e["word"] for e in printed)


def test_predict_keeps_crlf_offsets_of_an_input_file(trained_model, tmp_path):
    model_dir, _ = trained_model
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8").replace("\n", "\r\n")
    (tmp_path / "crlf.txt").write_bytes(text.encode("utf-8"))
    completed = run_script(["predict.py", "--model_name_or_path", str(model_dir), "--input_file",
                            str(tmp_path / "crlf.txt")])
    entities = json.loads(completed.stdout)
    assert entities and all(text[e["start"] : e["end"]] == e["word"] for e in entities)


def test_predict_reports_bad_input(tmp_path, trained_model, monkeypatch, capsys):
    model_dir, _ = trained_model
    (tmp_path / "gbk").mkdir()
    (tmp_path / "gbk" / "a.txt").write_bytes("糖尿病".encode("gbk"))
    # One run as a user runs it: one line on stderr, no traceback.
    stderr = run_script(["predict.py", "--model_name_or_path", str(model_dir), "--input_dir", str(tmp_path / "gbk")],
                        succeeds=False).stderr
    assert f"{tmp_path / 'gbk' / 'a.txt'}: not UTF-8" in stderr
    # The others in this process, through the same entry point (run_main).
    model = ("--model_name_or_path", str(model_dir))
    assert f"{tmp_path / 'gbk' / 'a.txt'}: not UTF-8" in predict_error(
        monkeypatch, capsys, *model, "--input_file", str(tmp_path / "gbk" / "a.txt"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("糖尿病".encode("gbk"))))
    assert "standard input: not UTF-8" in predict_error(monkeypatch, capsys, *model, "--input_file", "-")
    assert f"{tmp_path / 'nowhere'}: no such folder" in predict_error(
        monkeypatch, capsys, *model, "--input_dir", str(tmp_path / "nowhere"))
    assert "invalid choice: 'dev'" in predict_error(
        monkeypatch, capsys, *model, "--data_dir", "data/sample", "--split", "dev")


def test_predict_refuses_gold_with_another_text(tmp_path, trained_model, monkeypatch, capsys):
    model_dir, _ = trained_model
    (tmp_path / "in").mkdir()
    text = (SAMPLE / "01.txt").read_text(encoding="utf-8")
    (tmp_path / "in" / "01.txt").write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    model = ("--model_name_or_path", str(model_dir))
    error = predict_error(monkeypatch, capsys, *model, "--input_dir", str(tmp_path / "in"), "--gold_dir", str(SAMPLE),
                          model_loads=False)
    assert "the gold .txt of 01 differs from the text to tag" in error
    error = predict_error(monkeypatch, capsys, *model, "--input_dir", str(tmp_path / "in"),
                          "--gold_dir", str(tmp_path / "nowhere"), model_loads=False)
    assert f"{tmp_path / 'nowhere'}: no such folder" in error


def test_predict_scores_a_split_of_a_corpus(trained_model, tmp_path):
    model_dir, _ = trained_model
    run_script(["predict.py", "--model_name_or_path", str(model_dir), "--data_dir", "data/sample", "--split", "test",
                "--output_dir", str(tmp_path)])
    test_documents = ruijin_ner.load(SAMPLE, name="brat")["test"]
    assert sorted(path.stem for path in tmp_path.glob("*.ann")) == sorted(test_documents["document_id"])
    gold = {(doc["document_id"], e["type"], e["start"], e["end"]) for doc in test_documents for e in doc["entities"]}
    report = json.loads((tmp_path / "brat_scores.json").read_text(encoding="utf-8"))
    assert report["micro avg"]["support"] == len(gold)


# ----- progress as documents stream -----


def test_entities_stream_document_by_document(trained_model):
    model_dir, _ = trained_model
    tagger = pipeline("token-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    texts = [path.read_text(encoding="utf-8") for path in sorted((REPO / "data" / "sample").glob("*.txt"))]
    read = []

    def reading(texts):
        for text in texts:
            read.append(text)
            yield text

    results = tagging.stream_entities(tagger, reading(texts), batch_size=1)
    first = next(iter(results))
    assert len(read) < len(texts)  # the first document's entities came before the last document was read
    assert first == tagger(texts[0])
    spans = lambda entities: [(e["entity_group"], e["start"], e["end"]) for e in entities]  # noqa: E731
    assert [spans(entities) for entities in predict.tag_texts(tagger, texts, batch_size=4)] == \
        [spans(tagger(text)) for text in texts]  # in order, one list per text (scores vary with padding)
    assert predict.tag_texts(tagger, [], batch_size=4) == []


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def refused(monkeypatch, capsys, *arguments) -> str:
    """predict.py's one-line refusal of ``arguments``, which comes before the model is loaded."""
    return predict_error(monkeypatch, capsys, *arguments, model_loads=False)


# ----- predict.py: outputs never destroy inputs -----


def test_predict_refuses_to_write_into_its_input_gold_or_corpus_folder(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    texts = tmp_path / "texts"
    texts.mkdir()
    for path in corpus.glob("*.txt"):
        shutil.copy(path, texts / path.name)
    before = snapshot(corpus), snapshot(texts)
    model = ("--model_name_or_path", str(model_dir))
    assert "is the folder of --input_dir" in refused(monkeypatch, capsys, *model, "--input_dir", str(corpus),
                                                     "--output_dir", str(corpus))
    # The same folder spelt another way, and a gold folder: predictions would replace the gold .ann files.
    assert "is the folder of --gold_dir" in refused(monkeypatch, capsys, *model, "--input_dir", str(texts),
                                                    "--gold_dir", str(corpus), "--output_dir",
                                                    str(corpus / ".." / "corpus"))
    assert "is the folder of --data_dir" in refused(monkeypatch, capsys, *model, "--data_dir", str(corpus),
                                                    "--output_dir", str(corpus))
    assert (snapshot(corpus), snapshot(texts)) == before


def test_predict_replaces_annotations_only_when_asked_and_counts_them(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    output_dir = tmp_path / "predicted"
    output_dir.mkdir()
    (output_dir / "01.ann").write_text("T1\tDisease 0 2\t2型\n", encoding="utf-8")  # corrected by hand
    (output_dir / "99.ann").write_text("", encoding="utf-8")  # from another run: not among the inputs
    before = snapshot(output_dir)
    arguments = ("--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir", str(output_dir))
    message = refused(monkeypatch, capsys, *arguments)
    assert "already holds 2 .ann files" in message and "--overwrite" in message
    assert snapshot(output_dir) == before

    run_predict(monkeypatch, *arguments, "--overwrite")
    printed = capsys.readouterr().out
    assert "Wrote 8 .ann files" in printed and "replaced 1 files" in printed
    assert "1 other .ann files there (99.ann, ...) were left as they were" in printed
    assert (output_dir / "01.ann").read_bytes() != before["01.ann"]
    assert (output_dir / "99.ann").read_bytes() == before["99.ann"]
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith(".")]  # no temporary left


def test_predict_refuses_an_unwritable_output_before_loading_the_model(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    arguments = ("--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE))
    under_a_file = tmp_path / "notes.txt" / "predicted"
    under_a_file.parent.write_text("a file, not a folder", encoding="utf-8")
    message = refused(monkeypatch, capsys, *arguments, "--output_dir", str(under_a_file))
    assert f"--output_dir {under_a_file}: cannot write there" in message
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not os.access(read_only, os.W_OK):  # root writes there all the same: the case above is root's
            assert "cannot write there" in refused(monkeypatch, capsys, *arguments, "--output_dir", str(read_only))
    finally:
        read_only.chmod(0o700)


# ----- predict.py: model code only when trusted -----


def test_model_code_runs_only_when_it_is_the_projects_own_or_trusted(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    assert trust.trust_remote_code(str(model_dir), asked=False)  # written by train.py: byte-identical code
    changed = tmp_path / "changed"
    shutil.copytree(model_dir, changed, ignore=shutil.ignore_patterns("checkpoint-*"))
    with open(changed / trust.MODELING_FILE, "a", encoding="utf-8") as file:
        file.write("\n# anything could run here\n")
    arguments = ("--model_name_or_path", str(changed), "--input_file", str(SAMPLE / "01.txt"))
    message = refused(monkeypatch, capsys, *arguments)
    assert f"holds a {trust.MODELING_FILE} that differs from this project's" in message
    assert "Add --trust_remote_code if you trust that code" in message
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_file", str(SAMPLE / "01.txt"))
    expected = json.loads(capsys.readouterr().out)
    run_predict(monkeypatch, *arguments, "--trust_remote_code")
    assert expected and json.loads(capsys.readouterr().out) == expected  # trusted, the changed code runs

    extra = tmp_path / "extra"
    shutil.copytree(model_dir, extra, ignore=shutil.ignore_patterns("checkpoint-*"))
    (extra / "helpers.py").write_text("import os\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"holds Python code of its own \(helpers.py\)"):
        trust.trust_remote_code(str(extra), asked=False)
    with pytest.raises(ValueError, match="is not a local folder"):
        trust.trust_remote_code("someone/chinese-medical-ner", asked=False)


# ----- predict.py --preannotate -----


def test_preannotation_folder_opens_in_brat_with_confidences_and_a_ranking(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    output_dir = tmp_path / "to_correct"
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir",
                str(output_dir), "--preannotate")
    tagger = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu"))
    documents = predict.read_texts(SAMPLE)
    predictions = dict(zip(documents, predict.tag_texts(tagger, list(documents.values()), batch_size=4)))
    assert sum(map(len, predictions.values())) > 0

    for document_id, entities in predictions.items():
        txt_path, ann_path = output_dir / f"{document_id}.txt", output_dir / f"{document_id}.ann"
        assert txt_path.read_bytes() == (SAMPLE / f"{document_id}.txt").read_bytes()
        document = read_document(txt_path, ann_path, strict=True)
        assert [(e.type, e.start, e.end) for e in document.entities] == \
               [(e["entity_group"], e["start"], e["end"]) for e in entities]
        assert document.skipped_lines["note"] == len(entities)
        notes = [line.split("\t") for line in ann_path.read_text(encoding="utf-8").splitlines() if line[0] == "#"]
        assert notes == [[f"#{n}", f"AnnotatorNotes T{n}", f"confidence {e['score']:.2f}"]
                         for n, e in enumerate(entities, start=1)]

    model_types = sorted({label[2:] for label in tagger.model.config.id2label.values() if label != "O"})
    assert list(read_annotation_conf(output_dir / "annotation.conf").entity_types) == model_types
    header, *rows = [line.split("\t") for line in (output_dir / "uncertainty.tsv").read_text().splitlines()]
    assert header == ["rank", "document_id", "min_confidence", "mean_confidence", "entities"]
    assert [row[1] for row in rows] == sorted(predictions, key=lambda d: (
        min(e["score"] for e in predictions[d]), sum(e["score"] for e in predictions[d]) / len(predictions[d]), d))
    minima = [float(row[2]) for row in rows]
    assert minima == sorted(minima) and [int(row[4]) for row in rows] == [len(predictions[row[1]]) for row in rows]


def test_preannotation_keeps_an_existing_annotation_conf_unless_overwriting(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    output_dir = tmp_path / "to_correct"
    output_dir.mkdir()
    own_conf = "[entities]\nDisease\n\n[relations]\n\n[events]\n\n[attributes]\n"
    (output_dir / "annotation.conf").write_text(own_conf, encoding="utf-8")
    arguments = ("--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir", str(output_dir),
                 "--preannotate")
    run_predict(monkeypatch, *arguments)
    assert (output_dir / "annotation.conf").read_text(encoding="utf-8") == own_conf
    run_predict(monkeypatch, *arguments, "--overwrite")
    assert len(read_annotation_conf(output_dir / "annotation.conf").entity_types) > 1


def test_documents_without_entities_rank_first_for_annotators():
    table = predict.uncertainty_table(["sure", "empty", "unsure"], [[{"score": 0.9}], [],
                                                                    [{"score": 0.5}, {"score": 0.99}]])
    assert table.splitlines()[1:] == ["1\tempty\t\t\t0", "2\tunsure\t0.5000\t0.7450\t2",
                                      "3\tsure\t0.9000\t0.9000\t1"]


# ----- decoding options -----


def test_predict_can_override_constrained_decoding(trained_model):
    model_dir, _ = trained_model
    for setting in (True, False):
        arguments = predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu", constrain_bio=setting)
        assert predict.load_tagger(arguments)._forward_params == {"constrain_bio": setting}
    default = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu"))
    assert default._forward_params == {} and default.model.config.constrain_bio is True  # train.py's default


# ----- predict.py --output_format -----


def sample_predictions(model_dir) -> dict[str, list[dict]]:
    tagger = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu"))
    documents = predict.read_texts(SAMPLE)
    return dict(zip(documents, predict.tag_texts(tagger, list(documents.values()), batch_size=4)))


@pytest.mark.parametrize("output_format", ["labelstudio", "doccano", "cmeee", "conll"])
def test_every_output_format_holds_the_entities_at_their_characters(trained_model, tmp_path, monkeypatch,
                                                                    output_format):
    model_dir, _ = trained_model
    output_dir = tmp_path / output_format
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir",
                str(output_dir), "--output_format", output_format)
    (path,) = output_dir.glob("predictions.*")  # beside it: run.lock, held while this process runs
    assert registry.detect_format(path) == output_format
    read = (lambda p: labelstudio.read(p, results_from="predictions")) if output_format == "labelstudio" else \
        registry.read_documents
    written = {document.document_id: document for document in read(path)}
    predictions = sample_predictions(model_dir)
    assert sorted(written) == sorted(predictions) and sum(map(len, predictions.values())) > 0
    if output_format == "conll":  # blanks inside lines are not written: the entities' texts without them
        assert all([e.text for e in written[d].entities] == [e["word"].replace(" ", "") for e in entities]
                   for d, entities in predictions.items())
        return
    for document_id, entities in predictions.items():
        assert written[document_id].text == (SAMPLE / f"{document_id}.txt").read_text(encoding="utf-8")
        assert [(e.type, e.start, e.end) for e in written[document_id].entities] == \
               [(e["entity_group"], e["start"], e["end"]) for e in entities]


def test_label_studio_preannotation_scores_entities_and_tasks_least_certain_first(trained_model, tmp_path,
                                                                                  monkeypatch):
    model_dir, _ = trained_model
    output_dir = tmp_path / "tasks"
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE), "--output_dir",
                str(output_dir), "--output_format", "labelstudio", "--preannotate")
    tasks = json.loads((output_dir / "predictions.json").read_text(encoding="utf-8"))
    predictions = sample_predictions(model_dir)
    ranking = [line.split("\t")[1] for line in (output_dir / "uncertainty.tsv").read_text().splitlines()[1:]]
    assert [task["data"]["document_id"] for task in tasks] == ranking
    for task in tasks:
        entities = predictions[task["data"]["document_id"]]
        (prediction,) = task["predictions"]
        assert [result["score"] for result in prediction["result"]] == [round(e["score"], 4) for e in entities]
        assert prediction["score"] == round(min((e["score"] for e in entities), default=0.0), 4)
        assert all(task["data"]["text"][r["value"]["start"]:r["value"]["end"]] == r["value"]["text"]
                   for r in prediction["result"])
    config = ElementTree.fromstring((output_dir / "labeling_config.xml").read_text(encoding="utf-8"))
    assert [label.get("value") for label in config.iter("Label")] == predict.model_entity_types(
        predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu")).model.config)


@pytest.mark.parametrize("arguments, message", [
    (("--input_dir", str(SAMPLE), "--output_format", "doccano", "--preannotate"),
     "--preannotate writes brat or labelstudio, not --output_format doccano"),
    (("--input_file", str(SAMPLE / "01.txt"), "--output_format", "cmeee"),
     "--output_format cmeee writes a file: give --output_dir"),
])
def test_output_formats_that_cannot_be_written_are_refused_before_the_model_loads(monkeypatch, capsys, tmp_path,
                                                                                  arguments, message):
    error = predict_error(monkeypatch, capsys, "--model_name_or_path", str(tmp_path), *arguments,
                          *(("--output_dir", str(tmp_path / "out")) if "--input_dir" in arguments else ()),
                          model_loads=False)
    assert message in error


def test_a_hub_id_that_cannot_be_had_offline_is_one_line(tmp_path):
    """With --trust_remote_code a Hub id goes to the Hub; offline (HF_HUB_OFFLINE=1, read when the Hub client is
    imported: a new process) it is refused in one line naming it, not a traceback."""
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "1.txt").write_text("糖尿病患者口服二甲双胍。\n", encoding="utf-8")
    completed = subprocess.run([sys.executable, "predict.py", "--model_name_or_path", "someone/no-such-model",
                                "--trust_remote_code", "--input_dir", str(tmp_path / "texts"), "--device", "cpu"],
                               cwd=REPO, env={**SCRIPT_ENVIRONMENT, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.stderr.strip().splitlines()[-1].startswith(
        "predict.py: --model_name_or_path someone/no-such-model: cannot be loaded from the Hub (")


# ----- options -----


def test_predict_refuses_a_batch_size_of_zero_before_any_folder(tmp_path, capsys):
    output_dir = tmp_path / "predicted"
    error = parse_error(predict.argument_parser(), ["--model_name_or_path", str(tmp_path), "--input_dir",
                                                    str(SAMPLE), "--output_dir", str(output_dir), "--batch_size", "0"],
                        capsys)
    assert "--batch_size must be at least 1, got 0" in error and not output_dir.exists()


def test_predict_takes_a_json_file_of_options_that_the_command_line_overrides(tmp_path, capsys):
    options = tmp_path / "predict.json"
    options.write_text(json.dumps({"model_name_or_path": "outputs/quickstart", "input_dir": str(SAMPLE),
                                   "output_dir": "predicted", "batch_size": 4}), encoding="utf-8")
    (args,) = cli.parse_arguments(predict.argument_parser(), [str(options), "--batch_size", "8"])
    assert (args.model_name_or_path, args.input_dir, args.batch_size) == ("outputs/quickstart", str(SAMPLE), 8)
    options.write_text(json.dumps({"model_name_or_path": "m", "batch_sise": 4}), encoding="utf-8")
    assert "unknown options batch_sise" in parse_error(predict.argument_parser(), [str(options)], capsys)
