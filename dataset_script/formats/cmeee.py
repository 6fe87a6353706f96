"""CMeEE-style JSON (CBLUE's Chinese medical NER benchmark): a list of ``{"text", "entities": [{"start_idx",
"end_idx", "type", "entity"}]}``, where ``end_idx`` is the entity's last character (an inclusive end, unlike
brat's) and entities may nest. Offsets count code points (the benchmark's tooling is Python); ``entity`` is
checked against the text. A record without ``entities`` (CMeEE's unlabelled test file) is not a document. The
document id is the record's ``document_id`` (what the writer stores), else ``{file stem}-{index}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..brat import Document, warn
from . import AnnotationFormatError, OffsetConverter
from .records import add_entity, check_unique_ids, read_json, record_id, record_text

SUFFIXES = (".json",)
DEFAULT_OFFSET_UNIT = "code_point"


def is_cmeee(value) -> bool:
    """Whether a file's JSON value looks like CMeEE: records whose entities have ``start_idx``."""
    records = value if isinstance(value, list) else []
    return any(isinstance(record, dict) and isinstance(record.get("entities"), list) and record["entities"]
               and isinstance(record["entities"][0], dict) and "start_idx" in record["entities"][0]
               for record in records)


def read(path: Path, strict: bool = False, offset_unit: str = DEFAULT_OFFSET_UNIT) -> list[Document]:
    records = read_json(path)
    if not isinstance(records, list):
        raise AnnotationFormatError(f"{path}: expected a list of CMeEE records")
    documents = []
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        text = record_text(record, where)
        if "entities" not in record:
            warn(f"{where}: no 'entities'; record not used (its text would train as all O)", strict)
            continue
        document = Document(record_id(record, ("document_id",), path, index), text, source=where)
        offsets = OffsetConverter(text, offset_unit)
        for entity in record["entities"]:
            if not isinstance(entity, dict) or not isinstance(entity.get("end_idx"), int):
                raise AnnotationFormatError(f"{where}: expected entities as objects with 'start_idx', 'end_idx' "
                                            f"(inclusive) and 'type', got {entity!r}")
            add_entity(document, entity.get("type"), entity.get("start_idx"), entity["end_idx"] + 1, where, offsets,
                       entity.get("entity"), strict)
        documents.append(document)
    return check_unique_ids(documents)


def write(documents: list[Document], offset_unit: str = DEFAULT_OFFSET_UNIT):
    """The documents as CMeEE records (inclusive ends); nothing lost."""
    records = []
    for document in documents:
        offsets = OffsetConverter(document.text, offset_unit)
        entities = [{"start_idx": offsets.from_characters(e.start), "end_idx": offsets.from_characters(e.end) - 1,
                     "type": e.type, "entity": document.text[e.start:e.end]} for e in document.entities]
        records.append({"text": document.text, "entities": entities, "document_id": document.document_id})
    return json.dumps(records, ensure_ascii=False, indent=1) + "\n", {}
