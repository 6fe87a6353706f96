#!/usr/bin/env python
"""Move an annotated corpus between annotation formats: brat, Label Studio, doccano, CoNLL and CMeEE.

    python convert_corpus.py --input ../shared/data/ruijin_round1/train --output ruijin_ls --to labelstudio
    python convert_corpus.py --input project-1-export.json --output corpus_brat --to brat
    python convert_corpus.py --input admin.jsonl --output corpus_cmeee --to cmeee --offset_unit code_point

--input is a file or a folder of one format (detected; --from names it), or a folder of train/ validation/ (or
dev/) test/ folders, each converted into the folder of the same name under --output. --output is a folder: brat
writes a .txt and an .ann per document, the other formats one file (corpus.json, corpus.jsonl, corpus.conll).
Document ids, texts and entities travel as they are; what the target format cannot hold (CoNLL: blanks inside a
line, overlapping entities) is counted and printed, never dropped silently. Offsets are converted to the unit of
the target tool (docs/data.md: doccano counts UTF-16 units, the others code points).

What the user wrote is never written over: an --output that is the input folder is refused, and so is one
already holding files this run writes unless --overwrite is given; every file is written whole or not at all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from brat_ner.cli import UsageError, parse_arguments, run_main
from brat_ner.files import atomic_write, check_writable_folder
from dataset_script import ruijin_ner
from dataset_script.formats import FORMATS, OFFSET_UNITS
from dataset_script.formats.registry import detect_format, read_documents, write_documents


@dataclass
class ConvertArguments:
    input: str = field(metadata={"help": "The corpus: a file or a folder of one annotation format, or a folder of "
                                         "train/ validation/ test/ folders of them."})
    output: str = field(metadata={"help": "The folder to write the converted corpus into."})
    to: str = field(metadata={"help": "The format to write.", "choices": list(FORMATS)})
    input_format: str | None = field(
        default=None, metadata={"help": "The format of --input (default: detected from its files).",
                                "choices": list(FORMATS), "aliases": ["--from"]}
    )
    offset_unit: str | None = field(
        default=None, metadata={"help": "The unit the input's offsets count (default: its tool's own; docs/data.md).",
                                "choices": list(OFFSET_UNITS)}
    )
    output_offset_unit: str | None = field(
        default=None, metadata={"help": "The unit of the written offsets (default: the target tool's own).",
                                "choices": list(OFFSET_UNITS)}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Write into an --output that already holds files this run writes (they "
                                         "are replaced; others are left as they are)."}
    )


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(ConvertArguments, prog="convert_corpus.py",
                            usage="convert_corpus.py --input PATH --output DIR --to FORMAT [OPTIONS]",
                            description="Convert an annotated corpus between brat, Label Studio, doccano, CoNLL and "
                                        "CMeEE, every entity at its character.")


def main():
    (args,) = parse_arguments(argument_parser())
    source, output = Path(args.input), Path(args.output)
    folders = ruijin_ner.split_folders(source) if source.is_dir() else None
    # (input, output folder) per part: each split folder, or the whole input.
    parts = [(folder, output / folder.name) for folder in folders.values()] if folders else [(source, output)]
    input_format = args.input_format or detect_format(parts[0][0])
    converted = [(read_documents(path, input_format, offset_unit=args.offset_unit), folder) for path, folder in parts]
    files, losses = {}, Counter()
    for documents, folder in converted:
        contents, lost = write_documents(documents, args.to, offset_unit=args.output_offset_unit)
        files.update({folder / name: content for name, content in contents.items()})
        losses.update(lost)
    check_output(output, source, files, args.overwrite)
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, content)
    documents = [document for part, _ in converted for document in part]
    print(conversion_summary(documents, input_format, args.to, output, losses))


def check_output(output: Path, source: Path, files: dict[Path, str], overwrite: bool) -> None:
    """Refuse an --output that is the input (or holds it), or that holds files this run writes unless
    ``overwrite``; then make sure it can be written."""
    input_folder = source if source.is_dir() else source.parent
    if output.resolve() == input_folder.resolve() or output.resolve() in input_folder.resolve().parents:
        raise UsageError(f"--output {output} holds the input {source}: its files would be written over; give "
                         "another folder")
    taken = sorted(path for path in files if path.exists())
    if taken and not overwrite:
        raise UsageError(f"--output {output} already holds {len(taken)} files this run writes "
                         f"({', '.join(path.name for path in taken[:3])}, ...); give --overwrite to replace them, or "
                         "another folder")
    check_writable_folder(output, "--output")


def conversion_summary(documents, input_format: str, output_format: str, output: Path, losses: Counter) -> str:
    """What was converted, and what was not: entities the input could not use, and what the target cannot hold."""
    rejected = sum((document.rejected for document in documents), Counter())
    skipped = sum((document.skipped_lines for document in documents), Counter())
    lines = [f"Converted {len(documents)} documents with {sum(len(d.entities) for d in documents)} entities from "
             f"{input_format} to {output_format} in {output}"]
    if rejected:
        lines.append(f"not usable in the input (warnings above): {dict(rejected)}")
    if skipped:
        lines.append(f"not entities, not converted: {dict(skipped)}")
    if losses:
        lines.append(f"what {output_format} cannot hold, lost: {dict(losses)}")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main, "convert_corpus.py")
