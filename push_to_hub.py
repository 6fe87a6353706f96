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

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, SpaceCard
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import HfArgumentParser

from dataset_script import ruijin_ner
from ner_evaluation import report_to_markdown

# What from_pretrained, AutoTokenizer and the card need; checkpoints, optimizer states and pickles stay home.
MODEL_FILES = ("model.safetensors", "config.json", "modeling_bert_bilstm_crf.py", "tokenizer_config.json")
REQUIRED_FILES = (*MODEL_FILES, "test_report.json")  # the card's results
TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt")  # at least one
OPTIONAL_FILES = ("special_tokens_map.json", "training_curves.png", "test_f1_per_type.png")
# The demo Space: its app and requirements as they are in space/, its card (README.md) given the model id.
SPACE_SOURCE = Path(__file__).resolve().parent / "space"
SPACE_FILES = ("app.py", "requirements.txt")
WIDGET_EXAMPLES = (
    "2 型糖尿病患者应每 3 个月检测一次糖化血红蛋白（HbA1c）。",
    "二甲双胍 500 mg 每日 2 次口服，常见不良反应为腹泻和恶心。",
    "妊娠期糖尿病孕妇在饮食控制无效时应使用胰岛素治疗。",
)


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "The --output_dir of train.py."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. your-name/bert-bilstm-crf-chinese-medical-ner."})
    dry_run: str | None = field(default=None, metadata={"help": "Write the repository folder here; no upload."})
    private: bool = field(default=False)
    license: str = field(default="apache-2.0")
    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset name on the card; default: the training corpus' folder."}
    )
    dataset_repo_id: str | None = field(
        default=None, metadata={"help": "Also push the prepared corpus as a Hub dataset (also the card's dataset)."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Corpus for --dataset_repo_id; default: the one the model was trained on."}
    )
    space_id: str | None = field(
        default=None, metadata={"help": "Also publish the Gradio demo (space/) as this Space, wired to --repo_id."}
    )


def main():
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses()
    if args.space_id:  # before anything is written or uploaded
        check_space_id(args.space_id)
    if args.dry_run:
        folder = Path(args.dry_run)
        if folder.exists() and any(folder.iterdir()):  # stale files would be published with the new ones
            raise SystemExit(f"push_to_hub.py: {folder} is not empty; give a new --dry_run folder")
        build_repository(Path(args.model_dir), folder, args)
        print(f"Wrote the repository folder to {args.dry_run} (nothing uploaded)")
        if args.space_id:
            build_space(folder / "space", args)
            print(f"Wrote the Space folder to {folder / 'space'} (nothing uploaded)")
        return
    api = HfApi()
    push(args, api)
    if args.space_id:
        push_space(args, api)


def push(args, api: HfApi) -> None:
    """Create the repository and upload the folder (and optionally the dataset) with the Hub client. Files of
    earlier uploads that this one lacks are deleted, so the repository holds exactly the folder."""
    dataset = prepared_dataset_arguments(Path(args.model_dir), args) if args.dataset_repo_id else None
    with tempfile.TemporaryDirectory() as staging:
        build_repository(Path(args.model_dir), Path(staging), args)
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=staging, repo_id=args.repo_id, delete_patterns="*",
                          commit_message="Upload BERT-BiLSTM-CRF NER model")
    if dataset:
        ruijin_ner.load(**dataset).push_to_hub(args.dataset_repo_id, private=args.private)


def check_space_id(space_id: str) -> None:
    try:
        validate_repo_id(space_id)
    except HFValidationError as error:
        raise SystemExit(f"push_to_hub.py: --space_id: {error}") from None


def build_space(folder: Path, args) -> None:
    """The Space repository: space/'s app and requirements, and its card with --repo_id as the model, which the
    app loads (the first of the card's ``models``; the Hub also links the Space from the model's page)."""
    check_space_id(args.space_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(SPACE_SOURCE / name, folder / name)
    card = SpaceCard.load(SPACE_SOURCE / "README.md")
    card.data.models = [args.repo_id]
    card.save(folder / "README.md")


def push_space(args, api: HfApi) -> None:
    """Create the Space (Gradio SDK) and upload its folder; files of earlier uploads that it lacks are deleted."""
    with tempfile.TemporaryDirectory() as staging:
        build_space(Path(staging), args)
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
        raise SystemExit("push_to_hub.py: --dataset_repo_id needs --data_dir (the model folder has no corpus.json)")
    return {"data_dir": data_dir, "max_chars": corpus.get("max_chars", 510)}


def build_repository(model_dir: Path, folder: Path, args) -> None:
    """Check the model folder, then copy the files the model needs and write the model card."""
    for repo_id in filter(None, (args.repo_id, args.dataset_repo_id)):
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise SystemExit(f"push_to_hub.py: {error}") from None
    if not model_dir.is_dir():
        raise SystemExit(f"push_to_hub.py: {model_dir}: no such folder")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in TOKENIZER_VOCABULARIES):
        missing.append(" or ".join(TOKENIZER_VOCABULARIES))
    if missing:
        raise SystemExit(f"push_to_hub.py: {model_dir} lacks {', '.join(missing)}: is it a train.py output folder?")
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES + TOKENIZER_VOCABULARIES + OPTIONAL_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, folder / name)
    model_card(model_dir, args).save(folder / "README.md")


def model_card(model_dir: Path, args) -> ModelCard:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    report = json.loads((model_dir / "test_report.json").read_text(encoding="utf-8"))
    corpus = _read_json(model_dir / "corpus.json")
    dataset_name = args.dataset_name or _corpus_name(corpus)
    encoder = (corpus or {}).get("encoder") or {}
    pretrained = encoder.get("model_name_or_path") if not encoder.get("encoder_config") else None
    data = ModelCardData(
        language="zh",
        license=args.license,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["token-classification", "ner", "medical", "chinese", "bert", "bilstm", "crf"],
        datasets=[args.dataset_repo_id] if args.dataset_repo_id else None,
        metrics=["precision", "recall", "f1"],
        model_name=args.repo_id.split("/")[-1],
        # A Hub id only: a local folder (an encoder from pretrain_mlm.py, say) means nothing to Hub readers.
        base_model=pretrained if pretrained and not Path(pretrained).exists() else None,
        eval_results=_eval_results(report, dataset_name, args.dataset_repo_id),
        widget=[{"text": text} for text in WIDGET_EXAMPLES],
    )
    card_text = _card_text(args, config, report, corpus, dataset_name, encoder)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text}")


def _corpus_name(corpus: dict | None) -> str:
    """The training corpus' folder as a name (``ruijin_round1/train``), when the card is given none."""
    return "/".join(Path(corpus["data_dir"]).parts[-2:]) if corpus else "brat corpus"


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


def _card_text(args, config: dict, report: dict, corpus: dict | None, dataset_name: str, encoder: dict) -> str:
    architecture = "BERT → BiLSTM → CRF" if config.get("use_lstm", True) else "BERT → CRF"
    types = sorted({label[2:] for label in config["id2label"].values() if label != "O"})
    type_rows = "\n".join(f"| {name} | {ruijin_ner.RUIJIN_TYPE_NAMES_ZH.get(name, '')} |" for name in types)
    micro, macro = report["micro avg"]["f1-score"], report["macro avg"]["f1-score"]
    documents = corpus["splits"]["test"]["documents"] if corpus else None
    test_documents = f" ({documents} document{'s' * (documents != 1)})" if corpus else ""
    images = "\n".join(f"![{title}]({name})" for name, title in (("training_curves.png", "Training curves"),
                                                                 ("test_f1_per_type.png", "Test F1 per type"))
                       if (Path(args.model_dir) / name).is_file())
    return f"""# {args.repo_id.split('/')[-1]}

A character-level {architecture} tagger for Chinese medical named entities ({len(types)} types,
{len(config['id2label'])} BIO tags), trained on the brat corpus `{dataset_name}`. Test micro-F1 **{micro:.3f}**,
macro-F1 **{macro:.3f}** over the {report["micro avg"]["support"]} entities of the test split{test_documents}
(entity level: type and both boundaries must match; documents held out from training and model selection).

## Intended use

Finding diseases, tests, drugs, anatomy, symptoms and the other types below in Chinese clinical-guideline and
scientific text, for research, curation and pre-annotation. It is not a medical device: do not make clinical
decisions from its output without review by a professional.

## Labels

| type | 中文 |
| --- | --- |
{type_rows}

Each character gets one tag (`O`, `B-type`, `I-type`); whitespace characters are tagged too, so entities that
cross line breaks come out whole.

## How to use

```python
from transformers import pipeline

ner = pipeline("token-classification", model="{args.repo_id}", trust_remote_code=True)
ner("{WIDGET_EXAMPLES[0]}")
# [{{'entity_group': 'Disease', 'score': ..., 'word': '2 型糖尿病', 'start': 0, 'end': 6}}, ...]
```

The model's code is part of this repository, hence `trust_remote_code=True`. Hosted inference widgets may not
run custom code, so run the model locally if the widget on this page gives no answer.

The pipeline decodes with the CRF (Viterbi), not with the argmax of each character's scores, and returns
character offsets into the input. The model itself takes one input position per character, which the
tokenizer alone does not give (it drops spaces and joins digits): build the ids with the pipeline's
`character_encoder`:

```python
import torch

text = "{WIDGET_EXAMPLES[1]}"
input_ids = torch.tensor([ner.character_encoder.window_ids(text)])  # [CLS], one id per character, [SEP]
tags = ner.model.decode(input_ids)[0, 1:-1]  # Viterbi tag ids, one per character
print([ner.model.config.id2label[tag] for tag in tags.tolist()])
```

`ner.model(input_ids, labels=labels).loss` is the CRF negative log-likelihood (labels -100 at [CLS] and
[SEP]). For folders of documents, `predict.py` of the project writes brat `.ann` files.

## Training data

{_data_text(corpus)}
{_encoder_text(encoder)}

## Results on the test split

Entity-level scores per type (seqeval over the test windows: type, first and last character must match):

{report_to_markdown(report)}
{images}

## Limitations

- Trained on the corpus above only; text of other specialties or registers (clinical notes, colloquial text)
  will score lower.
- Types with few training examples are markedly less accurate than frequent ones; see the table (support:
  test entities of the type).
- Overlapping or nested entities cannot be expressed with one BIO tag per character: the model predicts at
  most one entity per character.
- Long documents are cut into windows of {config.get('window_chars', 510)} characters, preferably at sentence
  ends; an entity that crosses a window boundary can come out split.
"""


def _data_text(corpus: dict | None) -> str:
    if not corpus:
        return "The training run recorded no corpus summary."
    rows = "\n".join(f"| {split} | {sizes['documents']} | {sizes['windows']} |"
                     for split, sizes in corpus["splits"].items())
    return (f"Corpus `{corpus['data_dir']}`, split by document ({corpus['split_rule']}); windows of at most "
            f"{corpus['max_chars']} characters.\n\n| split | documents | windows |\n| --- | ---: | ---: |\n{rows}\n")


def _encoder_text(encoder: dict) -> str:
    if encoder.get("encoder_config"):
        return (f"The BERT encoder was trained from random weights (configuration `{encoder['encoder_config']}`), "
                "with the rest of the model.")
    if encoder.get("model_name_or_path"):
        return f"The BERT encoder started from `{encoder['model_name_or_path']}`."
    return "The training run recorded no encoder."


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


if __name__ == "__main__":
    main()
