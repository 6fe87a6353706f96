"""The Ruijin diabetes NER corpus, or any corpus in an annotation format (brat, Label Studio, doccano, CoNLL, CMeEE:
``formats.registry``), as a Hugging Face ``datasets`` builder.

    from dataset_script import ruijin_ner
    corpus = ruijin_ner.load("../shared/data/ruijin_round1/train")          # DatasetDict, config "bio"
    documents = ruijin_ner.load("data/sample", name="brat")
    corpus, stats = ruijin_ner.load("data/sample", return_stats=True); print(stats.format())

datasets >= 4 no longer runs loading scripts through ``load_dataset(path)``, so ``load`` drives the builder
directly (``download_and_prepare`` then ``as_dataset``). The result is an ordinary ``DatasetDict``:
``corpus.push_to_hub(repo_id)`` publishes it as Parquet with its ClassLabel features.

Configs:

* ``bio`` (default): one example per window of at most ``window_chars`` characters: ``id``
  (``{document_id}-{window_index}``), ``document_id``, ``offset`` (of the window's first character in the
  .txt), ``tokens`` (one entry per character, whitespace included) and ``ner_tags`` (ClassLabel: ``O``, then
  ``B-X``, ``I-X`` per type). Overlapping entities: see ``spans_to_bio`` (longest first; the others are
  counted as dropped). An entity that a window boundary cuts (only one longer than a window can be) is
  counted; its continuation starts the next window with ``B-X``, so every window is valid BIO on its own.
  ``context_before`` and ``context_after``: up to ``context_chars`` characters of the document just before and
  after the window (strings, empty when ``context_chars`` is 0, the default), which the model reads but is
  not scored on; ``tokens``/``ner_tags`` are always the window itself, so ``offset`` + index is the
  character's offset in the .txt whatever the context.
* ``brat``: one example per document: ``document_id``, ``text`` and its usable ``entities`` (``start``/``end``
  of the merged span, and the ``fragments`` as written).

Splits: ``train/``, ``validation/`` (or ``dev/``) and ``test/`` subfolders when ``data_dir`` has all three;
otherwise the documents of ``data_dir`` (or of its ``train/`` when that is its only split folder) are split
by a SHA-1 of their group id (``split_by="group"``, the id up to the first ``_``), so that the parts of one
source document (``123_1``, ``123_2`` ...) stay together and a document's split never changes when others
are added; ``split_by="document"`` hashes the whole id. Some but not all split folders is an error.

Label set: the 15 Ruijin types when the corpus uses no others; else the ``[entities]`` (alias ``[spans]``) of an
``annotation.conf`` beside the data, read as brat reads it (``brat.read_annotation_conf``); else the sorted types
found in all splits, with a warning that names the types outside the Ruijin set and where each first occurs
(``entity_types=`` overrides). Event triggers (``T`` lines of ``[events]`` types, or without a conf those that
``E`` lines name) are not labels unless ``event_triggers="include"``: then the conf's ``[events]`` types are
labels too.

Documents: a document whose .ann had entities but none usable (offsets counted without a BOM, say) is left out
of every split and counted (``CorpusStats.left_out``): its text would train as all ``O``.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets

# The window functions travel with the model's code to the Hub: prediction cuts windows too.
from processing_bert_bilstm_crf import WINDOWS_VERSION, split_into_windows, window_context

from .brat import (
    EVENT_TRIGGER_POLICIES,
    AnnotationConf,
    BratFormatError,
    Document,
    files_with_suffix,
    has_brat_files,
    read_annotation_conf,
    read_text,
    texts_without_annotations,
)
from .brat import logger as brat_logger
from .formats import FORMATS, OFFSET_UNITS, registry
from .formats.records import check_unique_ids

logger = logging.getLogger(__name__)

RUIJIN_TYPE_NAMES_ZH = {
    "Amount": "用药剂量", "Anatomy": "部位", "Disease": "疾病名称", "Drug": "药品名称", "Duration": "持续时间",
    "Frequency": "用药频率", "Level": "程度", "Method": "用药方法", "Operation": "手术", "Reason": "病因",
    "SideEff": "不良反应", "Symptom": "临床表现", "Test": "检查方法", "Test_Value": "检查指标值",
    "Treatment": "非药治疗",
}
RUIJIN_ENTITY_TYPES = sorted(RUIJIN_TYPE_NAMES_ZH)


def bio_labels(entity_types) -> list[str]:
    """``O``, then ``B-X`` and ``I-X`` for each type in the given order."""
    return ["O"] + [f"{prefix}-{entity_type}" for entity_type in entity_types for prefix in ("B", "I")]


RUIJIN_LABELS = bio_labels(RUIJIN_ENTITY_TYPES)
# Training windows never cut an entity (its span is blocked), so a line break is as safe as a sentence end and
# the longest window is kept: fewer, fuller steps per epoch (each step also pays for the whole embedding tables).
# Prediction knows no entities and ranks line breaks last (``processing_bert_bilstm_crf.PREDICTION_CUTS``).
TRAINING_CUTS = (frozenset("。！？；!?;\n"),)
SPLITS = (datasets.Split.TRAIN, datasets.Split.VALIDATION, datasets.Split.TEST)


@dataclass
class BratNerConfig(datasets.BuilderConfig):
    """``window_chars``: window length of the ``bio`` config (510: [CLS] + 510 + [SEP] fit 512 positions).
    ``split_fractions``: train/validation/test shares for corpora without split folders. ``split_by``:
    ``"group"`` (document id up to the first ``_``) or ``"document"``. ``context_chars``: characters of
    context before and after each ``bio`` window (``context_before``/``context_after``). ``strict``: warnings
    become errors. ``event_triggers``: ``"skip"`` (event triggers are not labels) or ``"include"`` (they are).
    ``folds``/``fold``/``fold_seed``: k-fold cross-validation over the training and validation documents
    (``cross_validation_split``): fold ``fold`` of ``folds`` is the validation split, the others the training
    split; the test split stays as it is (0 folds: no cross-validation). ``train_fraction``: the training split
    keeps this share of its documents (``training_subset``; a learning curve's smaller sizes), the other splits
    all of theirs.
    ``data_format``: the annotation format of ``data_dir`` (``formats.registry.FORMATS``; None: detected from its
    files). ``offset_unit``: the unit its offsets count, ``"code_point"`` or ``"utf16"`` (None: the format's own).
    ``entity_types``: the label set; ``load`` fills it in from the corpus. ``corpus_hash``: a digest of the
    files, so that an edited corpus is built anew rather than read from a stale cache (``data_dir`` and every
    other setting are part of the cache folder's name already, through ``datasets``' config id)."""

    window_chars: int = 510
    context_chars: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "group"
    strict: bool = False
    event_triggers: str = "skip"
    entity_types: tuple[str, ...] = tuple(RUIJIN_ENTITY_TYPES)
    corpus_hash: str = ""
    folds: int = 0
    fold: int = 0
    fold_seed: int = 42
    train_fraction: float = 1.0
    data_format: str | None = None
    offset_unit: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.data_format not in (None, *FORMATS):
            raise ValueError(f"data_format must be one of {', '.join(FORMATS)}, got {self.data_format!r}")
        if self.offset_unit not in (None, *OFFSET_UNITS):
            raise ValueError(f"offset_unit must be one of {', '.join(OFFSET_UNITS)}, got {self.offset_unit!r}")
        if self.window_chars < 1:
            raise ValueError(f"window_chars must be positive, got {self.window_chars}")
        if self.context_chars < 0:
            raise ValueError(f"context_chars must not be negative, got {self.context_chars}")
        if self.split_by not in ("group", "document"):
            raise ValueError(f"split_by must be 'group' or 'document', got {self.split_by!r}")
        if self.event_triggers not in EVENT_TRIGGER_POLICIES:
            raise ValueError(f"event_triggers must be 'skip' or 'include', got {self.event_triggers!r}")
        if self.folds == 1 or self.folds < 0 or not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"folds must be 0 (none) or at least 2 and fold one of 0..folds-1, got fold "
                             f"{self.fold} of {self.folds}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be above 0 and at most 1, got {self.train_fraction}")
        fractions = tuple(self.split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(f"split_fractions must be three non-negative shares adding up to 1, got {fractions}")


@dataclass
class CorpusStats:
    """What the loader did with the corpus; ``entities_encoded + sum(dropped.values()) == entities_read``.
    ``print(stats.format())`` shows it all."""

    documents: Counter = field(default_factory=Counter)  # per split, documents used
    left_out: Counter = field(default_factory=Counter)  # per split, documents none of whose entities is usable
    windows: Counter = field(default_factory=Counter)  # per split
    characters: int = 0
    entities_read: int = 0  # T lines
    entities_encoded: int = 0
    dropped: Counter = field(default_factory=Counter)  # (reason, type) -> count
    cut_by_windows: Counter = field(default_factory=Counter)  # type -> entities split across two windows
    skipped_lines: Counter = field(default_factory=Counter)  # kind -> count
    warnings: Counter = field(default_factory=Counter)  # kind -> count (see brat.py for the kinds)
    warnings_printed: int = 0  # every warning logged while the corpus was read, whatever its kind

    def add_document(self, split: str, document: Document, not_encoded, cut, windows: int) -> None:
        self.documents[split] += 1
        self.windows[split] += windows
        self.characters += len(document.text)
        self.entities_encoded += len(document.entities) - len(not_encoded)
        self.dropped.update(("overlap", entity_type) for entity_type, _, _ in not_encoded)
        self.cut_by_windows.update(cut)
        self._add_annotations(document)

    def add_left_out(self, split: str, document: Document) -> None:
        """A document not used because none of its entities is; its entities and lines are still counted."""
        self.left_out[split] += 1
        self.warnings["no_usable_entity"] += 1
        self._add_annotations(document)

    def _add_annotations(self, document: Document) -> None:
        self.entities_read += len(document.entities) + sum(document.rejected.values())
        self.dropped.update(document.rejected)
        self.skipped_lines.update(document.skipped_lines)
        for reason, _ in document.rejected.elements():
            self.warnings[reason] += 1

    def format(self) -> str:
        lines = [
            f"documents: {dict(self.documents)}   windows: {dict(self.windows)}   characters: {self.characters}",
            f"documents not used (none of their entities usable): {dict(self.left_out)}",
            f"entities read: {self.entities_read}   encoded: {self.entities_encoded}   "
            f"not encoded: {sum(self.dropped.values())}",
            *(f"  not encoded ({reason}): {total} {by_type}" for reason, total, by_type in self._dropped_by_reason()),
            f"entities cut by a window boundary: {sum(self.cut_by_windows.values())} {dict(self.cut_by_windows)}",
            f"lines skipped (not text-bound entities): {dict(self.skipped_lines)}",
            f"warnings: {self.warnings_printed} printed above; by kind {dict(self.warnings)}",
        ]
        return "\n".join(lines)

    def _dropped_by_reason(self):
        """(reason, total, {type: count}) for each reason, most frequent types first."""
        for reason in sorted({reason for reason, _ in self.dropped}):
            by_type = Counter({entity_type: count for (r, entity_type), count in self.dropped.items() if r == reason})
            yield reason, sum(by_type.values()), dict(by_type.most_common())


class BratNer(datasets.GeneratorBasedBuilder):
    """Brat corpora (``NNN.txt`` + ``NNN.ann``) for character-level NER."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = BratNerConfig
    BUILDER_CONFIGS = [
        BratNerConfig(name="bio", description="Windows of characters with BIO tags."),
        BratNerConfig(name="brat", description="Whole documents with their entities."),
    ]
    DEFAULT_CONFIG_NAME = "bio"

    def _info(self):
        if self.config.name == "brat":
            fragment = {"start": datasets.Value("int32"), "end": datasets.Value("int32")}
            entity = {"id": datasets.Value("string"), "type": datasets.Value("string"),
                      "start": datasets.Value("int32"), "end": datasets.Value("int32"),
                      "text": datasets.Value("string"), "fragments": datasets.List(fragment)}
            features = {"document_id": datasets.Value("string"), "text": datasets.Value("string"),
                        "entities": datasets.List(entity)}
        else:
            features = {
                "id": datasets.Value("string"),
                "document_id": datasets.Value("string"),
                "offset": datasets.Value("int32"),
                "tokens": datasets.List(datasets.Value("string")),
                "ner_tags": datasets.List(datasets.ClassLabel(names=bio_labels(self.config.entity_types))),
                "context_before": datasets.Value("string"),
                "context_after": datasets.Value("string"),
            }
        return datasets.DatasetInfo(description=__doc__.split("\n\n")[0], features=datasets.Features(features))

    def _split_generators(self, dl_manager):
        split_documents = split_corpus(Path(self.config.data_dir), self.config)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"documents": split_documents[split]})
                for split in SPLITS]

    def _generate_examples(self, documents):
        for document in documents:
            if document.lost_all_entities:
                continue
            if self.config.name == "brat":
                yield document.document_id, document_example(document)
            else:
                for example in window_examples(document, self.config.window_chars, self.config.context_chars)[0]:
                    yield example["id"], example


def document_example(document: Document) -> dict:
    entities = [{"id": e.id, "type": e.type, "start": e.start, "end": e.end, "text": e.text,
                 "fragments": [{"start": start, "end": end} for start, end in e.fragments]}
                for e in document.entities]
    return {"document_id": document.document_id, "text": document.text, "entities": entities}


def window_examples(document: Document, window_chars: int, context_chars: int = 0) -> tuple[list[dict], list, list]:
    """The ``bio`` examples of a document (with up to ``context_chars`` characters of context on each side),
    the entities BIO could not encode, and the types of the entities that a window boundary cuts (a window then
    starts with ``B-X`` for the entity's remainder)."""
    spans = [(entity.type, entity.start, entity.end) for entity in document.entities]
    tags, not_encoded = spans_to_bio(len(document.text), spans)
    encoded = Counter(spans) - Counter(not_encoded)
    entity_spans = [(start, end) for _, start, end in encoded]
    windows = split_into_windows(document.text, window_chars, entity_spans, TRAINING_CUTS)
    window_starts = [window_start for window_start, _ in windows]
    cut = [entity_type for entity_type, start, end in encoded if _starts_inside(window_starts, start, end)]
    examples = []
    for index, (start, end) in enumerate(windows):
        window_tags = tags[start:end]
        if window_tags[0].startswith("I-"):
            window_tags[0] = "B-" + window_tags[0][2:]
        before, after = window_context(document.text, start, end, context_chars)
        examples.append({"id": f"{document.document_id}-{index}", "document_id": document.document_id,
                         "offset": start, "tokens": list(document.text[start:end]), "ner_tags": window_tags,
                         "context_before": before, "context_after": after})
    return examples, not_encoded, cut


def spans_to_bio(length: int, spans) -> tuple[list[str], list[tuple[str, int, int]]]:
    """BIO tags of ``length`` characters from ``(type, start, end)`` spans (end exclusive), and the spans that
    could not be encoded.

    One tag per character cannot express overlapping or nested entities. Policy: longest span first (ties:
    earlier start, then type name); a span is encoded only if none of its characters is taken yet, otherwise
    it is returned as not encoded, so the caller can count it.
    """
    tags, not_encoded = ["O"] * length, []
    for entity_type, start, end in sorted(spans, key=lambda span: (span[1] - span[2], span[1], span[0])):
        if not 0 <= start < end <= length:
            raise ValueError(f"span {entity_type} {start} {end} is outside 0..{length}")
        if any(tag != "O" for tag in tags[start:end]):
            not_encoded.append((entity_type, start, end))
            continue
        tags[start:end] = [f"B-{entity_type}"] + [f"I-{entity_type}"] * (end - start - 1)
    return tags, not_encoded



def _starts_inside(sorted_starts: list[int], start: int, end: int) -> bool:
    """Whether one of the sorted window starts falls strictly inside ``start..end`` (binary search: a long
    document has thousands of windows and entities)."""
    after = bisect.bisect_right(sorted_starts, start)
    return after < len(sorted_starts) and sorted_starts[after] < end


def split_corpus(data_dir: Path, config: BratNerConfig) -> dict[str, list[Document]]:
    """The documents of each split, read with the settings of ``config``: split folders if present, else the
    hash rule over the documents; with ``config.folds``, the training and validation documents are divided into
    folds instead."""
    folders = split_folders(data_dir)
    if folders:
        documents = {split: read_corpus_documents_of(folder, data_dir, config) for split, folder in folders.items()}
        # One name in two split folders (train/01.txt, test/01.txt) is two documents, unless the splits are pooled
        # into folds, where an id must name one document.
        for pooled in ([[d for split in SPLITS for d in documents[split]]] if config.folds else documents.values()):
            check_unique_ids(pooled)
    else:
        documents = {split: [] for split in SPLITS}
        for document in read_corpus_documents_of(corpus_folder(data_dir), data_dir, config):
            documents[hash_split(document.document_id, config.split_fractions, config.split_by)].append(document)
    if config.folds:
        documents = cross_validation_split(documents, config.folds, config.fold, config.fold_seed, config.split_by)
    if config.train_fraction < 1:
        documents[datasets.Split.TRAIN] = training_subset(documents[datasets.Split.TRAIN], config.train_fraction,
                                                          config.fold_seed, config.split_by)
    return documents


def document_groups(documents: list[Document], split_by: str) -> dict[str, list[Document]]:
    """The documents by group: ``123`` for ``123_4`` (the parts of one source document), or by document."""
    groups: dict[str, list] = {}
    for document in documents:
        document_id = document.document_id
        groups.setdefault(document_id.split("_")[0] if split_by == "group" else document_id, []).append(document)
    return groups


def by_id(documents: list[Document]) -> list[Document]:
    return sorted(documents, key=lambda document: document.document_id)


def training_subset(documents: list[Document], fraction: float, seed: int = 42, split_by: str = "group") -> list:
    """About ``fraction`` of the training documents, whole groups at a time: groups in a seeded hash order, taken
    until they hold ``fraction`` of the documents (at least one group). Deterministic for ``seed``, and nested:
    the documents of a smaller fraction are among those of every larger one, so a learning curve adds documents
    rather than drawing new ones."""
    groups = document_groups(documents, split_by)
    order = sorted(groups, key=lambda key: hashlib.sha1(f"{seed}:subset:{key}".encode()).hexdigest())
    wanted, kept = fraction * len(documents), []
    for key in order:
        if kept and len(kept) >= wanted:
            break
        kept += groups[key]
    return by_id(kept)


def cross_validation_split(documents: dict, folds: int, fold: int, seed: int = 42, split_by: str = "group") -> dict:
    """The splits of fold ``fold`` of ``folds``: the training and validation documents pooled and divided into
    ``folds`` disjoint folds covering them all, by group (``123`` for ``123_4``: the parts of one source
    document stay in one fold) or by document; fold ``fold`` is the validation split, the others are the
    training split, and the test split is left alone (never part of a fold). Deterministic for ``seed``: groups
    are taken largest first (ties in a seeded hash order) and each goes to the fold holding the fewest
    documents, so folds differ in size by at most the largest group."""
    groups = document_groups([*documents[datasets.Split.TRAIN], *documents[datasets.Split.VALIDATION]], split_by)
    if len(groups) < folds:
        raise BratFormatError(f"{folds} folds need at least {folds} document groups; the training and validation "
                              f"splits have {len(groups)}")
    order = sorted(groups, key=lambda key: (-len(groups[key]), hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()))
    members = [[] for _ in range(folds)]
    for key in order:
        smallest = min(range(folds), key=lambda index: (len(members[index]), index))
        members[smallest] += groups[key]
    training = by_id([document for index, documents in enumerate(members) if index != fold for document in documents])
    return {datasets.Split.TRAIN: training, datasets.Split.VALIDATION: by_id(members[fold]),
            datasets.Split.TEST: documents[datasets.Split.TEST]}


def split_folders(data_dir: Path) -> dict[str, Path] | None:
    """The splits' folders when ``data_dir`` has ``train/``, ``validation/`` (or ``dev/``) and ``test/``; None
    when it has none of them or ``train/`` alone (that corpus is split by hash). Anything in between is an
    error rather than a guess: a ``test/`` that silently went unused would be worse."""
    present = [name for name in ("train", "validation", "dev", "test") if (data_dir / name).is_dir()]
    if present and has_annotation_files(data_dir):
        raise BratFormatError(f"{data_dir}: has both split folders {present} and annotation files; which are the "
                              "corpus?")
    if present in ([], ["train"]):
        return None
    if present not in (["train", "validation", "test"], ["train", "dev", "test"]):
        raise BratFormatError(f"{data_dir}: has split folders {present}; give train/, validation/ (or dev/) and "
                              "test/, or train/ alone or a folder of .txt/.ann files to be split by hash")
    return {datasets.Split.TRAIN: data_dir / "train", datasets.Split.VALIDATION: data_dir / present[1],
            datasets.Split.TEST: data_dir / "test"}


def corpus_folder(data_dir: Path) -> Path:
    """Where the documents are: ``data_dir`` itself (a file, or a folder of annotation files), or its ``train/``
    when that is all it has (as in ``ruijin_round1/``, whose other folder, ``unlabeled/``, holds texts without
    annotations)."""
    if data_dir.is_file() or has_annotation_files(data_dir):
        return data_dir
    if (data_dir / "train").is_dir():
        return data_dir / "train"
    raise BratFormatError(f"{data_dir}: no annotation files ({registry.EXPECTED}), and no train/ (validation/ "
                          "test/) folders")


def has_annotation_files(path: Path) -> bool:
    """Whether ``path`` is a folder that itself holds documents of some format; a missing one is an error."""
    if not path.is_dir():
        raise BratFormatError(f"{path}: no such folder")
    return registry.has_annotation_files(path)


def read_corpus_documents_of(path: Path, data_dir: Path, config: BratNerConfig) -> list[Document]:
    """The documents of one file or folder of the corpus at ``data_dir``, read with ``config``'s settings (brat:
    event triggers as the corpus' annotation.conf defines them)."""
    conf = find_annotation_conf(data_dir)
    return registry.read_documents(path, config.data_format, config.strict, config.offset_unit,
                                   conf.event_types if conf else None, config.event_triggers)


def document_folders(data_dir: Path) -> list[Path]:
    """The folders of the corpus' documents (none when ``data_dir`` is a file)."""
    if data_dir.is_file():
        return []
    folders = split_folders(data_dir)
    return list(folders.values()) if folders else [corpus_folder(data_dir)]


def hash_split(document_id: str, fractions=(0.8, 0.1, 0.1), split_by: str = "group") -> str:
    """The split of a document, from a SHA-1 of its group id (``123`` for ``123_4``) or of its own id: the same
    on every machine and Python version, and stable when documents are added, because it depends on nothing
    but the id. Splitting by group keeps the parts of one source document out of each other's test set."""
    if split_by not in ("group", "document"):
        raise ValueError(f"split_by must be 'group' or 'document', got {split_by!r}")
    key = document_id.split("_")[0] if split_by == "group" else document_id
    position = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12
    if position < fractions[0]:
        return datasets.Split.TRAIN
    return datasets.Split.VALIDATION if position < fractions[0] + fractions[1] else datasets.Split.TEST


def corpus_texts(data_dir: Path) -> dict[str, str]:
    """Every text of the corpus (a brat ``.txt`` without its ``.ann`` too), with where it is."""
    texts = {}
    for path in document_folders(data_dir) or [data_dir]:
        if path.is_dir() and has_brat_files(path):
            texts.update({read_text(txt): str(txt) for txt in files_with_suffix(path, ".txt")})
        else:
            texts.update({document.text: document.source for document in registry.read_documents(path)})
    return texts


def find_annotation_conf(data_dir: Path) -> AnnotationConf | None:
    """The ``annotation.conf`` beside the data (in ``data_dir``, else in a folder of its documents), read."""
    path = next((folder / "annotation.conf" for folder in (data_dir, *document_folders(data_dir))
                 if (folder / "annotation.conf").is_file()), None)
    return read_annotation_conf(path) if path else None


def corpus_entity_types(data_dir: Path, documents: list[Document], requested=None, conf: AnnotationConf | None = None,
                        event_triggers: str = "skip") -> tuple[str, ...]:
    """The label set: ``requested`` if given; else the Ruijin types when the corpus uses no others; else the
    types of ``conf`` (its [entities], and its [events] if triggers are included); else the sorted types found
    in all splits, with a warning (a misspelt type would otherwise pass unnoticed). A type in the data but not
    in the label set is an error naming it, the document where it first occurs and the label set."""
    found = {entity.type for document in documents for entity in document.entities}
    found |= {entity_type for document in documents for _, entity_type in document.rejected}
    if requested is not None:
        types, source = tuple(requested), "entity_types"
    elif found <= set(RUIJIN_ENTITY_TYPES):
        return tuple(RUIJIN_ENTITY_TYPES)
    elif conf:
        events = conf.event_types if event_triggers == "include" else ()
        types, source = tuple(sorted({*conf.entity_types, *events})), str(conf.path)
    else:
        types, source = tuple(sorted(found)), ""
        _warn_found_types(data_dir, documents, found)
    missing = found - set(types)
    if missing:
        first_seen = _first_documents(documents)
        where = ", ".join(f"{entity_type} first in {first_seen[entity_type]}" for entity_type in sorted(missing))
        abstract = sorted(missing & set(conf.abstract_types)) if conf and requested is None else []
        why = f"; {abstract} are abstract (!Type) there, which brat does not let annotators use" if abstract else ""
        raise BratFormatError(f"{data_dir}: entity types {sorted(missing)} are not in {source} {list(types)} "
                              f"({where}){why}")
    return types


def _first_documents(documents: list[Document]) -> dict[str, str]:
    """The id of the first document using each entity type (usable or not)."""
    first_seen = {}
    for document in documents:
        for entity_type in [entity.type for entity in document.entities] + [t for _, t in document.rejected]:
            first_seen.setdefault(entity_type, document.document_id)
    return first_seen


def _warn_found_types(data_dir: Path, documents: list[Document], found: set[str]) -> None:
    """The label set comes from the data: say so, naming where each non-Ruijin type first occurs, so that a
    misspelt type (``Diseas``) does not silently become a class of its own."""
    first_seen = _first_documents(documents)
    others = ", ".join(f"{entity_type} (first in {first_seen[entity_type]})"
                       for entity_type in sorted(found - set(RUIJIN_ENTITY_TYPES)))
    logger.warning("%s: the label set is the %d entity types found in the data, since it uses types that are not "
                   "Ruijin types: %s. If they are misspelt, correct the .ann files; otherwise put an "
                   "annotation.conf beside the data or give entity_types= to fix the label set.",
                   data_dir, len(found), others)


def corpus_hash(files: list[Path], conf: AnnotationConf | None = None) -> str:
    """A digest of the corpus' files and of the annotation.conf (which decides what a trigger is)."""
    digest = hashlib.sha1()
    for path in files + ([conf.path] if conf else []):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def code_hash() -> str:
    """A digest of the code that turns files into examples (this package's files and the declared version of the
    window functions it calls, ``WINDOWS_VERSION``), the builder's ``hash``: a changed window or tag policy then
    builds anew instead of reusing old Arrow files, and a change to the model's other code does not."""
    digest = hashlib.sha1(f"windows {WINDOWS_VERSION}".encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):  # the formats/ package too
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load(data_dir, name: str = "bio", return_stats: bool = False, cache_dir=None, **config_kwargs):
    """The corpus as a ``DatasetDict`` (train, validation, test), with ``CorpusStats`` if ``return_stats``.

    ``config_kwargs`` are ``BratNerConfig`` fields (``window_chars``, ``context_chars``, ``split_fractions``,
    ``split_by``, ``strict``, ``event_triggers``, ``entity_types``). The statistics are logged every time; the
    Arrow files are cached under ``cache_dir`` (default: the ``datasets`` cache, outside the repository) in a
    folder named after ``data_dir``, the settings, the files' contents and this code, so any change among them
    builds anew.
    """
    data_dir = Path(data_dir).resolve()
    config = BratNerConfig(name=name, **config_kwargs)  # checks the settings before anything is read
    with _counted_warnings() as printed:
        documents = split_corpus(data_dir, config)
        conf = find_annotation_conf(data_dir)
        all_documents = [document for split in SPLITS for document in documents[split]]
        config_kwargs["entity_types"] = corpus_entity_types(data_dir, all_documents,
                                                            config_kwargs.get("entity_types"), conf,
                                                            config.event_triggers)
        _warn_left_out(documents)
    stats = corpus_stats(documents, config.window_chars)
    stats.warnings_printed = printed.count
    unannotated = sum(len(texts_without_annotations(folder)) for folder in document_folders(data_dir))
    if unannotated:
        stats.warnings["txt_without_ann"] = unannotated
    logger.info("Corpus %s:\n%s", data_dir, stats.format())

    data_format = config.data_format or registry.detect_format(corpus_folder(data_dir))
    files = [file for path in (document_folders(data_dir) or [data_dir])
             for file in registry.source_files(path, data_format)]
    builder = BratNer(config_name=name, data_dir=str(data_dir), cache_dir=cache_dir, hash=code_hash(),
                      corpus_hash=corpus_hash(files, conf), **config_kwargs)
    with _silenced(brat_logger):  # what it would warn about was just logged with the statistics
        builder.download_and_prepare()
    corpus = datasets.DatasetDict({str(split): _split_dataset(builder, split) for split in SPLITS})
    return (corpus, stats) if return_stats else corpus


class _WarningCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@contextlib.contextmanager
def _counted_warnings():
    """Count the warnings this package logs meanwhile, so the summary's total is what the user saw."""
    package_logger, counter = logging.getLogger(__package__), _WarningCounter()
    package_logger.addHandler(counter)
    try:
        yield counter
    finally:
        package_logger.removeHandler(counter)


@contextlib.contextmanager
def _silenced(silenced_logger: logging.Logger):
    previous = silenced_logger.level
    silenced_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        silenced_logger.setLevel(previous)


def _split_dataset(builder, split) -> datasets.Dataset:
    """A split as a Dataset; an empty one (a small corpus) as an empty Dataset with the same features."""
    if builder.info.splits[split].num_examples:
        return builder.as_dataset(split=split)
    features = builder.info.features
    return datasets.Dataset.from_dict({name: [] for name in features}, features=features, split=split)


def _warn_left_out(documents: dict[str, list[Document]]):
    """Name each document left out because none of its entities is usable."""
    for split in SPLITS:
        for document in documents[split]:
            if document.lost_all_entities:
                logger.warning("%s: none of its %d entities is usable; document not used (its text would train "
                               "as all O)", document.source, sum(document.rejected.values()))


def corpus_stats(documents: dict[str, list[Document]], window_chars: int) -> CorpusStats:
    stats = CorpusStats()
    for split in SPLITS:
        for document in documents[split]:
            if document.lost_all_entities:
                stats.add_left_out(str(split), document)
                continue
            examples, not_encoded, cut = window_examples(document, window_chars)
            stats.add_document(str(split), document, not_encoded, cut, len(examples))
    return stats


def read_corpus_documents(path) -> list[dict]:
    """The documents of one file or folder of any format in the ``brat`` config's layout (for scoring
    predictions); event triggers, as a brat folder's annotation.conf or its E lines define them, are not entities.
    The types are checked as ``load`` checks a training corpus' (``corpus_entity_types``): a type that the folder's
    annotation.conf does not declare is an error, not a type of its own."""
    path = Path(path)
    if not path.is_file():
        has_annotation_files(path)  # a missing folder is an error naming it
    conf_path = path / "annotation.conf"
    conf = read_annotation_conf(conf_path) if conf_path.is_file() else None
    documents = registry.read_documents(path, event_types=conf.event_types if conf else None)
    corpus_entity_types(path, documents, conf=conf)
    return [document_example(document) for document in documents]
