#!/usr/bin/env python
"""Tag Chinese medical text with a trained model and write brat annotations.

    python predict.py --model_name_or_path outputs/ruijin --input_dir new_docs/ --output_dir predicted/
    python predict.py --model_name_or_path outputs/ruijin --input_dir test_docs/ --output_dir predicted/ \
        --gold_dir test_docs/                       # also score against gold .ann files (strict and overlap)
    python predict.py --model_name_or_path outputs/ruijin --data_dir ../shared/data/ruijin_round1/train \
        --split test                                # tag and score one split of a corpus, as train.py splits it
    echo "2 型糖尿病患者口服二甲双胍" | python predict.py --model_name_or_path outputs/ruijin --input_file -
    python predict.py ... --quantize int8           # CPU: int8 Linear layers; or --onnx ruijin.onnx (ONNX Runtime)
    python predict.py ... --onnx ruijin-int8.onnx --quantize int8          # ONNX Runtime with int8 weights
    python predict.py ... --quantize auto           # CPU: int8 or bf16, whichever this CPU favours (one line says)
    torchrun --nproc_per_node 2 predict.py ...      # several processes, each tags its share of the documents
    python predict.py --model_name_or_path outputs/ruijin --input_dir new_docs/ --output_dir to_correct/ \
        --preannotate                               # a brat folder for annotators, least certain documents first
    python predict.py ... --output_format labelstudio --preannotate   # Label Studio tasks to import, scored

--output_format: brat (the default), labelstudio, doccano, conll or cmeee (``dataset_script.formats``; the
last four write one file, ``predictions.json``/``.jsonl``/``.conll``, holding the texts and their entities).
Label Studio tasks carry the entities as ``predictions``, each with its score; with --preannotate each task's
prediction also has the task's score (its least certain entity's, 0 for a task without entities) and the
tasks are in the order of uncertainty.tsv, and ``labeling_config.xml`` is the project's config for the model's
types.

Brat: one .ann per .txt: a ``T`` line per entity with its type, document offsets and covered text. An entity that
crosses line breaks is written as fragments split at the breaks (``T3 Disease 106 107;108 114``), as brat
requires and as the Ruijin corpus does. The model runs through its own token-classification pipeline
(``modeling_bert_bilstm_crf.BertBiLstmCrfNerPipeline``), so this script, the pipeline and the Hub widget
return the same entities.

What the user wrote is never written over: an --output_dir that is the input, gold or corpus folder is refused,
and so is one already holding .ann files (or files this run writes) unless --overwrite is given; every file is
written whole or not at all (``brat_ner.files.atomic_write``). The model folder's Python code runs only when it is
this project's own file (a folder written by train.py) or the user gives --trust_remote_code.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "predict.py")  # --help from its stored page: the imports below take seconds

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import HfArgumentParser, pipeline

from brat_ner import fast_inference
from brat_ner.cli import UsageError, check_at_least, offline_without_network, parse_arguments, run_main
from brat_ner.evaluation import reports_to_markdown, score_against_gold, write_reports
from brat_ner.files import OutputLock, atomic_write, check_writable_folder
from brat_ner.runs import check_model_weights
from brat_ner.tagging import tag_texts
from brat_ner.trust import trust_remote_code
from dataset_script import ruijin_ner
from dataset_script.brat import BratFormatError, Document, Entity, files_with_suffix, read_text
from dataset_script.formats import FORMATS, labelstudio
from dataset_script.formats.registry import check_file_name, write_documents
from processing_bert_bilstm_crf import brat_annotations

SPLIT_NAMES = tuple(map(str, ruijin_ner.SPLITS))
UNCERTAINTY_FILE = "uncertainty.tsv"
LABELING_CONFIG_FILE = "labeling_config.xml"
PREDICTIONS_NAME = "predictions"  # the file of every format but brat: predictions.json ...


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
    output_dir: str | None = field(default=None, metadata={"help": "Where to write one .ann per .txt (brat), or "
                                                                   "the one file of --output_format."})
    output_format: str = field(
        default="brat", metadata={"help": "brat, or one file of Label Studio tasks (with each entity's score), "
                                          "doccano JSONL, CoNLL or CMeEE JSON.", "choices": list(FORMATS)}
    )
    gold_dir: str | None = field(
        default=None, metadata={"help": "Folder of gold .ann files: score the predictions (entity F1, strict and "
                                        "overlap)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Windows per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ...; default: GPU when present."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 weights; default: on for CUDA."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Write into an --output_dir that already holds .ann files (or files this run writes): "
                          "the files this run writes are replaced, the others left as they are."},
    )
    preannotate: bool = field(
        default=False,
        metadata={"help": "Make --output_dir a brat folder for annotators to correct: each .txt beside its .ann, "
                          "each entity's confidence as an AnnotatorNotes line, an annotation.conf of the model's "
                          "types and uncertainty.tsv, the documents least certain first. With --output_format "
                          "labelstudio: tasks scored and ordered least certain first, and labeling_config.xml."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run the Python code that comes with --model_name_or_path: needed for a Hub id or a "
                          "folder whose code is not this project's own (a folder written by train.py needs none)."},
    )
    constrain_bio: bool | None = field(
        default=None, metadata={"help": "Valid-BIO Viterbi on (true) or off (false); default: as the model was "
                                        "trained (its config). Compare both on one model with --data_dir."}
    )
    num_threads: int | None = field(default=None, metadata={"help": fast_inference.NUM_THREADS_HELP})
    quantize: str | None = field(
        default=None, metadata={"help": "int8: int8 weights for the Linear layers (CPU; slightly different scores); "
                                        "with --onnx, ONNX Runtime's int8 quantisation of the exported graph. auto: "
                                        "int8 or bf16, whichever this CPU's instructions favour (said in one line).",
                                "choices": ["int8", "auto"]}
    )
    onnx: str | None = field(
        default=None, metadata={"help": "Run encoder + BiLSTM + linear in ONNX Runtime (CPU) from this .onnx file, "
                                        "exported there first if it does not exist."}
    )

    def __post_init__(self):
        check_at_least(1, batch_size=self.batch_size, num_threads=self.num_threads)


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(
        PredictArguments, prog="predict.py", usage="predict.py [OPTIONS.json] [--option VALUE ...]",
        description="Tag texts with a trained model and write brat .ann files. A JSON file of option values may "
                    "come first; options after it override its values.")


def main():
    (args,) = parse_arguments(argument_parser())
    offline_without_network()
    if sum(source is not None for source in (args.input_dir, args.input_file, args.data_dir)) != 1:
        raise UsageError("give exactly one of --input_dir, --input_file and --data_dir")
    if args.preannotate and not (args.output_dir and not args.input_file):
        raise UsageError("--preannotate writes a folder: give --output_dir and --input_dir or --data_dir")
    if args.preannotate and args.output_format not in ("brat", "labelstudio"):
        raise UsageError(f"--preannotate writes brat or labelstudio, not --output_format {args.output_format}")
    if args.output_format != "brat" and not args.output_dir:
        raise UsageError(f"--output_format {args.output_format} writes a file: give --output_dir")
    if (args.quantize or args.onnx) and args.device not in (None, "cpu"):
        raise UsageError(f"--quantize and --onnx run on the CPU, not on --device {args.device}")
    if args.quantize == "auto":
        take_cpu_fast_path(args, fast_inference.cpu_flags())
    # Every input is read and checked before the model is loaded: a bad file fails in seconds, not after tagging.
    if args.input_file:
        text = read_standard_input() if args.input_file == "-" else read_text(Path(args.input_file))
        print(json.dumps(tag_texts(load_tagger(args), [text], args.batch_size)[0], ensure_ascii=False, indent=1))
        return

    if args.data_dir:
        split = ruijin_ner.load(args.data_dir, name="brat")[args.split]
        if not len(split):
            raise UsageError(f"the {args.split} split of {args.data_dir} has no documents")
        documents = dict(zip(split["document_id"], split["text"]))
        gold_documents = list(split)
        data_dir = Path(args.data_dir)  # a folder, or a file of another format: its folder is the input's too
        input_folders = {"--data_dir": [data_dir, *([data_dir.parent] if data_dir.is_file() else []),
                                        *ruijin_ner.document_folders(data_dir)]}
    else:
        documents = read_texts(Path(args.input_dir))
        gold_documents = ruijin_ner.read_corpus_documents(args.gold_dir) if args.gold_dir else None
        input_folders = {"--input_dir": [Path(args.input_dir)]}
        if args.gold_dir:
            input_folders["--gold_dir"] = [Path(args.gold_dir)]
    if gold_documents is not None:
        check_gold_matches(gold_documents, documents)
    # Under torchrun each process tags (and writes) its own share of the documents, on its own GPU if any.
    device = tagging_device(args)
    state = PartialState(cpu=device == "cpu")
    if state.num_processes > 1 and device.startswith("cuda"):
        device = str(state.device)
    if args.output_dir:  # checked before the model loads: a refused folder costs seconds, not a tagging run
        output_files = planned_output_files(Path(args.output_dir), documents, gold_documents is not None,
                                            args.preannotate, args.output_format)
        replaced = check_output_dir(Path(args.output_dir), input_folders, output_files, args.overwrite)
        if state.is_main_process:  # one run per folder: the temporary files that killed runs left there go
            OutputLock(Path(args.output_dir)).acquire()
    with state.split_between_processes(list(documents)) as share:
        share = {document_id: documents[document_id] for document_id in share}
    with state.main_process_first():  # one process exports --onnx, the others load the file
        tagger = load_tagger(args, device)
    predictions = tag_texts(tagger, list(share.values()), args.batch_size, progress=state.is_main_process)
    if args.output_dir and args.output_format == "brat":  # one file per document: each process writes its own
        write_annotations(Path(args.output_dir), share, predictions, args.preannotate)
    predictions = dict(zip(share, predictions))
    if state.num_processes > 1:
        print(f"Process {state.process_index + 1} of {state.num_processes} tagged {len(share)} documents")
        predictions = dict(pair for shard in gather_object([predictions]) for pair in shard.items())
    if not state.is_main_process:
        return
    if args.output_dir:
        in_order = [predictions[key] for key in documents]
        if args.output_format != "brat":
            write_predictions_file(Path(args.output_dir), args.output_format, documents, in_order, args.preannotate,
                                   tagger.model.config)
        if args.preannotate:
            write_preannotation_files(Path(args.output_dir), documents, in_order, tagger.model.config,
                                      args.overwrite, args.output_format)
        report_written(Path(args.output_dir), output_files, replaced)
    if gold_documents is not None:
        reports = score_against_gold(gold_documents, predictions)
        if args.output_dir:
            write_reports(reports, Path(args.output_dir) / "brat_scores")
        print(reports_to_markdown(reports))


def take_cpu_fast_path(args, cpu_flags: set[str]) -> None:
    """``--quantize auto``: set ``args`` to the fast path that ``cpu_flags`` favour (``choose_fast_path``) and say
    which on standard error. bfloat16 is the torch path's only (an ONNX file runs int8 or float)."""
    if args.bf16 is not None:
        raise UsageError("--quantize auto chooses between int8 and bf16 itself: give it or --bf16, not both")
    path, reason = fast_inference.choose_fast_path(cpu_flags)
    if path == "bf16" and args.onnx:
        path, reason = "float", f"{reason}, but --onnx runs int8 or float32, not bfloat16"
    args.quantize = "int8" if path == "int8" else None
    args.bf16 = path == "bf16"
    print(f"predict.py: --quantize auto: {'float32' if path == 'float' else path} ({reason})", file=sys.stderr)


def tagging_device(args) -> str:
    """--device, else a GPU when present (the int8 and ONNX paths run on the CPU)."""
    return args.device or ("cuda" if torch.cuda.is_available() and not (args.quantize or args.onnx) else "cpu")


def load_tagger(args, device: str | None = None):
    device = device or tagging_device(args)
    use_bf16 = args.bf16 if args.bf16 is not None else device.startswith("cuda")
    num_threads = fast_inference.set_num_threads(args.num_threads)
    check_model_weights(args.model_name_or_path)
    trusted = trust_remote_code(args.model_name_or_path, args.trust_remote_code)
    try:
        tagger = pipeline("token-classification", model=args.model_name_or_path, trust_remote_code=trusted,
                          device=device, dtype=torch.bfloat16 if use_bf16 else torch.float32,
                          constrain_bio=args.constrain_bio)
    except OSError as error:  # a Hub id that cannot be had: offline, no such repository, no access
        if Path(args.model_name_or_path).is_dir():
            raise
        raise UsageError(f"--model_name_or_path {args.model_name_or_path}: cannot be loaded from the Hub "
                         f"({str(error).splitlines()[0]})") from None
    if args.onnx:
        fast_inference.use_onnx(tagger, args.onnx, num_threads, int8=args.quantize == "int8")
    elif args.quantize:
        fast_inference.quantize_int8(tagger)
    return tagger


def planned_output_files(output_dir: Path, documents: dict[str, str], scored: bool, preannotate: bool,
                         output_format: str = "brat") -> list[Path]:
    """Every file this run will write in ``output_dir`` (``annotation.conf`` aside: an existing one is kept)."""
    if output_format == "brat":
        for document_id in documents:  # ids of another format's file become file names
            check_file_name(document_id, "--data_dir")
        suffixes = (".ann", ".txt") if preannotate else (".ann",)
        files = [output_dir / f"{document_id}{suffix}" for document_id in documents for suffix in suffixes]
    else:
        files = [output_dir / name for name in write_documents([], output_format, PREDICTIONS_NAME)[0]]
        if preannotate:
            files.append(output_dir / LABELING_CONFIG_FILE)
    if scored:
        files += [output_dir / f"{stem}{suffix}" for stem in ("brat_scores", "brat_scores_overlap")
                  for suffix in (".json", ".md")]
    if preannotate:
        files.append(output_dir / UNCERTAINTY_FILE)
    return files


def check_output_dir(output_dir: Path, input_folders: dict[str, list[Path]], output_files: list[Path],
                     overwrite: bool) -> list[Path]:
    """Refuse (``ValueError``) an output folder that would destroy what the user wrote: an input or gold folder
    (predictions would replace the gold .ann files), or, without ``overwrite``, a folder already holding .ann
    files or files this run writes; then make sure the folder can be written. Returns the files to be replaced."""
    for option, folders in input_folders.items():
        if any(output_dir.resolve() == folder.resolve() for folder in folders):
            raise UsageError(f"--output_dir {output_dir} is the folder of {option}: the predictions would replace "
                             "the .ann files there; give another folder")
    replaced = [path for path in output_files if path.exists()]
    if output_dir.is_dir() and not overwrite:
        taken = sorted({*replaced, *files_with_suffix(output_dir, ".ann")})
        if taken:
            raise UsageError(f"--output_dir {output_dir} already holds {len(taken)} .ann files or files this run "
                             f"writes ({', '.join(path.name for path in taken[:3])}, ...); give --overwrite to "
                             "replace those this run writes, or another folder")
    check_writable_folder(output_dir, "--output_dir")
    return replaced


def write_annotations(output_dir: Path, documents: dict[str, str], predictions: list[list[dict]],
                      confidence: bool) -> None:
    for (document_id, text), entities in zip(documents.items(), predictions):
        atomic_write(output_dir / f"{document_id}.ann", brat_annotations(text, entities, confidence))


def write_predictions_file(output_dir: Path, output_format: str, documents: dict[str, str],
                           predictions: list[list[dict]], preannotate: bool, config) -> None:
    """The one file of a format other than brat. Label Studio's tasks carry each entity's score as a prediction;
    with ``preannotate``, also the task's score, least certain tasks first, and the labeling config."""
    if output_format != "labelstudio":
        predicted = [Document(document_id, text, [Entity(f"T{number}", entity["entity_group"], entity["start"],
                                                         entity["end"], text[entity["start"]:entity["end"]],
                                                         [(entity["start"], entity["end"])])
                                                  for number, entity in enumerate(entities, start=1)])
                     for (document_id, text), entities in zip(documents.items(), predictions)]
        for name, content in write_documents(predicted, output_format, PREDICTIONS_NAME)[0].items():
            atomic_write(output_dir / name, content)
        return
    tasks = []
    for (document_id, text), entities in zip(documents.items(), predictions):
        spans = [(entity["entity_group"], entity["start"], entity["end"], round(float(entity["score"]), 4))
                 for entity in entities]
        score = round(document_uncertainty(entities)[0], 4) if preannotate else None
        tasks.append(labelstudio.task(document_id, text, predictions=[labelstudio.prediction(text, spans, score)]))
    if preannotate:  # least certain first, as uncertainty.tsv ranks them
        order = {document_id: rank for rank, document_id in enumerate(uncertainty_order(list(documents), predictions))}
        tasks.sort(key=lambda task: order[task["data"]["document_id"]])
        atomic_write(output_dir / LABELING_CONFIG_FILE, labelstudio.labeling_config(model_entity_types(config)))
    atomic_write(output_dir / f"{PREDICTIONS_NAME}{labelstudio.SUFFIXES[0]}", labelstudio.dumps(tasks))


def report_written(output_dir: Path, output_files: list[Path], replaced: list[Path]) -> None:
    """Say what was written and replaced, and which .ann files there this run did not write (an earlier run's)."""
    annotations = {path for path in output_files if path.suffix == ".ann"}
    others = [path for path in files_with_suffix(output_dir, ".ann") if path not in annotations]
    if not annotations:
        print(f"Wrote {', '.join(path.name for path in output_files)} to {output_dir}"
              + (f"; replaced {len(replaced)} files that were there" if replaced else ""))
        return
    message = f"Wrote {len(annotations)} .ann files to {output_dir}"
    if replaced:
        message += f"; replaced {len(replaced)} files that were there"
    if others:
        message += f"; {len(others)} other .ann files there ({others[0].name}, ...) were left as they were"
    print(message)


def write_preannotation_files(output_dir: Path, documents: dict[str, str], predictions: list[list[dict]], config,
                              overwrite: bool, output_format: str = "brat") -> None:
    """What makes ``output_dir`` a brat folder to correct: the texts (byte for byte: ``read_text`` keeps every
    character, so UTF-8 gives the file back), the model's types in annotation.conf, and the ranking (Label
    Studio's tasks hold their texts and config: the ranking alone)."""
    atomic_write(output_dir / UNCERTAINTY_FILE, uncertainty_table(list(documents), predictions))
    if output_format != "brat":
        return
    for document_id, text in documents.items():
        atomic_write(output_dir / f"{document_id}.txt", text)
    conf = output_dir / "annotation.conf"
    if conf.exists() and not overwrite:
        print(f"Kept the existing {conf} (--overwrite replaces it with the model's types)")
    else:
        atomic_write(conf, annotation_conf(model_entity_types(config)))


def model_entity_types(config) -> list[str]:
    return sorted({label[2:] for label in config.id2label.values() if label[:2] in ("B-", "I-")})


def annotation_conf(entity_types: list[str]) -> str:
    """A brat annotation.conf declaring ``entity_types`` (brat wants all four sections)."""
    return "\n".join(["[entities]", *entity_types, "", "[relations]", "", "[events]", "", "[attributes]", ""])


def document_uncertainty(entities: list[dict]) -> tuple[float, float]:
    """(lowest, mean) confidence of a document's entities; (0, 0) without entities: nothing to confirm, all to
    find, so it ranks first."""
    scores = [float(entity["score"]) for entity in entities]
    return (min(scores), sum(scores) / len(scores)) if scores else (0.0, 0.0)


def uncertainty_order(document_ids: list[str], predictions: list[list[dict]]) -> list[str]:
    """The documents least certain first: by the confidence of the least certain entity, then the mean, then id;
    a document without entities first of all."""
    return [document_id for *_, document_id in sorted(
        (bool(entities), *document_uncertainty(entities), document_id)
        for document_id, entities in zip(document_ids, predictions))]


def uncertainty_table(document_ids: list[str], predictions: list[list[dict]]) -> str:
    """uncertainty.tsv: one row per document, least certain first (``uncertainty_order``)."""
    by_id = dict(zip(document_ids, predictions))
    rows = [(*document_uncertainty(by_id[document_id]), document_id, len(by_id[document_id]))
            for document_id in uncertainty_order(document_ids, predictions)]
    lines = ["rank\tdocument_id\tmin_confidence\tmean_confidence\tentities"]
    for rank, (lowest, mean, document_id, count) in enumerate(rows, start=1):
        shown = (f"{lowest:.4f}", f"{mean:.4f}") if count else ("", "")
        lines.append(f"{rank}\t{document_id}\t{shown[0]}\t{shown[1]}\t{count}")
    return "\n".join(lines) + "\n"


def read_texts(input_dir: Path) -> dict[str, str]:
    """Documents by id (file stem), read as brat counts their characters (``read_text``: UTF-8, \\r\\n kept)."""
    paths = files_with_suffix(input_dir, ".txt")
    if not paths:
        raise UsageError(f"no .txt files in {input_dir}")
    return {path.stem: read_text(path) for path in paths}


def read_standard_input() -> str:
    """Standard input as UTF-8 with line endings untouched, like a file (Python's text stdin would translate
    \\r\\n and smuggle undecodable bytes in as surrogates)."""
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise BratFormatError(f"standard input: not UTF-8 (byte {error.start}: {error.reason})") from None


def check_gold_matches(gold_documents: list[dict], documents: dict[str, str]) -> None:
    """Every document to tag has a gold document with the very same text: offsets compare only then."""
    gold_texts = {doc["document_id"]: doc["text"] for doc in gold_documents}
    missing = sorted(set(documents) - set(gold_texts))
    if missing:
        raise UsageError(f"no gold annotations for {', '.join(missing[:5])}")
    differing = sorted(document_id for document_id, text in documents.items() if gold_texts[document_id] != text)
    if differing:
        raise UsageError(f"the gold .txt of {', '.join(differing[:5])} differs from the text to tag (line "
                 "endings?), so their offsets cannot be compared")


if __name__ == "__main__":
    run_main(main, "predict.py")  # bad input files and refused folders: one line naming them, no traceback
