"""doccano's sequence-labelling JSON Lines: one document per line, ``{"text", "label": [[start, end, type]]}``,
or in its relation mode ``{"text", "entities": [{"id", "label", "start_offset", "end_offset"}], "relations"}``
(relations are counted in ``skipped_lines``, not read). End offsets are exclusive.

Offsets: doccano's editor counts UTF-16 code units, as JavaScript indexes strings (doccano issue 2290: "label
indices (start and end) are as in TypeScript/JavaScript"; with its "count grapheme clusters as one character"
project option it counts grapheme clusters, which no file says and this reader does not read). A doccano file
stores no entity text to check the unit against, and one written by a Python tool counts code points: the two
readings differ only after a character outside the BMP. ``offset_unit`` says which; the default is doccano's own.

The document id is the line's ``document_id`` (what the writer stores; doccano keeps unknown fields as metadata),
else its ``id``, else ``{file stem}-{line number}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..brat import Document
from . import AnnotationFormatError, OffsetConverter
from .records import add_entity, check_unique_ids, read_json_lines, record_id, record_text

SUFFIXES = (".jsonl",)
DEFAULT_OFFSET_UNIT = "utf16"


def read(path: Path, strict: bool = False, offset_unit: str = DEFAULT_OFFSET_UNIT) -> list[Document]:
    documents = []
    for line_number, record in read_json_lines(path):
        where = f"{path}:{line_number}"
        document = Document(record_id(record, ("document_id", "id"), path, line_number) if isinstance(record, dict)
                            else "", record_text(record, where), source=where)
        offsets = OffsetConverter(document.text, offset_unit)
        if isinstance(record.get("entities"), list):
            for entity in record["entities"]:
                if not isinstance(entity, dict):
                    raise AnnotationFormatError(f"{where}: expected entities as objects with 'start_offset', "
                                                f"'end_offset' and 'label', got {entity!r}")
                add_entity(document, entity.get("label"), entity.get("start_offset"), entity.get("end_offset"),
                           where, offsets, strict=strict)
            document.skipped_lines["relation"] += len(record.get("relations") or [])
        else:
            for span in record.get("label", []):
                if not isinstance(span, list) or len(span) != 3:
                    raise AnnotationFormatError(f"{where}: expected labels as [start, end, type], got {span!r}")
                add_entity(document, span[2], span[0], span[1], where, offsets, strict=strict)
        documents.append(document)
    return check_unique_ids(documents)


def write(documents: list[Document], offset_unit: str = DEFAULT_OFFSET_UNIT):
    """One JSON line per document; nothing lost."""
    lines = []
    for document in documents:
        offsets = OffsetConverter(document.text, offset_unit)
        spans = [[offsets.from_characters(e.start), offsets.from_characters(e.end), e.type] for e in document.entities]
        lines.append(json.dumps({"text": document.text, "label": spans, "document_id": document.document_id},
                                ensure_ascii=False))
    return "".join(line + "\n" for line in lines), {}
