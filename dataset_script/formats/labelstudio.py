"""Label Studio: its JSON export (a list of tasks, each ``data`` with the text, ``annotations`` and
``predictions`` holding ``result`` lists) and its ``JSON_MIN`` export (one flat record per task: the data's
fields and, under the labels' name, ``[{"start", "end", "text", "labels"}]``); tasks to documents and back,
predictions with scores, and the labeling config for a set of entity types.

Offsets: Label Studio's editor counts code points since its fix for text with emoji (label-studio-frontend
PR 308, merged 2022; its test "NER - Emoji - Text" checks "offsets by code points"); exports of older versions
count UTF-16 code units (label-studio issue 1347). Each result also stores its ``text``, which the reader checks
against the document: a file counted in the other unit fails that check on every entity after a character
outside the BMP, with a warning saying so (read it with ``offset_unit="utf16"``).

Reading: a task's first annotation that was not cancelled is its document's entities (or, with
``results_from="predictions"``, its first prediction: pre-annotations read back); further annotations (other
annotators) are counted in ``skipped_lines``, and so are results that are not spans (choices, relations ...). A
task without such an annotation is not a document (a warning): its text would train as all ``O``. The document
id is ``data.document_id`` (what the writer stores), else the task's ``id``.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..brat import Document, warn
from . import AnnotationFormatError, OffsetConverter
from .records import add_entity, check_unique_ids, read_json, record_id

SUFFIXES = (".json",)
DEFAULT_OFFSET_UNIT = "code_point"
FROM_NAME, TO_NAME = "label", "text"  # the names of the Labels and Text tags of ``labeling_config``


def is_labelstudio(value) -> bool:
    """Whether a file's JSON value looks like a Label Studio export (JSON or JSON_MIN)."""
    first = value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else {}
    return isinstance(first.get("data"), dict) or bool(_min_label_keys(first))


def read(path: Path, strict: bool = False, offset_unit: str = DEFAULT_OFFSET_UNIT,
         results_from: str = "annotations") -> list[Document]:
    tasks = read_json(path)
    if not isinstance(tasks, list):
        raise AnnotationFormatError(f"{path}: expected a list of Label Studio tasks")
    return tasks_to_documents(tasks, path, strict, offset_unit, results_from)


def tasks_to_documents(tasks: list, path: Path, strict: bool = False, offset_unit: str = DEFAULT_OFFSET_UNIT,
                       results_from: str = "annotations") -> list[Document]:
    """The documents of Label Studio tasks (JSON or JSON_MIN), read from ``path`` (named in messages).
    ``results_from``: ``"annotations"`` (what annotators made: the corpus) or ``"predictions"`` (a model's
    pre-annotations, such as ``predict.py --output_format labelstudio`` writes)."""
    documents = []
    for index, task in enumerate(tasks):
        where = f"{path}: task {index}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        if not isinstance(task, dict):
            raise AnnotationFormatError(f"{where}: expected an object")
        data = task["data"] if isinstance(task.get("data"), dict) else task
        document = Document(record_id(data, ("document_id",), path, index) if "document_id" in data
                            else record_id(task, ("id",), path, index), _task_text(data, where), source=where)
        if "data" in task:
            results = _annotation_results(task, results_from, document, where, strict)
        else:
            results = [{"type": "labels", "value": value} for key in _min_label_keys(task) for value in task[key]]
        if results is None:
            continue
        offsets = OffsetConverter(document.text, offset_unit)
        for number, result in enumerate(results):
            _add_result(document, result, f"{where}, result {number}", offsets, strict)
        documents.append(document)
    return check_unique_ids(documents)


def _task_text(data: dict, where: str) -> str:
    """The text of a task: ``data.text``, else its one string field."""
    if isinstance(data.get("text"), str):
        return data["text"]
    strings = [value for key, value in data.items() if isinstance(value, str) and key != "document_id"]
    if len(strings) != 1:
        raise AnnotationFormatError(f"{where}: no 'text' field in the task's data, and not one string field to take "
                                    f"for it ({len(strings)})")
    return strings[0]


def _min_label_keys(record: dict) -> list[str]:
    """The JSON_MIN fields holding spans: lists of objects with ``start``, ``end`` and ``labels``."""
    return [key for key, value in record.items() if isinstance(value, list) and value
            and all(isinstance(item, dict) and {"start", "end", "labels"} <= set(item) for item in value)]


def _annotation_results(task: dict, results_from: str, document: Document, where: str, strict: bool) -> list | None:
    """The results of the task's first annotation that was not cancelled (or first prediction); None without."""
    if results_from not in ("annotations", "predictions"):
        raise ValueError(f"results_from must be 'annotations' or 'predictions', got {results_from!r}")
    annotations = [annotation for annotation in task.get(results_from) or []
                   if isinstance(annotation, dict) and not annotation.get("was_cancelled")]
    kind = results_from[:-1]
    if not annotations:
        warn(f"{where}: no {kind} (that was not cancelled); task not used (its text would train as all O)", strict)
        return None
    if len(annotations) > 1:
        document.skipped_lines[f"further {kind} of the task"] += len(annotations) - 1
    results = annotations[0].get("result")
    if not isinstance(results, list):
        raise AnnotationFormatError(f"{where}: its {kind} has no 'result' list")
    return results


def _add_result(document: Document, result, where: str, offsets: OffsetConverter, strict: bool) -> None:
    value = result.get("value") if isinstance(result, dict) else None
    if not isinstance(value, dict) or "labels" not in value:
        kind = result.get("type", "unknown") if isinstance(result, dict) else "unknown"
        document.skipped_lines[f"{kind} result"] += 1
        return
    if not isinstance(value["labels"], list) or not value["labels"]:
        raise AnnotationFormatError(f"{where}: 'labels' must be a non-empty list, got {value['labels']!r}")
    for entity_type in value["labels"]:  # a span with two labels is two entities
        add_entity(document, entity_type, value.get("start"), value.get("end"), where, offsets, value.get("text"),
                   strict)


def write(documents: list[Document], offset_unit: str = DEFAULT_OFFSET_UNIT):
    """Label Studio tasks (JSON, for its import) with each document's entities as an annotation; nothing lost."""
    tasks = [task(document.document_id, document.text,
                  annotations=[[(e.type, e.start, e.end, None) for e in document.entities]], offset_unit=offset_unit)
             for document in documents]
    return dumps(tasks), {}


def task(document_id: str, text: str, annotations=(), predictions=(), offset_unit: str = DEFAULT_OFFSET_UNIT) -> dict:
    """One task: ``annotations``, lists of (type, start, end, score or None) spans in characters; ``predictions``,
    dicts made by ``prediction``."""
    offsets = OffsetConverter(text, offset_unit)
    made = {"data": {"text": text, "document_id": document_id}}
    if annotations:
        made["annotations"] = [{"result": results(text, spans, offsets)} for spans in annotations]
    if predictions:
        made["predictions"] = list(predictions)
    return made


def prediction(text: str, spans, score: float | None = None, model_version: str | None = None,
               offset_unit: str = DEFAULT_OFFSET_UNIT) -> dict:
    """A task's prediction: (type, start, end, score) spans in characters, and the task's ``score`` (Label Studio
    sorts tasks by it, so a low score for the least certain task puts it first)."""
    made = {"result": results(text, spans, OffsetConverter(text, offset_unit))}
    if score is not None:
        made["score"] = score
    if model_version is not None:
        made["model_version"] = model_version
    return made


def results(text: str, spans, offsets: OffsetConverter) -> list[dict]:
    """Label Studio ``labels`` results of (type, start, end, score or None) spans given in characters."""
    made = []
    for number, (entity_type, start, end, score) in enumerate(spans, start=1):
        value = {"start": offsets.from_characters(start), "end": offsets.from_characters(end),
                 "text": text[start:end], "labels": [entity_type]}
        result = {"id": f"e{number}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "labels", "value": value}
        if score is not None:
            result["score"] = score
        made.append(result)
    return made


def labeling_config(entity_types) -> str:
    """The labeling config (XML) of a Label Studio project for ``entity_types``, matching the tasks written here.
    Its ``Style`` is the one Label Studio's Text tag documentation gives for keeping every blank as it is
    (otherwise blanks are trimmed when shown and in the results), so offsets count every character."""
    labels = "\n".join(f"    <Label value={quoteattr(entity_type)}/>" for entity_type in entity_types)
    return (f'<View>\n  <Labels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </Labels>\n'
            f'  <Style>.htx-text {{ white-space: pre-wrap; }}</Style>\n'
            f'  <Text name="{TO_NAME}" value="$text" granularity="symbol"/>\n</View>\n')


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1) + "\n"
