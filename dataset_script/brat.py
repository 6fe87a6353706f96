"""Reading brat standoff files (``NNN.txt`` + ``NNN.ann``): the one place where .ann lines are parsed.

Offsets count characters of the .txt as written, as brat itself counts them (its server reads files with
``codecs.open(..., encoding="utf8")``: no newline translation, no BOM removal). So files are decoded as UTF-8
with ``newline=""``: ``\\r\\n`` stays two characters and a byte-order mark stays character 0 of the .txt
(a BOM at the start of a .ann is dropped: it is not part of any annotation). Every entity's text is checked
against the .txt at its offsets, so a file whose offsets were counted differently (say, without its BOM)
is reported instead of producing shifted tags. .ann lines are split at ``\\n`` only (``str.splitlines``
would also split at characters such as U+2028 that may occur inside an entity's text).

What is an error and what a warning (``strict=True`` makes warnings errors):

==========================================  ======================================================
malformed line, offset beyond the text,      ``BratFormatError`` naming the file and line
entity without a type, entity id used
twice, non-UTF-8 file, .ann without .txt,
unknown line kind, missing folder
entity text differs from the .txt            warning; entity not used (reason ``text_mismatch``)
fragments separated by more than whitespace  warning; entity not used (reason ``gap_with_text``)
.txt without .ann                            warning; document not used: an unannotated text read as
                                             all ``O`` would teach the model that its entities are none
hidden files (``.name.txt``)                 not documents (editor and macOS ``._name.txt`` side files)
R, E, A, M, N, # and * lines                 skipped and counted, no warning
==========================================  ======================================================
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

NON_ENTITY_LINES = {"R": "relation", "E": "event", "A": "attribute", "M": "attribute", "N": "normalization",
                    "#": "note", "*": "equivalence"}
BOM = "\ufeff"
_OFFSETS = re.compile(r"^[0-9]+ [0-9]+(;[0-9]+ [0-9]+)*$")  # ASCII digits only, as brat writes


class BratFormatError(ValueError):
    """A brat file that cannot be read correctly; the message names the file and, where known, the line."""


@dataclass
class Entity:
    id: str
    type: str
    start: int  # first character of the first fragment
    end: int  # one past the last character of the last fragment
    text: str  # as written in the .ann (fragments joined by a space)
    fragments: list[tuple[int, int]]


@dataclass
class Document:
    document_id: str
    text: str
    entities: list[Entity] = field(default_factory=list)
    # Entities read but not usable, as (reason, type); lines that are not entities, by kind.
    rejected: Counter = field(default_factory=Counter)
    skipped_lines: Counter = field(default_factory=Counter)


def read_document(txt_path: Path, ann_path: Path, strict: bool = False) -> Document:
    """One document: its text and its text-bound (``T``) annotations, fragments merged (see ``_check_entity``)."""
    document = Document(txt_path.stem, read_text(txt_path))
    id_lines: dict[str, int] = {}  # entity id -> line that defined it
    for line_number, line in enumerate(read_text(ann_path).removeprefix(BOM).split("\n"), start=1):
        where = f"{ann_path}:{line_number}"
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        kind = line[0]
        if kind in NON_ENTITY_LINES:
            document.skipped_lines[NON_ENTITY_LINES[kind]] += 1
            continue
        if kind != "T":
            raise BratFormatError(f"{where}: not a brat annotation line: {line[:80]!r}")
        entity = _parse_entity(line, where, len(document.text))
        if entity.id in id_lines:
            raise BratFormatError(f"{where}: entity id {entity.id} is already used on line {id_lines[entity.id]}")
        id_lines[entity.id] = line_number
        problem = _check_entity(entity, document.text)
        if problem:
            hint = _offset_hint(document.text) if problem[0] == "text_mismatch" else ""
            _warn(f"{where}: {problem[1]}{hint}; entity {entity.id} not used", strict)
            document.rejected[(problem[0], entity.type)] += 1
            continue
        document.entities.append(entity)
    return document


def _offset_hint(text: str) -> str:
    """Why offsets may have been counted differently from brat, for a text-mismatch warning."""
    if text.startswith(BOM):
        return " (the .txt starts with a byte-order mark, which brat counts as character 0)"
    if "\r\n" in text:
        return " (the .txt has CRLF line endings, which brat counts as two characters)"
    return ""


def read_text(path: Path) -> str:
    """A file's characters as written (UTF-8, line endings untouched)."""
    try:
        with open(path, encoding="utf-8", newline="") as file:
            return file.read()
    except UnicodeDecodeError as error:
        raise BratFormatError(f"{path}: not UTF-8 (byte {error.start}: {error.reason})") from None
    except FileNotFoundError:
        raise BratFormatError(f"{path}: file not found") from None


def find_documents(folder: Path, strict: bool = False) -> list[tuple[Path, Path]]:
    """(txt, ann) pairs of a folder, sorted by document id."""
    txt_ids = {path.stem for path in files_with_suffix(folder, ".txt")}
    ann_ids = {path.stem for path in files_with_suffix(folder, ".ann")}
    for document_id in sorted(ann_ids - txt_ids):
        raise BratFormatError(f"{folder / (document_id + '.ann')}: no matching {document_id}.txt"
                              f"{_suffix_case_hint(folder, document_id + '.txt')}")
    for txt_path in texts_without_annotations(folder):
        _warn(f"{txt_path}: no matching .ann; document not used"
              f"{_suffix_case_hint(folder, txt_path.stem + '.ann')}", strict)
    return [(folder / f"{document_id}.txt", folder / f"{document_id}.ann") for document_id in sorted(txt_ids & ann_ids)]


def _suffix_case_hint(folder: Path, name: str) -> str:
    """Points at a file whose name differs only in case (``01.TXT``), which brat does not read as ``01.txt``."""
    near = [path.name for path in folder.iterdir() if path.name.lower() == name.lower() and path.name != name]
    return f" (found {near[0]}; brat reads lower-case .txt and .ann only)" if near else ""


def texts_without_annotations(folder: Path) -> list[Path]:
    return [path for path in files_with_suffix(folder, ".txt") if not path.with_suffix(".ann").exists()]


def has_brat_files(folder: Path) -> bool:
    """Whether the folder itself holds .txt or .ann files (rather than only split folders of them)."""
    return bool(files_with_suffix(folder, ".txt") or files_with_suffix(folder, ".ann"))


def files_with_suffix(folder: Path, suffix: str) -> list[Path]:
    """The folder's files ending in ``suffix``, sorted, without hidden ones: copies made on macOS carry
    ``._name.txt`` side files (not text), and editors leave ``.name.txt`` ones; brat lists neither. A missing
    folder is an error, not an empty corpus."""
    if not folder.is_dir():
        raise BratFormatError(f"{folder}: no such folder")
    return sorted(path for path in folder.glob(f"*{suffix}") if not path.name.startswith("."))


def _parse_entity(line: str, where: str, text_length: int) -> Entity:
    fields = line.split("\t", 2)  # the entity's text may itself hold a tab of the .txt
    if len(fields) != 3 or " " not in fields[1]:
        raise BratFormatError(f"{where}: expected 'ID<TAB>TYPE START END[;START END...]<TAB>TEXT', got {line[:80]!r}")
    entity_id, (entity_type, offsets), text = fields[0], fields[1].split(" ", 1), fields[2]
    if not entity_type:
        raise BratFormatError(f"{where}: entity {entity_id} has no type: {line[:80]!r}")
    if not _OFFSETS.match(offsets):
        raise BratFormatError(f"{where}: malformed offsets {offsets!r}")
    fragments = sorted(tuple(map(int, pair.split())) for pair in offsets.split(";"))
    for start, end in fragments:
        if start >= end:
            raise BratFormatError(f"{where}: empty or reversed fragment {start} {end}")
        if end > text_length:
            raise BratFormatError(f"{where}: offset {end} is beyond the end of the text ({text_length} characters)")
    return Entity(entity_id, entity_type, fragments[0][0], fragments[-1][1], text, fragments)


def _check_entity(entity: Entity, text: str) -> tuple[str, str] | None:
    """(reason, message) when the entity cannot be used as one span of the text, else None.

    Fragments are merged into one span when only whitespace separates them: in the Ruijin corpus every
    discontinuity is an entity broken by a line break of the source PDF.
    """
    covered = " ".join(text[start:end] for start, end in entity.fragments)
    if covered != entity.text:
        return "text_mismatch", f"text {entity.text!r} differs from the .txt at its offsets ({covered!r})"
    for (_, gap_start), (gap_end, _) in zip(entity.fragments, entity.fragments[1:]):
        if text[gap_start:gap_end].strip():
            return "gap_with_text", f"fragments are separated by text {text[gap_start:gap_end]!r}"
    return None


def _warn(message: str, strict: bool) -> None:
    if strict:
        raise BratFormatError(message)
    logger.warning(message)
