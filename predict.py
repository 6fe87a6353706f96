#!/usr/bin/env python
"""Tag Chinese medical text with a trained model and write brat annotations.

    python predict.py --model_name_or_path outputs/ruijin --input_dir new_docs/ --output_dir predicted/
    python predict.py --model_name_or_path outputs/ruijin --input_dir test_docs/ --output_dir predicted/ \
        --gold_dir test_docs/                       # also score against gold .ann files (strict, per type)
    python predict.py --model_name_or_path outputs/ruijin --data_dir ../shared/data/ruijin_round1/train \
        --split test                                # tag and score one split of a corpus, as train.py splits it
    echo "2 型糖尿病患者口服二甲双胍" | python predict.py --model_name_or_path outputs/ruijin --input_file -
    python predict.py ... --quantize int8           # CPU: int8 Linear layers; or --onnx ruijin.onnx (ONNX Runtime)
    python predict.py ... --onnx ruijin-int8.onnx --quantize int8          # ONNX Runtime with int8 weights
    torchrun --nproc_per_node 2 predict.py ...      # several processes, each tags its share of the documents

One .ann per .txt: a ``T`` line per entity with its type, document offsets and covered text. An entity that
crosses line breaks is written as fragments split at the breaks (``T3 Disease 106 107;108 114``), as brat
requires and as the Ruijin corpus does. The model runs through its own token-classification pipeline
(``modeling_bert_bilstm_crf.BertBiLstmCrfNerPipeline``), so this script, the pipeline and the Hub widget
return the same entities.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import HfArgumentParser, pipeline

import fast_inference
from dataset_script import ruijin_ner
from dataset_script.brat import BratFormatError, files_with_suffix, read_text
from ner_evaluation import report_to_markdown, score_entities, write_report

SPLIT_NAMES = tuple(map(str, ruijin_ner.SPLITS))


@dataclass
class PredictArguments:
    model_name_or_path: str = field(metadata={"help": "Folder written by train.py, or a Hub id."})
    input_dir: str | None = field(default=None, metadata={"help": "Folder of .txt documents to tag."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Or a brat corpus: tag and score the documents of --split (train.py's split)."}
    )
    split: str = field(default="test", metadata={"help": "The split of --data_dir.", "choices": SPLIT_NAMES})
    input_file: str | None = field(
        default=None, metadata={"help": "One .txt file, or - for standard input: prints entities as JSON."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where to write one .ann per .txt."})
    gold_dir: str | None = field(
        default=None, metadata={"help": "Folder of gold .ann files: score the predictions (strict entity F1)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Windows per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ...; default: GPU when present."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 weights; default: on for CUDA."})
    num_threads: int | None = field(
        default=None, metadata={"help": "CPU threads per process; default: the cores available to this process, "
                                        "divided among the processes of a multi-process run."}
    )
    quantize: str | None = field(
        default=None, metadata={"help": "int8: int8 weights for the Linear layers (CPU; slightly different scores); "
                                        "with --onnx, ONNX Runtime's int8 quantisation of the exported graph.",
                                "choices": ["int8"]}
    )
    onnx: str | None = field(
        default=None, metadata={"help": "Run encoder + BiLSTM + linear in ONNX Runtime (CPU) from this .onnx file, "
                                        "exported there first if it does not exist."}
    )


def main():
    (args,) = HfArgumentParser(PredictArguments).parse_args_into_dataclasses()
    if sum(source is not None for source in (args.input_dir, args.input_file, args.data_dir)) != 1:
        sys.exit("predict.py: give exactly one of --input_dir, --input_file and --data_dir")
    if args.num_threads is not None and args.num_threads < 1:
        sys.exit(f"predict.py: --num_threads must be at least 1, got {args.num_threads}")
    if (args.quantize or args.onnx) and args.device not in (None, "cpu"):
        sys.exit(f"predict.py: --quantize and --onnx run on the CPU, not on --device {args.device}")
    # Every input is read and checked before the model is loaded: a bad file fails in seconds, not after tagging.
    if args.input_file:
        text = read_standard_input() if args.input_file == "-" else read_text(Path(args.input_file))
        print(json.dumps(tag_texts(load_tagger(args), [text], args.batch_size)[0], ensure_ascii=False, indent=1))
        return

    if args.data_dir:
        split = ruijin_ner.load(args.data_dir, name="brat")[args.split]
        if not len(split):
            sys.exit(f"predict.py: the {args.split} split of {args.data_dir} has no documents")
        documents = dict(zip(split["document_id"], split["text"]))
        gold_documents = list(split)
    else:
        documents = read_texts(Path(args.input_dir))
        gold_documents = ruijin_ner.read_corpus_documents(args.gold_dir) if args.gold_dir else None
    if gold_documents is not None:
        check_gold_matches(gold_documents, documents)
    # Under torchrun each process tags (and writes) its own share of the documents, on its own GPU if any.
    device = tagging_device(args)
    state = PartialState(cpu=device == "cpu")
    if state.num_processes > 1 and device.startswith("cuda"):
        device = str(state.device)
    with state.split_between_processes(list(documents)) as share:
        share = {document_id: documents[document_id] for document_id in share}
    with state.main_process_first():  # one process exports --onnx, the others load the file
        tagger = load_tagger(args, device)
    predictions = tag_texts(tagger, list(share.values()), args.batch_size, progress=state.is_main_process)
    if args.output_dir:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for (document_id, text), entities in zip(share.items(), predictions):
            (output_dir / f"{document_id}.ann").write_text(brat_annotations(text, entities), encoding="utf-8")
        state.wait_for_everyone()
        if state.is_main_process:
            print(f"Wrote {len(documents)} .ann files to {output_dir}")
    predictions = dict(zip(share, predictions))
    if state.num_processes > 1:
        print(f"Process {state.process_index + 1} of {state.num_processes} tagged {len(share)} documents")
        predictions = dict(pair for shard in gather_object([predictions]) for pair in shard.items())
    if gold_documents is not None and state.is_main_process:
        report = score_against_gold(gold_documents, predictions)
        if args.output_dir:
            write_report(report, Path(args.output_dir) / "brat_scores")
        print(report_to_markdown(report))


def tagging_device(args) -> str:
    """--device, else a GPU when present (the int8 and ONNX paths run on the CPU)."""
    return args.device or ("cuda" if torch.cuda.is_available() and not (args.quantize or args.onnx) else "cpu")


def load_tagger(args, device: str | None = None):
    device = device or tagging_device(args)
    use_bf16 = args.bf16 if args.bf16 is not None else device.startswith("cuda")
    num_threads = fast_inference.set_num_threads(args.num_threads)
    tagger = pipeline(
        "token-classification",
        model=args.model_name_or_path,
        trust_remote_code=True,
        device=device,
        dtype=torch.bfloat16 if use_bf16 else torch.float32,
    )
    if args.onnx:
        try:
            fast_inference.use_onnx(tagger, args.onnx, num_threads, int8=args.quantize == "int8")
        except fast_inference.OnnxFileMismatch as error:
            sys.exit(f"predict.py: {error}")
    elif args.quantize:
        fast_inference.quantize_int8(tagger)
    return tagger


def read_texts(input_dir: Path) -> dict[str, str]:
    """Documents by id (file stem), read as brat counts their characters (``read_text``: UTF-8, \\r\\n kept)."""
    paths = files_with_suffix(input_dir, ".txt")
    if not paths:
        sys.exit(f"predict.py: no .txt files in {input_dir}")
    return {path.stem: read_text(path) for path in paths}


def read_standard_input() -> str:
    """Standard input as UTF-8 with line endings untouched, like a file (Python's text stdin would translate
    \\r\\n and smuggle undecodable bytes in as surrogates)."""
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise BratFormatError(f"standard input: not UTF-8 (byte {error.start}: {error.reason})") from None


def tag_texts(tagger, texts: list[str], batch_size: int, progress: bool = False) -> list[list[dict]]:
    """Entities for each text (the pipeline batches windows across documents)."""
    if not texts:  # the pipeline cannot batch an empty list
        return []
    results = tagger(texts, batch_size=batch_size)
    return list(tqdm(results, total=len(texts), desc="Documents", disable=not progress))


def brat_annotations(text: str, entities: list[dict]) -> str:
    """The .ann text: one ``T`` line per entity, split into fragments at line breaks."""
    lines = []
    for number, entity in enumerate(entities, start=1):
        fragments = line_fragments(text, entity["start"], entity["end"])
        offsets = ";".join(f"{start} {end}" for start, end in fragments)
        covered = " ".join(text[start:end] for start, end in fragments)
        lines.append(f"T{number}\t{entity['entity_group']} {offsets}\t{covered}\n")
    return "".join(lines)


def line_fragments(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) pieces of ``text[start:end]`` between line-break characters."""
    fragments, fragment_start = [], start
    for position in range(start, end):
        if text[position] in "\r\n":
            if position > fragment_start:
                fragments.append((fragment_start, position))
            fragment_start = position + 1
    if end > fragment_start:
        fragments.append((fragment_start, end))
    return fragments


def check_gold_matches(gold_documents: list[dict], documents: dict[str, str]) -> None:
    """Every document to tag has a gold document with the very same text: offsets compare only then."""
    gold_texts = {doc["document_id"]: doc["text"] for doc in gold_documents}
    missing = sorted(set(documents) - set(gold_texts))
    if missing:
        sys.exit(f"predict.py: no gold annotations for {', '.join(missing[:5])}")
    differing = sorted(document_id for document_id, text in documents.items() if gold_texts[document_id] != text)
    if differing:
        sys.exit(f"predict.py: the gold .txt of {', '.join(differing[:5])} differs from the text to tag (line "
                 "endings?), so their offsets cannot be compared")


def score_against_gold(gold_documents: list[dict], predictions: dict[str, list[dict]]) -> dict:
    """Strict brat-level scores over the predicted documents: same document, type, first and last offset.
    Every usable gold entity counts, nested ones too (the model can predict one entity per character)."""
    gold_documents = {doc["document_id"]: doc for doc in gold_documents}
    gold = [(document_id, entity["type"], entity["start"], entity["end"])
            for document_id in predictions for entity in gold_documents[document_id]["entities"]]
    predicted = [(document_id, entity["entity_group"], entity["start"], entity["end"])
                 for document_id, entities in predictions.items() for entity in entities]
    return score_entities(gold, predicted)


if __name__ == "__main__":
    try:
        main()
    except BratFormatError as error:  # bad input files: the message names the file (and line), no traceback
        sys.exit(f"predict.py: {error}")
