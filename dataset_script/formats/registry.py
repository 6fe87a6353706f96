"""Every annotation format by name: which one a file or folder holds, its documents, and documents written in
any of them. ``brat`` is a folder of ``.txt`` + ``.ann`` files (``dataset_script/brat.py``); every other format
is one or more files (``SUFFIXES``) of one format, in a folder or given alone.

Detection: a folder with ``.txt``/``.ann`` files is brat; ``.jsonl`` is doccano; ``.conll``/``.bio``/``.iob``/
``.bmes`` are CoNLL; a ``.json`` file is Label Studio (tasks with ``data``, or JSON_MIN records with spans
under ``labels``), CMeEE (entities with ``start_idx``) or doccano (``label`` lists of ``[start, end, type]``)
as its first records say. A file that fits none, or a folder mixing formats, is refused naming what was
expected; ``data_format`` names the format where detection cannot tell (a file of records without any entity).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from processing_bert_bilstm_crf import brat_annotations

from .. import brat
from ..brat import Document
from . import AnnotationFormatError, cmeee, conll, doccano, labelstudio
from .records import check_unique_ids, read_json

FORMAT_MODULES = {"labelstudio": labelstudio, "doccano": doccano, "conll": conll, "cmeee": cmeee}  # brat's: brat.py
EXPECTED = ("brat .txt + .ann files, Label Studio JSON (tasks with 'data' and 'annotations'), doccano JSONL "
            "({'text', 'label': [[start, end, type]]}), CoNLL .conll/.bio files ('CHARACTER TAG' lines) or CMeEE JSON "
            "({'text', 'entities': [{'start_idx', 'end_idx', 'type'}]})")
FILE_SUFFIXES = (".json", *doccano.SUFFIXES, *conll.SUFFIXES)


def default_offset_unit(data_format: str) -> str:
    return FORMAT_MODULES[data_format].DEFAULT_OFFSET_UNIT if data_format in FORMAT_MODULES else "code_point"


def annotation_files(folder: Path) -> list[Path]:
    """The files of a folder that may hold annotations of a format other than brat, sorted, hidden ones aside."""
    return [path for path in sorted(folder.iterdir()) if path.is_file() and path.suffix in FILE_SUFFIXES
            and not path.name.startswith(".")]


def has_annotation_files(folder: Path) -> bool:
    """Whether the folder itself holds documents of some format (rather than split folders of them)."""
    return brat.has_brat_files(folder) or bool(annotation_files(folder))


def detect_format(path: Path) -> str:
    """The format of a file or folder (see the module's docstring); refused in one line when none fits."""
    if path.is_dir():
        if brat.has_brat_files(path):
            return "brat"
        formats = {file: detect_format(file) for file in annotation_files(path)}
        if not formats:
            raise AnnotationFormatError(f"{path}: no annotation files; expected {EXPECTED}")
        if len(set(formats.values())) > 1:
            mixed = ", ".join(f"{file.name} ({found})" for file, found in list(formats.items())[:4])
            raise AnnotationFormatError(f"{path}: holds files of different formats ({mixed}); give one format per "
                                        "folder")
        return next(iter(formats.values()))
    if not path.is_file():
        raise AnnotationFormatError(f"{path}: no such file or folder")
    if path.suffix in doccano.SUFFIXES:
        return "doccano"
    if path.suffix in conll.SUFFIXES:
        return "conll"
    if path.suffix == ".json":
        value = read_json(path)
        if labelstudio.is_labelstudio(value):
            return "labelstudio"
        if cmeee.is_cmeee(value):
            return "cmeee"
        first = value[0] if isinstance(value, list) and value else None
        if isinstance(first, dict) and isinstance(first.get("text"), str) and isinstance(first.get("label"), list):
            return "doccano"
    raise AnnotationFormatError(f"{path}: not an annotation file of a known format (or one without any entity to "
                                f"tell it by: give the format); expected {EXPECTED}")


def source_files(path: Path, data_format: str) -> list[Path]:
    """The files a corpus of ``data_format`` at ``path`` (a file, or a folder of them) is read from."""
    if data_format == "brat":  # the .txt and .ann of each document (``find_documents`` without its warnings)
        annotated = {file.stem for file in brat.files_with_suffix(path, ".ann")}
        return [file for txt in brat.files_with_suffix(path, ".txt") if txt.stem in annotated
                for file in (txt, txt.with_suffix(".ann"))]
    if path.is_file():
        return [path]
    suffixes = FORMAT_MODULES[data_format].SUFFIXES
    return [file for file in annotation_files(path) if file.suffix in suffixes]


def read_documents(path: Path, data_format: str | None = None, strict: bool = False, offset_unit: str | None = None,
                   event_types: Collection[str] | None = None, event_triggers: str = "skip") -> list[Document]:
    """The documents of a file or folder (not of split folders) of ``data_format`` (None: detected), sorted by id.
    ``offset_unit``: the unit the file's offsets count (None: the format's own, ``default_offset_unit``);
    ``event_types``/``event_triggers``: brat's (``brat.read_document``)."""
    data_format = data_format or detect_format(path)
    if data_format == "brat":
        return [brat.read_document(txt, ann, strict, event_types, event_triggers)
                for txt, ann in brat.find_documents(path, strict)]
    module = FORMAT_MODULES[data_format]
    files = source_files(path, data_format)
    if not files:
        raise AnnotationFormatError(f"{path}: no {data_format} files ({', '.join(module.SUFFIXES)})")
    documents = [document for file in files
                 for document in module.read(file, strict, offset_unit or module.DEFAULT_OFFSET_UNIT)]
    return sorted(check_unique_ids(documents), key=lambda document: document.document_id)


def check_file_name(document_id: str, source: str) -> None:
    """A document id that becomes a file name (brat's ``ID.txt``/``ID.ann``) must be a plain name: an id read
    from a file of another format (``../notes``, ``a/b``) must not write outside the output folder, nor hide it."""
    if not document_id or document_id.startswith(".") or any(c in document_id for c in "/\\\0"):
        raise AnnotationFormatError(f"{source}: document id {document_id!r} cannot be a brat file name (empty, "
                                    "starting with '.', or holding a path separator)")


def write_documents(documents: list[Document], data_format: str, name: str = "corpus",
                    offset_unit: str | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """The files (name -> content) that hold ``documents`` in ``data_format`` (brat: a ``.txt`` and an ``.ann``
    per document; the others: ``name`` with the format's suffix), and what the format could not hold (kind ->
    count; CoNLL's losses)."""
    if data_format == "brat":
        files = {}
        for document in documents:
            check_file_name(document.document_id, document.source)
            files[f"{document.document_id}.txt"] = document.text
            files[f"{document.document_id}.ann"] = brat_annotations(document.text, [
                {"entity_group": entity.type, "start": entity.start, "end": entity.end}
                for entity in document.entities])
        return files, {}
    module = FORMAT_MODULES[data_format]
    content, losses = module.write(documents, offset_unit or module.DEFAULT_OFFSET_UNIT)
    return {f"{name}{module.SUFFIXES[0]}": content}, losses
