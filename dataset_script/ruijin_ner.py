"""The Ruijin diabetes NER corpus, or any brat corpus, as a Hugging Face ``datasets`` builder.

    from dataset_script import ruijin_ner
    corpus = ruijin_ner.load("../shared/data/ruijin_round1/train")          # DatasetDict, config "bio"
    documents = ruijin_ner.load("data/sample", name="brat")
    corpus, stats = ruijin_ner.load("data/sample", return_stats=True); print(stats.format())

datasets >= 4 no longer runs loading scripts through ``load_dataset(path)``, so ``load`` drives the builder
directly (``download_and_prepare`` then ``as_dataset``). The result is an ordinary ``DatasetDict``:
``corpus.push_to_hub(repo_id)`` publishes it as Parquet with its ClassLabel features.

Configs:

* ``bio`` (default): one example per window of at most ``max_chars`` characters: ``id``, ``document_id``,
  ``offset`` (of the window's first character in the .txt), ``tokens`` (one entry per character, whitespace
  included) and ``ner_tags`` (ClassLabel: ``O``, then ``B-X``, ``I-X`` per type).
* ``brat``: one example per document: ``document_id``, ``text`` and its ``entities`` with their fragments.

Splits: ``train/``, ``validation/`` (or ``dev/``) and ``test/`` subfolders when ``data_dir`` has them;
otherwise the documents of ``data_dir`` (or of its only subfolder ``train/``) are split by a hash of their
group id, so that the parts of one source document (``123_1``, ``123_2`` ...) stay together and a
document's split never changes when others are added.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets

# The character, window and BIO functions live in the model file, which travels alone to the Hub.
from modeling_bert_bilstm_crf import spans_to_bio, split_into_windows

from .brat import BratFormatError, Document, find_documents, read_document, read_text

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
SPLITS = (datasets.Split.TRAIN, datasets.Split.VALIDATION, datasets.Split.TEST)


@dataclass
class BratNerConfig(datasets.BuilderConfig):
    """``max_chars``: window length of the ``bio`` config (510: [CLS] + 510 + [SEP] fit 512 positions).
    ``split_fractions``: train/validation/test shares for corpora without split folders. ``split_by``:
    ``"group"`` (document id up to the first ``_``) or ``"document"``. ``strict``: warnings become errors.
    ``entity_types``: the label set; ``load`` fills it in from the corpus. ``corpus_hash``: a digest of the
    files, so that an edited corpus is built anew rather than read from a stale cache."""

    max_chars: int = 510
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "group"
    strict: bool = False
    entity_types: tuple[str, ...] = tuple(RUIJIN_ENTITY_TYPES)
    corpus_hash: str = ""


@dataclass
class CorpusStats:
    """What the loader did with the corpus; ``entities_encoded + sum(dropped) == entities_read``."""

    documents: Counter = field(default_factory=Counter)  # per split
    windows: Counter = field(default_factory=Counter)  # per split
    characters: int = 0
    entities_read: int = 0  # T lines
    entities_encoded: int = 0
    dropped: Counter = field(default_factory=Counter)  # (reason, type) -> count
    cut_by_windows: Counter = field(default_factory=Counter)  # type -> entities split across two windows
    skipped_lines: Counter = field(default_factory=Counter)  # kind -> count

    def add_document(self, split: str, document: Document, not_encoded, cut, windows: int) -> None:
        self.documents[split] += 1
        self.windows[split] += windows
        self.characters += len(document.text)
        rejected = sum(document.rejected.values())
        self.entities_read += len(document.entities) + rejected
        self.entities_encoded += len(document.entities) - len(not_encoded)
        self.dropped.update(document.rejected)
        self.dropped.update(("overlap", entity_type) for entity_type, _, _ in not_encoded)
        self.cut_by_windows.update(cut)
        self.skipped_lines.update(document.skipped_lines)

    def format(self) -> str:
        by_reason = Counter()
        for (reason, _), count in self.dropped.items():
            by_reason[reason] += count
        lines = [
            f"documents: {dict(self.documents)}   windows: {dict(self.windows)}   characters: {self.characters}",
            f"entities read: {self.entities_read}   encoded: {self.entities_encoded}   "
            f"not encoded: {sum(self.dropped.values())} {dict(by_reason)}",
            f"not encoded by type: {dict(sorted(self._dropped_by_type().items()))}",
            f"entities cut by a window boundary: {sum(self.cut_by_windows.values())} {dict(self.cut_by_windows)}",
            f"lines skipped (not text-bound entities): {dict(self.skipped_lines)}",
        ]
        return "\n".join(lines)

    def _dropped_by_type(self) -> Counter:
        by_type = Counter()
        for (_, entity_type), count in self.dropped.items():
            by_type[entity_type] += count
        return by_type


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
            }
        return datasets.DatasetInfo(description=__doc__.split("\n\n")[0], features=datasets.Features(features))

    def _split_generators(self, dl_manager):
        split_documents = split_corpus(Path(self.config.data_dir), self.config)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"documents": split_documents[split]})
                for split in SPLITS]

    def _generate_examples(self, documents):
        for txt_path, ann_path in documents:
            document = read_document(txt_path, ann_path, self.config.strict)
            if self.config.name == "brat":
                yield document.document_id, document_example(document)
            else:
                for example in window_examples(document, self.config.max_chars)[0]:
                    yield example["id"], example


def document_example(document: Document) -> dict:
    entities = [{"id": e.id, "type": e.type, "start": e.start, "end": e.end, "text": e.text,
                 "fragments": [{"start": start, "end": end} for start, end in e.fragments]}
                for e in document.entities]
    return {"document_id": document.document_id, "text": document.text, "entities": entities}


def window_examples(document: Document, max_chars: int) -> tuple[list[dict], list, list[str]]:
    """The ``bio`` examples of a document, the entities BIO could not encode, and the types of the entities
    that a window boundary cuts (a window then starts with ``B-X`` for the entity's remainder)."""
    spans = [(entity.type, entity.start, entity.end) for entity in document.entities]
    tags, not_encoded = spans_to_bio(len(document.text), spans)
    encoded = Counter(spans) - Counter(not_encoded)
    windows = split_into_windows(document.text, max_chars, [(start, end) for _, start, end in encoded])
    cut = [entity_type for entity_type, start, end in encoded
           if any(start < window_start < end for window_start, _ in windows)]
    examples = []
    for index, (start, end) in enumerate(windows):
        window_tags = tags[start:end]
        if window_tags[0].startswith("I-"):
            window_tags[0] = "B-" + window_tags[0][2:]
        examples.append({"id": f"{document.document_id}-{index}", "document_id": document.document_id,
                         "offset": start, "tokens": list(document.text[start:end]), "ner_tags": window_tags})
    return examples, not_encoded, cut


def split_corpus(data_dir: Path, config: BratNerConfig) -> dict[str, list[tuple[Path, Path]]]:
    """(txt, ann) pairs per split: split folders if present, else the hash rule over the documents."""
    folders = split_folders(data_dir)
    if folders:
        return {split: find_documents(folder, config.strict) for split, folder in folders.items()}
    corpus_dir = corpus_folder(data_dir)
    documents = {split: [] for split in SPLITS}
    for pair in find_documents(corpus_dir, config.strict):
        documents[hash_split(pair[0].stem, config.split_fractions, config.split_by)].append(pair)
    return documents


def split_folders(data_dir: Path) -> dict[str, Path] | None:
    validation = next((data_dir / name for name in ("validation", "dev") if (data_dir / name).is_dir()), None)
    if (data_dir / "train").is_dir() and validation and (data_dir / "test").is_dir():
        return {datasets.Split.TRAIN: data_dir / "train", datasets.Split.VALIDATION: validation,
                datasets.Split.TEST: data_dir / "test"}
    return None


def corpus_folder(data_dir: Path) -> Path:
    """The folder holding the documents: ``data_dir`` itself, or its ``train/`` when that is all it has."""
    if not data_dir.is_dir():
        raise BratFormatError(f"{data_dir}: no such folder")
    if any(data_dir.glob("*.txt")) or any(data_dir.glob("*.ann")):
        return data_dir
    if (data_dir / "train").is_dir():
        return data_dir / "train"
    raise BratFormatError(f"{data_dir}: no .txt/.ann files, and no train/ (validation/ test/) folders")


def hash_split(document_id: str, fractions=(0.8, 0.1, 0.1), split_by: str = "group") -> str:
    """The split of a document, from a hash of its group id (or its own id): deterministic, and stable when
    documents are added, because it depends on nothing but the id."""
    if split_by not in ("group", "document"):
        raise ValueError(f"split_by must be 'group' or 'document', got {split_by!r}")
    key = document_id.split("_")[0] if split_by == "group" else document_id
    position = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12
    if position < fractions[0]:
        return datasets.Split.TRAIN
    return datasets.Split.VALIDATION if position < fractions[0] + fractions[1] else datasets.Split.TEST


def corpus_entity_types(data_dir: Path, documents) -> tuple[str, ...]:
    """The Ruijin types when the corpus uses no others; else the [entities] of an ``annotation.conf`` beside
    the data, or else the sorted types found in the .ann files."""
    found = set()
    for _, ann_path in documents:
        for line in read_text(ann_path).splitlines():
            if line.startswith("T") and "\t" in line:
                found.add(line.split("\t")[1].split(" ")[0])
    if found <= set(RUIJIN_ENTITY_TYPES):
        return tuple(RUIJIN_ENTITY_TYPES)
    for conf in (data_dir / "annotation.conf", data_dir / "train" / "annotation.conf"):
        if conf.is_file():
            return annotation_conf_types(conf)
    return tuple(sorted(found))


def annotation_conf_types(conf_path: Path) -> tuple[str, ...]:
    """Entity types of the ``[entities]`` section of a brat ``annotation.conf`` (sorted; hierarchy ignored)."""
    types, in_entities = set(), False
    for line in read_text(conf_path).splitlines():
        line = line.strip()
        if line.startswith("["):
            in_entities = line == "[entities]"
        elif in_entities and line and not line.startswith("#"):
            types.add(line.lstrip("!").split()[0])
    return tuple(sorted(types))


def corpus_hash(documents) -> str:
    digest = hashlib.sha1()
    for txt_path, ann_path in documents:
        for path in (txt_path, ann_path):
            digest.update(str(path.name).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load(data_dir, name: str = "bio", return_stats: bool = False, cache_dir=None, **config_kwargs):
    """The corpus as a ``DatasetDict`` (train, validation, test), with ``CorpusStats`` if ``return_stats``.

    The statistics are logged every time; the Arrow files are cached under ``cache_dir`` (default: the
    ``datasets`` cache) and rebuilt whenever a file of the corpus changes.
    """
    data_dir = Path(data_dir).resolve()
    probe = BratNerConfig(**{key: value for key, value in config_kwargs.items() if key != "entity_types"})
    split_documents = split_corpus(data_dir, probe)
    all_documents = [pair for split in SPLITS for pair in split_documents[split]]
    config_kwargs.setdefault("entity_types", corpus_entity_types(data_dir, all_documents))
    config_kwargs["entity_types"] = tuple(config_kwargs["entity_types"])
    builder = BratNer(config_name=name, data_dir=str(data_dir), cache_dir=cache_dir,
                      corpus_hash=corpus_hash(all_documents), **config_kwargs)
    stats = corpus_stats(split_documents, builder.config)
    logger.info("Corpus %s:\n%s", data_dir, stats.format())
    builder.download_and_prepare()
    corpus = datasets.DatasetDict({str(split): _split_dataset(builder, split) for split in SPLITS})
    return (corpus, stats) if return_stats else corpus


def _split_dataset(builder, split) -> datasets.Dataset:
    """A split as a Dataset; an empty one (a small corpus) as an empty Dataset with the same features."""
    if builder.info.splits[split].num_examples:
        return builder.as_dataset(split=split)
    features = builder.info.features
    return datasets.Dataset.from_dict({name: [] for name in features}, features=features, split=split)


def corpus_stats(split_documents, config: BratNerConfig) -> CorpusStats:
    stats = CorpusStats()
    for split in SPLITS:
        for txt_path, ann_path in split_documents[split]:
            document = read_document(txt_path, ann_path, config.strict)
            examples, not_encoded, cut = window_examples(document, config.max_chars)
            stats.add_document(str(split), document, not_encoded, cut, len(examples))
    return stats


def read_corpus_documents(folder) -> list[dict]:
    """The documents of one folder in the ``brat`` config's layout (for scoring predictions)."""
    return [document_example(read_document(txt, ann)) for txt, ann in find_documents(Path(folder))]

