"""Text <-> model positions: characters to vocabulary ids, windows, BIO tags to spans, brat output.

One model position per character (or per non-blank character, with ``skip_blanks``), so that an entity's first and
last characters are positions of their own and offsets survive text -> tags -> text exactly. Shared by the dataset
builder, training, predict.py and the pipeline (``pipeline_bert_bilstm_crf.py``); it travels in every model folder
with them, and imports the standard library only.
"""

import unicodedata

WINDOWS_VERSION = 1
"""The version of what ``split_into_windows`` and ``window_context`` return for given arguments: part of the dataset
builder's cache key, so bump it when a change to them changes a window (a cached corpus is then built anew)."""
WHITESPACE_TOKEN = "[unused1]"
"""Every blank character (see ``is_blank``) is fed as this one vocabulary entry. Whitespace is frequent in
extracted text and sits inside entities that cross line breaks, where it is tagged ``I-X`` like its neighbours: fed as a
position of its own, or (``skip_blanks``) given none and tagged from its neighbours afterwards, never dropped from
the offsets as BERT's tokenizer drops it."""


def is_blank(character: str) -> bool:
    """Whitespace (space, line break, tab, ideographic space ...) or an invisible format character (Unicode
    category Cf: byte-order mark, zero-width space, joiners, soft hyphen): no text of its own, so it is fed as
    ``WHITESPACE_TOKEN`` rather than as an unknown character, and never starts or ends a predicted entity."""
    return character.isspace() or unicodedata.category(character) == "Cf"


# Where a window may end, best first (``split_into_windows``). Prediction knows no entities: sentence ends, then
# clause separators, then line breaks, which in text extracted from PDFs (the Ruijin corpus) wrap lines inside
# words (how many entities cross one: docs/experiments.md, "Figures behind the code's choices").
PREDICTION_CUTS = (frozenset("。！？；!?;"), frozenset("，,、"), frozenset("\n"))


class CharacterEncoder:
    """Vocabulary ids for characters, exactly one per character fed to the model.

    A character is fed as itself, else as its lower case (bert-base-chinese has Latin letters in lower case
    only), else as its NFKC form in lower case (full-width ``Ａ１`` -> ``a1``), each only if that is one
    character of the vocabulary, else as the unknown token; blanks (``is_blank``) as ``WHITESPACE_TOKEN``, or,
    with ``skip_blanks`` (the model config's), not at all. Ids are memoised per character: a corpus has millions
    of characters but only a few thousand distinct ones.
    """

    def __init__(self, tokenizer, skip_blanks: bool = False):
        self.vocab = tokenizer.get_vocab()
        self.unk_token = tokenizer.unk_token
        self.cls_token_id = tokenizer.cls_token_id
        self.sep_token_id = tokenizer.sep_token_id
        self.skip_blanks = skip_blanks
        self._ids: dict[str, int] = {}

    def fed(self, characters) -> list[str]:
        """The characters that get a model position: all of them, or all but the blanks with ``skip_blanks``."""
        return [character for character in characters if not (self.skip_blanks and is_blank(character))]

    def token(self, character: str) -> str:
        if is_blank(character):
            return WHITESPACE_TOKEN
        for candidate in (character, character.lower(), unicodedata.normalize("NFKC", character).lower()):
            if len(candidate) == 1 and candidate in self.vocab:
                return candidate
        return self.unk_token

    def ids(self, characters) -> list[int]:
        ids = self._ids
        for character in set(characters) - ids.keys():
            ids[character] = self.vocab[self.token(character)]
        return [ids[character] for character in characters]

    def window_ids(self, characters, context_before="", context_after="") -> list[int]:
        """Model input of a window: [CLS], one id per fed character (``fed``) of the context before, the window
        and the context after, [SEP]."""
        before, window, after = self.fed(context_before), self.fed(characters), self.fed(context_after)
        return [self.cls_token_id, *self.ids(before), *self.ids(window), *self.ids(after), self.sep_token_id]


def window_fit_problem(window_chars: int, max_position_embeddings: int, name: str = "window_chars") -> str | None:
    """A window is fed as [CLS] + its characters + [SEP]: why the encoder has no positions for one of
    ``window_chars`` characters (None when it has), to refuse it before BERT fails on it deep inside a batch."""
    if not 1 <= window_chars <= max_position_embeddings - 2:
        return (f"{name} must be between 1 and {max_position_embeddings - 2} (the encoder has "
                f"{max_position_embeddings} positions, two of them for [CLS] and [SEP]), got {window_chars}")
    return None


def split_into_windows(text: str, window_chars: int, spans=(), cuts=PREDICTION_CUTS) -> list[tuple[int, int]]:
    """(start, end) windows that cover ``text`` exactly once, in order, each at most ``window_chars`` long.

    A window ends after the last character of the first of the ``cuts`` sets that it can reach (best first:
    ``PREDICTION_CUTS``, or the dataset builder's ``TRAINING_CUTS``), else at the last position it can reach. It
    never ends inside one of the ``(start, end)`` ``spans`` (the entities of a training document) unless a span is
    longer than a window, when the cut is unavoidable (the dataset builder counts such cuts).
    """
    if window_chars < 1:
        raise ValueError(f"window_chars must be positive, got {window_chars}")
    blocked = bytearray(len(text) + 1)  # blocked[c]: a cut before character c would split a span
    for start, end in spans:
        end = min(end, len(text))
        blocked[start + 1 : end] = b"\x01" * max(end - start - 1, 0)
    windows, start = [], 0
    while start < len(text):
        limit = min(start + window_chars, len(text))
        windows.append((start, limit if limit == len(text) else _best_cut(text, start, limit, blocked, cuts)))
        start = windows[-1][1]
    return windows


def window_context(text: str, start: int, end: int, context_chars: int) -> tuple[str, str]:
    """Up to ``context_chars`` characters of ``text`` before ``start`` and after ``end``: what the encoder sees
    around the window ``text[start:end]`` (fewer at the ends of the text)."""
    return text[max(start - context_chars, 0) : start], text[end : end + context_chars]


def _best_cut(text: str, start: int, limit: int, blocked: bytearray, cuts) -> int:
    allowed = [cut for cut in range(limit, start, -1) if not blocked[cut]]
    for ends in cuts:
        for cut in allowed:
            if text[cut - 1] in ends:
                return cut
    return allowed[0] if allowed else limit


def tags_with_blanks(text: str, tags: list[str]) -> tuple[list[str], list[int]]:
    """Per-character tags of ``text`` from the tags of its non-blank characters (a ``skip_blanks`` model's
    output), and for each character the index of the tag it took: a blank between two characters of one entity
    (the one after it tagged ``I-X``, continuing the one before it) is ``I-X`` and takes the tag after it, any
    other blank is ``O`` (index -1). Entities then read as the model meant them: an entity never begins or ends
    on a blank."""
    blanks = [is_blank(character) for character in text]
    if len(blanks) - sum(blanks) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(blanks) - sum(blanks)} non-blank characters")
    full, source, position = [], [], 0
    for blank in blanks:
        if not blank:
            full.append(tags[position])
            source.append(position)
            position += 1
            continue
        after = tags[position] if position < len(tags) else "O"
        before = full[-1] if full else "O"
        inside = after.startswith("I-") and before[2:] == after[2:] and before != "O"
        full.append(after if inside else "O")
        source.append(position if inside else -1)
    return full, source


def bio_to_spans(tags, offset: int = 0) -> list[tuple[str, int, int]]:
    """``(type, start + offset, end + offset)`` spans of BIO tags, end exclusive. An ``I-X`` that continues no
    ``X`` entity starts one, as seqeval's default mode reads it."""
    spans, current = [], None  # current: [type, start] of the open entity
    for position, tag in enumerate([*tags, "O"]):
        prefix, entity_type = tag[:2], tag[2:]
        if current and (prefix != "I-" or entity_type != current[0]):
            spans.append((current[0], current[1] + offset, position + offset))
            current = None
        if prefix == "B-" or (prefix == "I-" and current is None):
            current = [entity_type, position]
    return spans

def brat_annotations(text: str, entities: list[dict], confidence: bool = False) -> str:
    """The brat .ann text of a text's entities (the pipeline's dicts): one ``T`` line per entity, split into
    fragments at line breaks (brat's rule, kept by the Ruijin corpus); with ``confidence``,
    each followed by an ``AnnotatorNotes`` line holding the entity's score (brat shows it on the entity)."""
    lines = []
    for number, entity in enumerate(entities, start=1):
        fragments = line_fragments(text, entity["start"], entity["end"])
        offsets = ";".join(f"{start} {end}" for start, end in fragments)
        covered = " ".join(text[start:end] for start, end in fragments)
        lines.append(f"T{number}\t{entity['entity_group']} {offsets}\t{covered}\n")
        if confidence:
            lines.append(f"#{number}\tAnnotatorNotes T{number}\tconfidence {entity['score']:.2f}\n")
    return "".join(lines)


def line_fragments(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) pieces of ``text[start:end]`` between line-break characters."""
    fragments, fragment_start = [], start
    for position in range(start, end):
        if text[position] in "\r\n":
            if position > fragment_start:
                fragments.append((fragment_start, position))
            fragment_start = position + 1
    if end > fragment_start:
        fragments.append((fragment_start, end))
    return fragments
