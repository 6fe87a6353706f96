"""Character-level CoNLL (BIO column) files: one character and its tag per line (``糖 B-Disease``; the tag is the
last column, separated by spaces or tabs), a blank line after each line of the text. ``-DOCSTART- -X- ID O``
lines begin documents (CoNLL-2003's marker, with the document id in its third column); a file without them is
one document per sentence, ``{file stem}-{n}``. Tags may be BIO, IOB2 or BIOES/BMES (``S-`` reads as ``B-``,
``M-``/``E-`` as ``I-``).

What the format cannot hold, counted by ``write`` (``losses``) rather than dropped silently:

* blanks inside a line (spaces, tabs, ``\\r``, U+3000, format characters: ``is_blank``): a blank cannot be a
  token line, so the text read back lacks them and later offsets move left by one for each. Line breaks are
  restored: each is the blank line after a line of text (an empty line of text is a blank line of its own).
* overlapping and nested entities (one tag per character): BIO keeps the longest (``spans_to_bio``).
* an entity that starts or ends on a blank: it comes back without that blank.

An entity crossing a line break continues with ``I-`` on the next sentence, and reads back across it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from processing_bert_bilstm_crf import bio_to_spans, is_blank

from ..brat import Document, Entity, read_text
from . import AnnotationFormatError

SUFFIXES = (".conll", ".bio", ".iob", ".bmes")
DEFAULT_OFFSET_UNIT = "code_point"
DOCUMENT_START = "-DOCSTART-"
_TAG = re.compile(r"^(O|[BIMES]-.+)$")
_TAG_READ_AS = {"S": "B", "M": "I", "E": "I"}


def read(path: Path, strict: bool = False, offset_unit: str = DEFAULT_OFFSET_UNIT) -> list[Document]:
    documents, has_starts = [], False
    lines, start_line, document_id = [], 1, None  # of the document being read

    def finish():
        if lines or document_id is not None:
            documents.append(_document(lines, document_id or f"{path.stem.replace('_', '-')}-{len(documents)}",
                                       f"{path}:{start_line}", has_starts))

    file_lines = read_text(path).split("\n")
    if file_lines[-1] == "":  # the end of the last line, not a blank line
        file_lines.pop()
    for line_number, line in enumerate(file_lines, start=1):
        line = line.rstrip("\r")
        columns = line.split()
        if columns and columns[0] == DOCUMENT_START:
            finish()
            has_starts, lines, start_line = True, [], line_number
            ids = [column for column in columns[1:] if column not in ("-X-", "O")]
            document_id = ids[0] if ids else f"{path.stem.replace('_', '-')}-{len(documents)}"
            continue
        if not columns:
            if has_starts:
                lines.append((line_number, None))
            elif lines:  # without document markers, each sentence is a document
                finish()
                lines, start_line = [], line_number + 1
            continue
        if len(columns) < 2 or not _TAG.match(columns[-1]):
            raise AnnotationFormatError(f"{path}:{line_number}: expected 'CHARACTER TAG' (tag O, B-X or I-X), got "
                                        f"{line[:80]!r}")
        lines.append((line_number, (columns[0], columns[-1])))
    finish()
    return documents


def _document(lines: list, document_id: str, where: str, has_starts: bool) -> Document:
    """A document from its token lines (None for a blank line: the end of a line of text)."""
    if has_starts:  # CoNLL-2003 puts a blank line right after -DOCSTART-
        lines = lines[1:] if lines and lines[0][1] is None else lines
    characters, tags = [], []
    for index, (_, token) in enumerate(lines):
        if token is None:
            if index < len(lines) - 1:
                characters.append("\n")
                tags.append(None)  # decided from its neighbours below
            continue
        word, tag = token
        prefix, _, entity_type = tag.partition("-")
        prefix = _TAG_READ_AS.get(prefix, prefix)
        for position, character in enumerate(word):
            characters.append(character)
            tags.append("O" if prefix == "O" else f"{'I' if position else prefix}-{entity_type}")
    for index, tag in enumerate(tags):  # a line break inside an entity (I-X on both sides) belongs to it
        if tag is None:
            before = next((t for t in reversed(tags[:index]) if t is not None), "O")
            after = next((t for t in tags[index + 1:] if t is not None), "O")
            tags[index] = after if after.startswith("I-") and before[2:] == after[2:] and before != "O" else "O"
    text = "".join(characters)
    document = Document(document_id, text, source=where)
    for number, (entity_type, start, end) in enumerate(bio_to_spans(tags), start=1):
        document.entities.append(Entity(f"T{number}", entity_type, start, end, text[start:end], [(start, end)]))
    return document


def write(documents: list[Document], offset_unit: str = DEFAULT_OFFSET_UNIT):
    """The documents as CoNLL lines, and what could not be written (``losses``: kind -> count)."""
    # The one BIO encoder is the builder's; imported here because the builder imports every format (a cycle).
    from ..ruijin_ner import spans_to_bio

    out, losses = [], Counter()
    for document in documents:
        tags, not_encoded = spans_to_bio(len(document.text), [(e.type, e.start, e.end)
                                                                         for e in document.entities])
        losses["overlapping entity"] += len(not_encoded)
        encoded = Counter((e.type, e.start, e.end) for e in document.entities) - Counter(not_encoded)
        losses["entity starting or ending on a blank"] += sum(
            count for (_, start, end), count in encoded.items()
            if is_blank(document.text[start]) or is_blank(document.text[end - 1]))
        out.append(f"{DOCUMENT_START} -X- {document.document_id} O\n\n")
        for character, tag in zip(document.text, tags):
            if character == "\n":
                out.append("\n")
            elif is_blank(character):
                losses["blank character"] += 1
            else:
                out.append(f"{character} {tag}\n")
        out.append("\n")
    return "".join(out), +losses
