"""What the JSON formats (Label Studio, doccano, CMeEE) share: reading a JSON or JSON Lines file into records,
each named by its place for messages, and adding an entity given by offsets to a document, checked as brat's are
(``brat.read_document``): offsets outside the text or reversed are an error naming the place; an entity whose
text, where the format stores it, differs from the document's text at its offsets is a warning and not used."""

from __future__ import annotations

import json
from pathlib import Path

from ..brat import Document, Entity, read_text, warn
from . import AnnotationFormatError, OffsetConverter


def read_json(path: Path):
    """The file's JSON value; a syntax error names the file, line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise AnnotationFormatError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None


def read_json_lines(path: Path) -> list[tuple[int, object]]:
    """(line number, JSON value) for each non-blank line of a JSON Lines file. Lines end at ``\n`` only: JSON
    may hold a raw U+2028 in a string, where ``str.splitlines`` would split."""
    records = []
    for line_number, line in enumerate(read_text(path).split("\n"), start=1):
        if line.strip():
            try:
                records.append((line_number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise AnnotationFormatError(f"{path}:{line_number}: not valid JSON ({error.msg}, column "
                                            f"{error.colno})") from None
    return records


def record_text(record, where: str, key: str = "text") -> str:
    if not isinstance(record, dict) or not isinstance(record.get(key), str):
        raise AnnotationFormatError(f"{where}: expected an object with a {key!r} string")
    return record[key]


def add_entity(document: Document, entity_type, start, end, where: str, offsets: OffsetConverter,
               text: str | None = None, strict: bool = False) -> None:
    """The entity ``start``..``end`` (end exclusive, in ``offsets``' unit) of ``entity_type``, with the ``text``
    the file stores for it if any. ``where`` names the place in the file."""
    if not isinstance(entity_type, str) or not entity_type:
        raise AnnotationFormatError(f"{where}: entity without a type (a non-empty string): {entity_type!r}")
    if not all(isinstance(offset, int) and not isinstance(offset, bool) for offset in (start, end)):
        raise AnnotationFormatError(f"{where}: offsets must be whole numbers, got {start!r} {end!r}")
    first, last = offsets.to_characters(start), offsets.to_characters(end)
    if first is None or last is None:
        raise AnnotationFormatError(f"{where}: offsets {start} {end} are beyond the text ({offsets.length} "
                                    "characters) or inside a character")
    if first >= last:
        raise AnnotationFormatError(f"{where}: empty or reversed entity {start} {end}")
    covered = document.text[first:last]
    if text is not None and text != covered:
        hint = ""
        if any(ord(character) > 0xFFFF for character in document.text[:last]):
            hint = (" (the text has characters outside the BMP before it: were the offsets counted in the other unit, "
                    "code points or UTF-16?)")
        warn(f"{where}: text {text!r} differs from the document's text at its offsets ({covered!r}){hint}; entity "
             "not used", strict)
        document.rejected[("text_mismatch", entity_type)] += 1
        return
    entity_id = f"T{len(document.entities) + sum(document.rejected.values()) + 1}"
    document.entities.append(Entity(entity_id, entity_type, first, last, covered, [(first, last)]))


def record_id(record: dict, keys: tuple[str, ...], path: Path, index: int) -> str:
    """A record's document id: the first of ``keys`` it has, else ``{file stem}-{index}``. The stem's ``_`` become
    ``-``: the builder's split by group takes an id up to its first ``_`` (``123`` for ``123_4``), and records
    that carry no id of their own must not all fall into one group named after their file."""
    for key in keys:
        if isinstance(record.get(key), (str, int)) and not isinstance(record.get(key), bool):
            return str(record[key])
    return f"{path.stem.replace('_', '-')}-{index}"


def check_unique_ids(documents: list[Document]) -> list[Document]:
    seen = {}
    for document in documents:
        if document.document_id in seen:
            raise AnnotationFormatError(f"{document.source}: document id {document.document_id!r} is already used by "
                                        f"{seen[document.document_id]}")
        seen[document.document_id] = document.source
    return documents
