#!/usr/bin/env python
"""Publish a model trained by train.py on the Hugging Face Hub, with a model card written from its results.

    python push_to_hub.py --model_dir outputs/ruijin --repo_id your-name/bert-bilstm-crf-chinese-medical-ner
    python push_to_hub.py --model_dir outputs/ruijin --repo_id your-name/... --dry_run hub_folder/

The repository holds what loading needs and nothing else: safetensors weights, ``config.json`` (with
``auto_map`` and the model's own token-classification pipeline), ``modeling_bert_bilstm_crf.py``, the
tokenizer files, the plots, and a ``README.md`` model card whose metadata (``model-index``) and per-type
table are read from the training output, never typed in. ``--dry_run DIR`` writes exactly that folder and
uploads nothing. ``--dataset_repo_id`` also pushes the prepared corpus (Parquet, ClassLabel features).
``--space_id`` also publishes the Gradio demo of ``space/`` as a Space whose card lists ``--repo_id`` as the
model its app loads (with ``--dry_run DIR``: written to ``DIR/space``).
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "push_to_hub.py")  # --help from its stored page: the imports below take seconds

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, SpaceCard
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import HfArgumentParser

from brat_ner.cli import parse_arguments, run_main
from brat_ner.encoders import encoder_name
from brat_ner.evaluation import report_to_markdown
from brat_ner.runs import unfinished_run_problem
from brat_ner.trust import HANDLER_FILE, MODEL_CODE_FILES, MODELING_FILE, sha256_of, trust_remote_code
from dataset_script import ruijin_ner

# What from_pretrained, AutoTokenizer and the card need (with the model's code, MODEL_CODE_FILES, as many of them as
# the folder holds: folders saved before 2026-12-07 hold the modelling file alone); checkpoints, optimizer states and
# pickles stay home.
MODEL_FILES = ("model.safetensors", "config.json", MODELING_FILE, "tokenizer_config.json")
REQUIRED_FILES = (*MODEL_FILES, "test_report.json")  # the card's results
TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt")  # at least one
OPTIONAL_FILES = ("special_tokens_map.json", "training_curves.png", "test_f1_per_type.png", "cross_validation.json",
                  "learning_curve.png")
# The demo Space: its app and requirements as they are in space/, its card (README.md) given the model id.
SPACE_SOURCE = Path(__file__).resolve().parent / "space"
SPACE_FILES = ("app.py", "requirements.txt")
# The Space also gets the trust helper and the sha256 of the model code uploaded with it (sha256sum's format),
# the only code its app runs without ALLOW_REMOTE_CODE (space/README.md).
TRUST_SOURCE = Path(__file__).resolve().parent / "brat_ner" / "trust.py"
SPACE_PINNED_CODE = "model_code.sha256"
# The Inference Endpoint's handler and its requirements, copied into the model repository.
ENDPOINT_SOURCE = Path(__file__).resolve().parent / "endpoint"
ENDPOINT_FILES = (HANDLER_FILE, "requirements.txt")
# Widget examples for a model with the Ruijin labels when its training corpus is not at hand to take them from.
RUIJIN_WIDGET_EXAMPLES = (
    "2 型糖尿病患者应每 3 个月检测一次糖化血红蛋白（HbA1c）。",
    "二甲双胍 500 mg 每日 2 次口服，常见不良反应为腹泻和恶心。",
    "妊娠期糖尿病孕妇在饮食控制无效时应使用胰岛素治疗。",
)
# What the model should find in the first of them, for the card's usage example.
RUIJIN_FIRST_EXAMPLE_ENTITY = {"entity_group": "Disease", "word": "2 型糖尿病", "start": 0, "end": 6}
UNNAMED_CORPUS = "an unnamed brat corpus"  # the card's name for it without --dataset_name or --dataset_repo_id
WIDGET_COUNT = 3
WIDGET_CHARACTERS = (8, 80)  # short sentences: readable in a widget, one window
# A sentence ends at 。！？；!?; a full stop before a blank (not 7.0) or a line break.
SENTENCE_ENDS = tuple("。！？；!?;.")
SENTENCE = re.compile(r"[^\r\n]+?(?:[。！？；!?;]|\.(?=\s)|(?=[\r\n])|$)")


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "The --output_dir of train.py."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. your-name/bert-bilstm-crf-chinese-medical-ner."})
    dry_run: str | None = field(default=None, metadata={"help": "Write the repository folder here; no upload."})
    private: bool = field(default=False)
    license: str = field(default="apache-2.0")
    dataset_name: str | None = field(
        default=None, metadata={"help": "The training corpus' name on the card (default: --dataset_repo_id); a "
                                        "local path is never shown."}
    )
    language: str | None = field(
        default=None, metadata={"help": "Language code(s) of the card's metadata, e.g. zh or en; default: zh for "
                                        "text mostly in Chinese characters, else none."}
    )
    widget_examples_file: str | None = field(
        default=None, metadata={"help": "UTF-8 file of widget example texts, one per line; default: short "
                                        "sentences of the training corpus' test (else training) documents."}
    )
    dataset_repo_id: str | None = field(
        default=None, metadata={"help": "Also push the prepared corpus as a Hub dataset (also the card's dataset)."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Corpus for --dataset_repo_id and the card's examples; default: the one "
                                        "the model was trained on."}
    )
    space_id: str | None = field(
        default=None, metadata={"help": "Also publish the Gradio demo (space/) as this Space, wired to --repo_id."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Publish the folder's Python code even when it is not this project's "
                                         "own (the Space and the endpoint run it)."}
    )


def main():
    (args,) = parse_arguments(argument_parser())
    if args.space_id:  # before anything is written or uploaded
        check_space_id(args.space_id)
    if not (args.dataset_name or args.dataset_repo_id):
        print(f"push_to_hub.py: the card calls the training corpus {UNNAMED_CORPUS!r}; name it with --dataset_name")
    if args.dry_run:
        folder = Path(args.dry_run)
        if folder.exists() and any(folder.iterdir()):  # stale files would be published with the new ones
            raise ValueError(f"{folder} is not empty; give a new --dry_run folder")
        build_repository(Path(args.model_dir), folder, args)
        print(f"Wrote the repository folder to {args.dry_run} (nothing uploaded): {file_list(folder)}")
        if args.space_id:
            build_space(folder / "space", args)
            print(f"Wrote the Space folder to {folder / 'space'} (nothing uploaded): {file_list(folder / 'space')}")
        return
    api = HfApi()
    push(args, api)
    if args.space_id:
        push_space(args, api)


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(PushArguments, prog="push_to_hub.py",
                            usage="push_to_hub.py [OPTIONS.json] [--option VALUE ...]")


def push(args, api: HfApi) -> None:
    """Create the repository and upload the folder (and optionally the dataset) with the Hub client. Files of
    earlier uploads that this one lacks are deleted, so the repository holds exactly the folder."""
    dataset = prepared_dataset_arguments(Path(args.model_dir), args) if args.dataset_repo_id else None
    with tempfile.TemporaryDirectory() as staging:
        build_repository(Path(args.model_dir), Path(staging), args)
        print(f"Uploading to {args.repo_id}: {file_list(Path(staging))}")
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=staging, repo_id=args.repo_id, delete_patterns="*",
                          commit_message="Upload BERT-BiLSTM-CRF NER model")
    if dataset:
        ruijin_ner.load(**dataset).push_to_hub(args.dataset_repo_id, private=args.private)


def file_list(folder: Path) -> str:
    """The files of a folder to upload, for the user to see what goes public."""
    return ", ".join(sorted(path.name for path in folder.iterdir() if path.is_file()))


def check_space_id(space_id: str) -> None:
    try:
        validate_repo_id(space_id)
    except HFValidationError as error:
        raise ValueError(f"--space_id: {error}") from None


def build_space(folder: Path, args) -> None:
    """The Space repository: space/'s app and requirements, and its card with --repo_id as the model, which the
    app loads (the first of the card's ``models``; the Hub also links the Space from the model's page); the
    trust helper and the sha256 of the model code uploaded, which is the code the app agrees to run."""
    check_space_id(args.space_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(SPACE_SOURCE / name, folder / name)
    shutil.copy2(TRUST_SOURCE, folder / TRUST_SOURCE.name)
    uploaded_code = (*model_code(Path(args.model_dir)), ENDPOINT_SOURCE / HANDLER_FILE)
    (folder / SPACE_PINNED_CODE).write_text("".join(f"{sha256_of(path)}  {path.name}\n" for path in uploaded_code),
                                            encoding="utf-8")
    card = SpaceCard.load(SPACE_SOURCE / "README.md")
    card.data.models = [args.repo_id]
    card.save(folder / "README.md")


def push_space(args, api: HfApi) -> None:
    """Create the Space (Gradio SDK) and upload its folder; files of earlier uploads that it lacks are deleted."""
    with tempfile.TemporaryDirectory() as staging:
        build_space(Path(staging), args)
        print(f"Uploading to the Space {args.space_id}: {file_list(Path(staging))}")
        api.create_repo(args.space_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
        api.upload_folder(folder_path=staging, repo_id=args.space_id, repo_type="space", delete_patterns="*",
                          commit_message="Upload the demo Space")
    if args.private:
        print(f"{args.space_id}: the model is private, so the Space needs a secret HF_TOKEN (a read token) to load it")


def prepared_dataset_arguments(model_dir: Path, args) -> dict:
    """``ruijin_ner.load`` arguments that rebuild the corpus as the model was trained on it (its windows)."""
    corpus = _read_json(model_dir / "corpus.json") or {}
    data_dir = args.data_dir or corpus.get("data_dir")
    if not data_dir:
        raise ValueError("--dataset_repo_id needs --data_dir (the model folder has no corpus.json)")
    return {"data_dir": data_dir, "window_chars": corpus.get("window_chars", corpus.get("max_chars", 510)),
            "context_chars": corpus.get("context_chars", 0)}


def build_repository(model_dir: Path, folder: Path, args) -> None:
    """Check the model folder, then copy the files the model needs and write the model card."""
    for repo_id in filter(None, (args.repo_id, args.dataset_repo_id)):
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise ValueError(f"{error}") from None
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: no such folder")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in TOKENIZER_VOCABULARIES):
        missing.append(" or ".join(TOKENIZER_VOCABULARIES))
    if missing:
        raise ValueError(f"{model_dir} lacks {', '.join(missing)}: is it a train.py output folder?")
    unfinished = unfinished_run_problem(model_dir)  # the card and plots come from what the run wrote last
    if unfinished:
        raise ValueError(f"{model_dir}: {unfinished}")
    trust_remote_code(str(model_dir), args.trust_remote_code)  # its code goes public, and the Space runs it
    folder.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(MODEL_FILES + MODEL_CODE_FILES + TOKENIZER_VOCABULARIES + OPTIONAL_FILES):
        if (model_dir / name).is_file():  # copyfile: the umask's mode, not that of a private source (safetensors')
            shutil.copyfile(model_dir / name, folder / name)
    for name in ENDPOINT_FILES:
        shutil.copy2(ENDPOINT_SOURCE / name, folder / name)
    model_card(model_dir, args).save(folder / "README.md")


def model_code(model_dir: Path) -> list[Path]:
    """The files of the model's code that the folder holds, which go public with it."""
    return [model_dir / name for name in MODEL_CODE_FILES if (model_dir / name).is_file()]


def model_card(model_dir: Path, args) -> ModelCard:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    report = json.loads((model_dir / "test_report.json").read_text(encoding="utf-8"))
    corpus = _read_json(model_dir / "corpus.json")
    types = sorted({label[2:] for label in config["id2label"].values() if label != "O"})
    is_ruijin = types == ruijin_ner.RUIJIN_ENTITY_TYPES  # the Ruijin wording fits the Ruijin labels only
    examples = card_examples(args, corpus, is_ruijin)
    language = args.language or _language_of(example["text"] for example in examples)
    dataset_name = args.dataset_name or args.dataset_repo_id or UNNAMED_CORPUS
    encoder = (corpus or {}).get("encoder") or {}
    pretrained = encoder.get("model_name_or_path") if not encoder.get("encoder_config") else None
    # A Hub id only: a local folder (an encoder from pretrain_mlm.py, say) means nothing to Hub readers. Runs from
    # before corpus.json said which it was are judged by whether the path exists here.
    on_hub = pretrained and not encoder.get("local_folder") and not Path(pretrained).exists()
    data = ModelCardData(
        language=language,
        license=args.license,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["token-classification", "ner", *(["medical"] if is_ruijin else []),
              *(["chinese"] if language == "zh" else []), "bert", "bilstm", "crf"],
        datasets=[args.dataset_repo_id] if args.dataset_repo_id else None,
        metrics=["precision", "recall", "f1"],
        model_name=args.repo_id.split("/")[-1],
        base_model=pretrained if on_hub else None,
        eval_results=_eval_results(report, dataset_name, args.dataset_repo_id),
        widget=[{"text": example["text"]} for example in examples],
    )
    overlap_report = _read_json(model_dir / "test_report_overlap.json")
    card_text = _card_text(args, config, report, overlap_report, corpus, dataset_name, encoder, types, is_ruijin,
                           examples)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text}")



def card_examples(args, corpus: dict | None, is_ruijin: bool) -> list[dict]:
    """Widget and usage texts, each with the entities known to be in it (``entity_group``, ``word``, ``start``,
    ``end``; empty when unknown): those of --widget_examples_file, else short annotated sentences of the
    training corpus, else, for the Ruijin labels, the project's own examples."""
    if args.widget_examples_file:
        path = Path(args.widget_examples_file)
        if not path.is_file():
            raise ValueError(f"{path}: no such file (--widget_examples_file)")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"{path} holds no example text (one per line)")
        return [{"text": text, "entities": []} for text in texts]
    data_dir = args.data_dir or (corpus or {}).get("data_dir")
    examples = corpus_sentences(Path(data_dir)) if data_dir and Path(data_dir).is_dir() else []
    if examples:
        return examples
    if is_ruijin:
        return [{"text": text, "entities": [RUIJIN_FIRST_EXAMPLE_ENTITY] if index == 0 else []}
                for index, text in enumerate(RUIJIN_WIDGET_EXAMPLES)]
    raise ValueError(f"no example texts for the widget: the training corpus ({data_dir}) is not "
                     "here or holds no short annotated sentence; give --widget_examples_file or --data_dir")


def corpus_sentences(data_dir: Path) -> list[dict]:
    """Up to ``WIDGET_COUNT`` short sentences of the test documents (else the training ones) that hold whole
    entities, those with the most entity types first, with their entities at offsets into the sentence."""
    splits = ruijin_ner.load(data_dir, name="brat")
    for split in ("test", "train"):
        candidates = [sentence for document in splits[split] for sentence in annotated_sentences(document)]
        if candidates:
            # Whole sentences before pieces cut by a line break, then those with the most entity types.
            candidates.sort(key=lambda sentence: (not sentence["text"].endswith(SENTENCE_ENDS),
                                                  -len({e["entity_group"] for e in sentence["entities"]})))
            return candidates[:WIDGET_COUNT]
    return []


def annotated_sentences(document: dict) -> list[dict]:
    shortest, longest = WIDGET_CHARACTERS
    sentences = []
    for match in SENTENCE.finditer(document["text"]):
        text = match.group().strip()
        start = match.start() + match.group().index(text) if text else match.start()
        end = start + len(text)
        entities = [{"entity_group": e["type"], "word": document["text"][e["start"]:e["end"]],
                     "start": e["start"] - start, "end": e["end"] - start}
                    for e in document["entities"] if start <= e["start"] and e["end"] <= end]
        if shortest <= len(text) <= longest and entities:
            sentences.append({"text": text, "entities": sorted(entities, key=lambda e: (e["start"], e["end"]))})
    return sentences


def _language_of(texts) -> str | None:
    """zh when most letters of the texts are Chinese characters; else unknown (a script does not tell English
    from German: give --language)."""
    letters = [character for text in texts for character in text if character.isalpha()]
    han = sum("\u4e00" <= character <= "\u9fff" or "\u3400" <= character <= "\u4dbf" for character in letters)
    return "zh" if letters and han > len(letters) / 2 else None


def _eval_results(report: dict, dataset_name: str, dataset_repo_id: str | None) -> list[EvalResult]:
    # The Hub reads dataset.type as a dataset id: the pushed corpus if there is one, else a slug of the name.
    dataset_type = dataset_repo_id or "-".join(dataset_name.replace("/", " ").split()).lower()
    common = {"task_type": "token-classification", "task_name": "Named entity recognition",
              "dataset_type": dataset_type, "dataset_name": dataset_name, "dataset_split": "test"}
    rows = (("micro avg", "f1", "micro-F1 (entities)"), ("micro avg", "precision", "micro precision"),
            ("micro avg", "recall", "micro recall"), ("macro avg", "f1", "macro-F1 over types"))
    return [EvalResult(metric_type=metric, metric_value=round(report[row][_column(metric)], 4), metric_name=name,
                       **common) for row, metric, name in rows]


def _column(metric: str) -> str:
    return "f1-score" if metric == "f1" else metric


def _architecture(config: dict) -> str:
    """The model's layers in words, from its config: the classic model (no transformer layers) is no BERT."""
    encoder = encoder_name(config.get("encoder")) if config.get("num_hidden_layers", 1) else "embedding"
    layers = [encoder, *(["BiLSTM"] if config.get("use_lstm", True) else []), "CRF"]
    return " → ".join(layers)


def _ensemble_phrase(config: dict) -> str:
    """For an ensemble (ensemble.py): how many models, combined how."""
    members = config.get("ensemble_members")
    if not members:
        return ""
    votes = config.get("ensemble_min_votes")
    rule = (f"keeping each entity that at least {votes} of them predict" if votes else
            "averaging their CRF potentials before one Viterbi pass")
    return f" (an ensemble of {len(members)} such models, {rule}; it runs each of them)"


def _card_text(args, config: dict, report: dict, overlap_report: dict | None, corpus: dict | None,
               dataset_name: str, encoder: dict, types: list[str], is_ruijin: bool, examples: list[dict]) -> str:
    architecture = _architecture(config)
    bigram_phrase = " with character-bigram features" if config.get("bigram_buckets") else ""
    bigram_phrase += _ensemble_phrase(config)
    if is_ruijin:
        label_table = "| type | 中文 |\n| --- | --- |\n" + "\n".join(
            f"| {name} | {ruijin_ner.RUIJIN_TYPE_NAMES_ZH[name]} |" for name in types)
        subject = "Chinese medical named entities"
        intended_use = """Finding diseases, tests, drugs, anatomy, symptoms and the other types below in Chinese
clinical-guideline and scientific text, for research, curation and pre-annotation. It is not a medical device: do
not make clinical decisions from its output without review by a professional."""
        other_text = "text of other specialties or registers (clinical notes, colloquial text)"
    else:
        label_table = "| type |\n| --- |\n" + "\n".join(f"| {name} |" for name in types)
        subject = "named entities"
        intended_use = f"""Finding {_joined(types)} entities in text like that of the training corpus, for research,
curation and pre-annotation. Review its output before relying on it: see the per-type scores below."""
        other_text = "text unlike the training corpus (other domains, registers or sources)"
    corpus_phrase = f"`{dataset_name}`" if dataset_name != UNNAMED_CORPUS else dataset_name
    corpus_article = "the brat corpus " if dataset_name != UNNAMED_CORPUS else ""
    first, second = examples[0], examples[min(1, len(examples) - 1)]
    micro, macro = report["micro avg"]["f1-score"], report["macro avg"]["f1-score"]
    documents = corpus["splits"]["test"]["documents"] if corpus else None
    test_documents = f" ({documents} document{'s' * (documents != 1)})" if corpus else ""
    images = "\n".join(f"![{title}]({name})" for name, title in (("training_curves.png", "Training curves"),
                                                                 ("test_f1_per_type.png", "Test F1 per type"))
                       if (Path(args.model_dir) / name).is_file())
    return f"""# {args.repo_id.split('/')[-1]}

A character-level {architecture} tagger{bigram_phrase} for {subject} ({len(types)} types,
{len(config['id2label'])} BIO tags), trained on {corpus_article}{corpus_phrase}.
Test micro-F1 **{micro:.3f}**, macro-F1 **{macro:.3f}**
over the {report["micro avg"]["support"]} entities of the test split{test_documents} (entity level: type and both
boundaries must match; documents held out from training and model selection).

## Intended use

{intended_use}

## Labels

{label_table}

Each character gets one tag (`O`, `B-type`, `I-type`); whitespace characters are tagged too (from the entity
around them when the model skips blanks), so entities that cross line breaks come out whole.

## How to use

```python
from transformers import pipeline

ner = pipeline("token-classification", model="{args.repo_id}", trust_remote_code=True)
ner({first["text"]!r})
{_expected_output(first, types)}
```

The model's code is part of this repository, hence `trust_remote_code=True`. Hosted inference widgets may not
run custom code, so run the model locally if the widget on this page gives no answer. For an Inference
Endpoint, `handler.py` of this repository runs the same pipeline: it takes `{{"inputs": text or [texts],
"parameters": {{"brat": true}}}}` and returns the entities (with `brat`, also each text's brat `.ann` lines).

The pipeline decodes with the CRF (Viterbi), not with the argmax of each character's scores, and returns
character offsets into the input. The model itself takes one input position per character (blanks left out
when its config says `skip_blanks`; the pipeline gives them the tags of the entity around them), which the
tokenizer alone does not give (it joins digits): build the ids with the pipeline's `character_encoder`:

```python
import torch

text = {second["text"]!r}
input_ids = torch.tensor([ner.character_encoder.window_ids(text)])  # [CLS], one id per character fed, [SEP]
tags = ner.model.decode(input_ids).tags[0, 1:-1]  # Viterbi tag ids, one per character fed
print([ner.model.config.id2label[tag] for tag in tags.tolist()])
```

`ner.model(input_ids, labels=labels).loss` is the CRF negative log-likelihood (labels -100 at [CLS] and
[SEP]). For folders of documents, `predict.py` of the project writes brat `.ann` files.

## Training data

{_data_text(corpus, dataset_name)}
{_encoder_text(encoder, config)}

## Results on the test split

Entity-level scores per type (seqeval over the test windows: type, first and last character must match):

{report_to_markdown(report)}
{_overlap_text(overlap_report)}
{images}
{_cross_validation_text(Path(args.model_dir))}
## Limitations

- Trained on the corpus above only; {other_text} will score lower.
- Types with few training examples are markedly less accurate than frequent ones; see the table (support:
  test entities of the type).
- Overlapping or nested entities cannot be expressed with one BIO tag per character: the model predicts at
  most one entity per character.
- Long documents are cut into windows of {config.get('window_chars', 510)} characters, preferably at sentence
  ends; an entity that crosses a window boundary can come out split.
"""


def _expected_output(example: dict, types: list[str]) -> str:
    """The usage example's output comment: the entities known to be in the text, else the shape of one."""
    if example["entities"]:
        entity = example["entities"][0]
        return (f"# [{{'entity_group': {entity['entity_group']!r}, 'score': ..., 'word': {entity['word']!r}, "
                f"'start': {entity['start']}, 'end': {entity['end']}}}, ...] where it finds the annotated entities")
    return f"# [{{'entity_group': {types[0]!r}, 'score': ..., 'word': ..., 'start': ..., 'end': ...}}, ...]"


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _overlap_text(overlap_report: dict | None) -> str:
    """The lenient scores of the same windows, when train.py wrote them (older runs did not)."""
    if not overlap_report:
        return ""
    return ("Lenient scores of the same windows (type must match and the spans overlap, each entity matched at most "
            "once; the rule many shared tasks report):\n\n" + report_to_markdown(overlap_report))


def _cross_validation_text(model_dir: Path) -> str:
    """The recipe's cross-validated scores, when the model is the ensemble of a cross_validate.py run's folds
    (ensemble.py copies them), and its learning curve when one was drawn."""
    results = _read_json(model_dir / "cross_validation.json")
    if not results:
        return ""
    mean, deviation, pooled = results["mean"], results["standard_deviation"], results["pooled"]
    rows = "\n".join(f"| {rule} {label} | {mean[rule][name]:.3f} ± {deviation[rule][name]:.3f} | "
                     f"{pooled[rule][name]:.3f} |" for rule in ("strict", "overlap")
                     for name, label in (("f1", "micro-F1"), ("macro_f1", "macro-F1")))
    documents = sum(fold["documents"] for fold in results["folds"])
    curve = ("\n\n![Learning curve: out-of-fold F1 against training documents](learning_curve.png)"
             if (model_dir / "learning_curve.png").is_file() else "")
    return f"""
## Cross-validation

The members were trained by {len(results["folds"])}-fold cross-validation over the training and validation
documents, each scored on the {documents} documents of its own fold that it never saw (brat level):

| score | mean ± sd over folds | pooled |
| --- | ---: | ---: |
{rows}{curve}
"""


def _data_text(corpus: dict | None, dataset_name: str) -> str:
    if not corpus:
        return "The training run recorded no corpus summary."
    rows = "\n".join(f"| {split} | {sizes['documents']} | {sizes['windows']} |"
                     for split, sizes in corpus["splits"].items())
    name = "The corpus" if dataset_name == UNNAMED_CORPUS else f"The corpus `{dataset_name}`"
    window_chars = corpus.get("window_chars", corpus.get("max_chars"))  # the name of folders written before
    return (f"{name} was split by document ({corpus['split_rule']}); windows of at most {window_chars} characters."
            f"\n\n| split | documents | windows |\n| --- | ---: | ---: |\n{rows}\n")


def _encoder_text(encoder: dict, config: dict) -> str:
    has_layers = config.get("num_hidden_layers", 1)
    layer = f"{encoder_name(config.get('encoder'))} encoder" if has_layers else "embedding layer"
    if encoder.get("encoder_config"):
        return (f"The {layer} was trained from random weights (configuration `{encoder['encoder_config']}`), "
                "with the rest of the model.")
    if encoder.get("model_name_or_path"):
        where = "a local folder, " if encoder.get("local_folder") else ""
        return f"The {layer} started from {where}`{encoder['model_name_or_path']}`."
    return "The training run recorded no encoder."


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


if __name__ == "__main__":
    run_main(main, "push_to_hub.py")
