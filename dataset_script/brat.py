"""Reading brat standoff files (``NNN.txt`` + ``NNN.ann``, and the project's ``annotation.conf``): the one
place where they are parsed.

Offsets count characters of the .txt as written, as brat itself counts them (its server reads files with
``codecs.open(..., encoding="utf8")``: no newline translation, no BOM removal). So files are decoded as UTF-8
with ``newline=""``: ``\\r\\n`` stays two characters and a byte-order mark stays character 0 of the .txt
(a BOM at the start of a .ann is dropped: it is not part of any annotation). Every entity's text is checked
against the .txt at its offsets, so a file whose offsets were counted differently (say, without its BOM)
is reported instead of producing shifted tags. .ann lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as
brat reads them (``codecs.open(path, "rU")``: universal newlines), but not at characters such as U+2028 that
``str.splitlines`` would also split at and that may occur inside an entity's text.

Event triggers are text-bound (``T``) lines too. With an ``annotation.conf``, a ``T`` line whose type the
conf declares under ``[events]`` is a trigger; without one, a ``T`` line that an ``E`` line names as its
trigger (``E1<TAB>Binding:T3 Theme:T1``) is. Triggers are not entities unless ``event_triggers="include"``:
they are skipped and counted (``skipped_lines["event trigger"]``).

What is an error and what a warning (``strict=True`` makes warnings errors):

==========================================  ======================================================
malformed line, offset beyond the text,      ``BratFormatError`` naming the file and line
entity without a type, a type with a space,
entity id used twice, non-UTF-8 file,
.ann without .txt, unknown line kind,
E line without its trigger, missing folder
entity text differs from the .txt            warning; entity not used (reason ``text_mismatch``); the
                                             warning names a BOM, CRLF line endings or a difference
                                             of Unicode normalisation (with code points)
fragments separated by more than whitespace  warning; entity not used (reason ``gap_with_text``)
.txt without .ann                            warning; document not used: an unannotated text read as
                                             all ``O`` would teach the model that its entities are none
hidden files (``.name.txt``)                 not documents (editor and macOS ``._name.txt`` side files)
R, E, A, M, N, # and * lines, triggers       skipped and counted, no warning
==========================================  ======================================================
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .formats import AnnotationFormatError

logger = logging.getLogger(__name__)

NON_ENTITY_LINES = {"R": "relation", "E": "event", "A": "attribute", "M": "attribute", "N": "normalization",
                    "#": "note", "*": "equivalence"}
BOM = "\ufeff"
_OFFSETS = re.compile(r"^[0-9]+ [0-9]+(;[0-9]+ [0-9]+)*$")  # ASCII digits only, as brat writes
_TYPE_AND_OFFSETS = re.compile(r"^(.+?) ([0-9]+ [0-9]+(;[0-9]+ [0-9]+)*)$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # universal newlines, as brat reads .ann and .conf files
EVENT_TRIGGER_POLICIES = ("skip", "include")


class BratFormatError(AnnotationFormatError):
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
    source: str = ""  # where it was read (the .ann, a task of a Label Studio file ...), for messages

    @property
    def lost_all_entities(self) -> bool:
        """The .ann had entities but none is usable (offsets counted without a BOM, say): the text must not
        train as all ``O``. A genuinely empty .ann is a document without entities."""
        return bool(self.rejected) and not self.entities


def read_document(txt_path: Path, ann_path: Path, strict: bool = False, event_types: Collection[str] | None = None,
                  event_triggers: str = "skip") -> Document:
    """One document: its text and its text-bound (``T``) annotations, fragments merged (see ``_check_entity``).

    ``event_types``: the ``[events]`` types of the project's ``annotation.conf``, whose ``T`` lines are event
    triggers; ``None`` (no conf): the ``T`` lines that ``E`` lines name as their trigger are. ``event_triggers``:
    ``"skip"`` (counted in ``skipped_lines["event trigger"]``) or ``"include"`` (entities like the others).
    """
    document = Document(txt_path.stem, read_text(txt_path), source=str(ann_path))
    lines = list(enumerate(_LINE_BREAK.split(read_text(ann_path).removeprefix(BOM)), start=1))
    trigger_ids = _event_trigger_ids(lines, ann_path)  # without a conf, these are the triggers
    id_lines: dict[str, int] = {}  # entity id -> line that defined it
    for line_number, line in lines:
        where = f"{ann_path}:{line_number}"
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
        is_trigger = entity.type in event_types if event_types is not None else entity.id in trigger_ids
        if is_trigger and event_triggers == "skip":
            document.skipped_lines["event trigger"] += 1
            continue
        problem = _check_entity(entity, document.text)
        if problem:
            warn(f"{where}: {problem[1]}; entity {entity.id} not used", strict)
            document.rejected[(problem[0], entity.type)] += 1
            continue
        document.entities.append(entity)
    return document


def _event_trigger_ids(lines: list[tuple[int, str]], ann_path: Path) -> set[str]:
    """Ids of the ``T`` lines that ``E`` lines name as their trigger (``E1<TAB>Binding:T3 Theme:T1``)."""
    trigger_ids = set()
    for line_number, line in lines:
        if line.startswith("E"):
            fields = line.split("\t")
            trigger = fields[1].split(" ", 1)[0].partition(":")[2] if len(fields) > 1 else ""
            if not trigger:
                raise BratFormatError(f"{ann_path}:{line_number}: expected 'ID<TAB>TYPE:TRIGGER [ROLE:ID ...]', "
                                      f"got {line[:80]!r}")
            trigger_ids.add(trigger)
    return trigger_ids


def _offset_hint(text: str) -> str:
    """Why offsets may have been counted differently from brat, for a text-mismatch warning."""
    if text.startswith(BOM):
        return " (the .txt starts with a byte-order mark, which brat counts as character 0)"
    if "\r\n" in text:
        return " (the .txt has CRLF line endings, which brat counts as two characters)"
    if not unicodedata.is_normalized("NFC", text):
        return (" (the .txt is not in Unicode NFC form: offsets counted on a normalised copy of it differ from "
                "brat's)")
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


@dataclass(frozen=True)
class AnnotationConf:
    """The text-bound types of a brat ``annotation.conf``, as brat reads it (``projectconfig.py``), each sorted:
    ``entity_types`` of ``[entities]`` (or its older name ``[spans]``), ``event_types`` of ``[events]`` (their
    ``T`` lines are event triggers), and the ``abstract_types`` (``!Type``) of both, which annotators cannot
    use: they only group the types nested under them."""

    path: Path
    entity_types: tuple[str, ...]
    event_types: tuple[str, ...]
    abstract_types: tuple[str, ...]


_CONF_SECTIONS = {"entities": "entities", "spans": "entities", "events": "events"}  # the text-bound ones
_CONF_SECTION = re.compile(r"^\s*\[(.*)\]\s*$")
_CONF_SEPARATOR = re.compile(r"^\s*-+\s*$")
_CONF_MACRO = re.compile(r"^<[a-zA-Z_-]+>=")


def read_annotation_conf(path: Path) -> AnnotationConf:
    """Every non-abstract type at any depth of the hierarchy (indentation) is a type of its section; a type is
    the first term of its line, up to whitespace or ``|`` (``Type | Display name``, ``Binding Theme:Protein``:
    the rest are aliases or arguments). Comments (``#``), blank lines, separators (``-----``) and macro
    definitions (``<NAME>=A|B``) are not types, nor are ``[relations]`` and ``[attributes]``."""
    types = {"entities": {}, "events": {}, "abstract": {}}  # dicts: ordered and without duplicates
    section = None  # lines before the first section header, and in other sections, declare no text-bound type
    for line in _LINE_BREAK.split(read_text(path).removeprefix(BOM)):
        header = _CONF_SECTION.match(line)
        if header:
            section = _CONF_SECTIONS.get(header[1])
            continue
        line = line.strip()
        if section is None or not line or line.startswith("#") or _CONF_SEPARATOR.match(line) \
                or _CONF_MACRO.match(line):
            continue
        name = re.split(r"[\s|]", line, maxsplit=1)[0]
        if name.startswith("!"):
            types["abstract"][name[1:]] = None
        else:
            types[section][name] = None
    return AnnotationConf(path, *(tuple(sorted(types[kind])) for kind in ("entities", "events", "abstract")))


def find_documents(folder: Path, strict: bool = False) -> list[tuple[Path, Path]]:
    """(txt, ann) pairs of a folder, sorted by document id."""
    txt_ids = {path.stem for path in files_with_suffix(folder, ".txt")}
    ann_ids = {path.stem for path in files_with_suffix(folder, ".ann")}
    for document_id in sorted(ann_ids - txt_ids):
        raise BratFormatError(f"{folder / (document_id + '.ann')}: no matching {document_id}.txt"
                              f"{_suffix_case_hint(folder, document_id + '.txt')}")
    for txt_path in texts_without_annotations(folder):
        warn(f"{txt_path}: no matching .ann; document not used"
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
        spaced = _TYPE_AND_OFFSETS.match(fields[1])
        if spaced:
            raise BratFormatError(f"{where}: entity {entity_id} has type {spaced[1]!r}, but brat type names cannot "
                                  f"contain spaces (brat itself would store {spaced[1].replace(' ', '_')!r})")
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
        message = f"text {entity.text!r} differs from the .txt at its offsets ({covered!r})"
        if unicodedata.normalize("NFC", covered) == unicodedata.normalize("NFC", entity.text):
            message += (f" only in Unicode normalisation (NFC vs NFD): .ann {_code_points(entity.text)}, "
                        f".txt {_code_points(covered)}")
        else:
            message += _offset_hint(text)
        return "text_mismatch", message
    for (_, gap_start), (gap_end, _) in zip(entity.fragments, entity.fragments[1:]):
        if text[gap_start:gap_end].strip():
            return "gap_with_text", f"fragments are separated by text {text[gap_start:gap_end]!r}"
    return None


def _code_points(text: str, limit: int = 12) -> str:
    """``U+0065 U+0301``: what two strings that look the same are made of."""
    points = " ".join(f"U+{ord(character):04X}" for character in text[:limit])
    return points + (" ..." if len(text) > limit else "")


def warn(message: str, strict: bool) -> None:
    """A problem that costs an entity or a document: logged, or with ``strict`` an error."""
    if strict:
        raise BratFormatError(message)
    logger.warning(message)
