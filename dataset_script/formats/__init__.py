"""Annotation formats besides brat (``dataset_script/brat.py``): Label Studio, doccano, CoNLL/BIO columns and
CMeEE JSON, each a module of its own that reads files into the documents the builder uses (``brat.Document``:
text, entity spans, id) and writes documents back; ``registry`` detects a corpus' format and reads or writes any
of them.

What the formats share lives here: the one error for a malformed annotation file of any format, and offsets in
the unit a tool counts. Python counts code points; a JavaScript front end (doccano, Label Studio before its fix)
counts UTF-16 code units, in which a character outside the Basic Multilingual Plane (CJK Extension B such as
U+20000, emoji) is two units. ``OffsetConverter`` moves offsets between the two, so that every entity lands on
its character whichever unit its file counted in.
"""

from __future__ import annotations

from itertools import accumulate

FORMATS = ("brat", "labelstudio", "doccano", "conll", "cmeee")  # the modules of ``registry``
OFFSET_UNITS = ("code_point", "utf16")


class AnnotationFormatError(ValueError):
    """An annotation file (of any format) that cannot be read correctly; the message names the file and the place
    in it (line, task, record)."""


class OffsetConverter:
    """The offsets of one text in ``unit`` (``"code_point"``: Python's characters, or ``"utf16"``: JavaScript's
    string indices) to characters and back."""

    def __init__(self, text: str, unit: str):
        if unit not in OFFSET_UNITS:
            raise ValueError(f"offset unit must be one of {', '.join(OFFSET_UNITS)}, got {unit!r}")
        wide = unit == "utf16" and any(ord(character) > 0xFFFF for character in text)
        # units[i]: the offset of character i in the tool's unit (only kept when the units differ).
        self._units = list(accumulate((2 if ord(c) > 0xFFFF else 1 for c in text), initial=0)) if wide else None
        self._characters = {units: index for index, units in enumerate(self._units)} if wide else None
        self.length = len(text)

    def to_characters(self, offset: int) -> int | None:
        """The character offset of ``offset``; None when it is beyond the text or splits a surrogate pair."""
        if self._characters is None:
            return offset if 0 <= offset <= self.length else None
        return self._characters.get(offset)

    def from_characters(self, offset: int) -> int:
        return offset if self._units is None else self._units[offset]
