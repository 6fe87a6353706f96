"""convert_corpus.py: a corpus through every format and back to brat with every entity at its character, split
folders kept, outputs that never write over the input, bad files refused in one line, and the real corpus
(under ../shared) round-tripped through every format with its losses counted."""

import sys
from collections import Counter

import pytest

import convert_corpus
from brat_ner import cli
from conftest import REAL_CORPUS, SAMPLE, write_corpus
from dataset_script.brat import read_text
from dataset_script.formats import registry
from processing_bert_bilstm_crf import is_blank


def convert(monkeypatch, *arguments):
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["convert_corpus.py", *arguments])
        cli.run_main(convert_corpus.main, "convert_corpus.py")


def refusal(monkeypatch, capsys, *arguments) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        convert(monkeypatch, *arguments)
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1 and error[0].startswith("convert_corpus.py: "), error
    return error[0]


def spans(documents):
    return [(d.document_id, d.text, sorted((e.type, e.start, e.end) for e in d.entities)) for d in documents]


def test_brat_through_every_json_format_and_back_is_the_same_corpus(tmp_path, monkeypatch, capsys):
    source, previous = SAMPLE, "brat"
    for step, target in enumerate(["labelstudio", "doccano", "cmeee", "brat"]):
        output = tmp_path / f"{step}-{target}"
        convert(monkeypatch, "--input", str(source), "--output", str(output), "--to", target)
        assert f"Converted 8 documents with 157 entities from {previous} to {target}" in capsys.readouterr().out
        source, previous = (output if target == "brat" else next(output.iterdir())), target
    assert spans(registry.read_documents(source)) == spans(registry.read_documents(SAMPLE))
    assert all(read_text(source / path.name) == read_text(path) for path in SAMPLE.glob("*.txt"))


def test_conll_output_says_what_it_could_not_hold(tmp_path, monkeypatch, capsys):
    convert(monkeypatch, "--input", str(SAMPLE), "--output", str(tmp_path / "c"), "--to", "conll")
    assert "what conll cannot hold, lost: {'overlapping entity': 7, 'blank character': 48}" in capsys.readouterr().out


def test_split_folders_become_split_folders(tmp_path, monkeypatch):
    for split in ("train", "dev", "test"):
        write_corpus(tmp_path / "in" / split, {f"{split}1": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")})
    convert(monkeypatch, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--to", "doccano")
    assert sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*.jsonl")) == [
        "dev/corpus.jsonl", "test/corpus.jsonl", "train/corpus.jsonl"]


def test_outputs_never_write_over_what_the_user_wrote(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus", {"a": ("糖尿病", "T1\tDisease 0 3\t糖尿病\n")})
    before = {path.name: path.read_bytes() for path in corpus.iterdir()}
    assert "holds the input" in refusal(monkeypatch, capsys, "--input", str(corpus), "--output", str(corpus),
                                        "--to", "brat")
    convert(monkeypatch, "--input", str(corpus), "--output", str(tmp_path / "ls"), "--to", "labelstudio")
    written = (tmp_path / "ls" / "corpus.json").read_bytes()
    (tmp_path / "ls" / "corpus.json").write_text("mine", encoding="utf-8")
    assert "already holds 1 files this run writes (corpus.json" in refusal(
        monkeypatch, capsys, "--input", str(corpus), "--output", str(tmp_path / "ls"), "--to", "labelstudio")
    assert (tmp_path / "ls" / "corpus.json").read_text(encoding="utf-8") == "mine"
    convert(monkeypatch, "--input", str(corpus), "--output", str(tmp_path / "ls"), "--to", "labelstudio",
            "--overwrite")
    assert (tmp_path / "ls" / "corpus.json").read_bytes() == written
    assert {path.name: path.read_bytes() for path in corpus.iterdir()} == before


def test_a_malformed_input_is_refused_in_one_line_naming_the_file_and_place(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "糖尿病", "label": [[0, 9, "Disease"]]}\n', encoding="utf-8")
    error = refusal(monkeypatch, capsys, "--input", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "out"),
                    "--to", "brat")
    assert f"{tmp_path / 'bad.jsonl'}:1: offsets 0 9 are beyond the text" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.real_corpus
def test_the_real_corpus_round_trips_through_every_format(tmp_path, monkeypatch, capsys):
    """Every format and back to brat: the same documents and entities, but for what a format cannot hold."""
    original = registry.read_documents(REAL_CORPUS)
    figures = {}
    for data_format in registry.FORMAT_MODULES:
        convert(monkeypatch, "--input", str(REAL_CORPUS), "--output", str(tmp_path / data_format), "--to", data_format)
        convert(monkeypatch, "--input", str(tmp_path / data_format), "--output", str(tmp_path / f"{data_format}-brat"),
                "--to", "brat")
        figures[data_format] = capsys.readouterr().out.splitlines()
        back = registry.read_documents(tmp_path / f"{data_format}-brat")
        if data_format != "conll":
            assert spans(back) == spans(original)
            continue
        # CoNLL: the texts without their blanks inside lines, and the entities BIO can hold, at the moved offsets.
        lost = Counter()
        for before, after in zip(original, back, strict=True):
            moved = [0]
            for character in before.text:
                moved.append(moved[-1] + (character == "\n" or not is_blank(character)))
            assert after.text == "".join(c for c in before.text if c == "\n" or not is_blank(c))
            expected = Counter((e.type, moved[e.start], moved[e.end]) for e in before.entities)
            got = Counter((e.type, e.start, e.end) for e in after.entities)
            lost += expected - got
            assert not got - expected, before.document_id
        losses = registry.write_documents(original, "conll")[1]
        figures["conll"].append(f"entities not back at their (moved) offsets: {sum(lost.values())}")
        assert losses["overlapping entity"] <= sum(lost.values()) <= (
            losses["overlapping entity"] + losses["entity starting or ending on a blank"])
    print("\n".join(f"{name}: {' | '.join(lines)}" for name, lines in figures.items()), file=sys.__stdout__)
