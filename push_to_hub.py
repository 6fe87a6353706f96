#!/usr/bin/env python
"""Publish a model trained by train.py on the Hugging Face Hub, with a model card written from its results.

    python push_to_hub.py --model_dir outputs/ruijin --repo_id your-name/bert-bilstm-crf-chinese-medical-ner
    python push_to_hub.py --model_dir outputs/ruijin --repo_id your-name/... --dry_run hub_folder/

The repository holds what loading needs and nothing else: safetensors weights, ``config.json`` (with
``auto_map`` and the model's own token-classification pipeline), ``modeling_bert_bilstm_crf.py``, the
tokenizer files, the plots, and a ``README.md`` model card whose metadata (``model-index``) and per-type
table are read from the training output, never typed in. ``--dry_run DIR`` writes exactly that folder and
uploads nothing. ``--dataset_repo_id`` also pushes the prepared corpus (Parquet, ClassLabel features).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import HfArgumentParser

from dataset_script import ruijin_ner
from ner_evaluation import report_to_markdown

# What from_pretrained, AutoTokenizer and the card need; checkpoints, optimizer states and pickles stay home.
UPLOADED_FILES = (
    "model.safetensors", "config.json", "modeling_bert_bilstm_crf.py", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "training_curves.png", "test_f1_per_type.png",
)
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
    dataset_name: str = field(default="Ruijin diabetes NER (brat)", metadata={"help": "Dataset name on the card."})
    dataset_repo_id: str | None = field(
        default=None, metadata={"help": "Also push the prepared corpus (--data_dir) as a Hub dataset."}
    )
    data_dir: str | None = field(default=None, metadata={"help": "Corpus for --dataset_repo_id."})


def main():
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses()
    if args.dry_run:
        build_repository(Path(args.model_dir), Path(args.dry_run), args)
        print(f"Wrote the repository folder to {args.dry_run} (nothing uploaded)")
        return
    push(args, HfApi())


def push(args, api: HfApi) -> None:
    """Create the repository and upload the folder (and optionally the dataset) with the Hub client."""
    with tempfile.TemporaryDirectory() as staging:
        build_repository(Path(args.model_dir), Path(staging), args)
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=staging, repo_id=args.repo_id, commit_message="Upload BERT-BiLSTM-CRF NER model")
    if args.dataset_repo_id:
        ruijin_ner.load(args.data_dir).push_to_hub(args.dataset_repo_id, private=args.private)


def build_repository(model_dir: Path, folder: Path, args) -> None:
    """Copy the files the model needs and write the model card."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name in ("model.safetensors", "config.json", "modeling_bert_bilstm_crf.py",
                                 "test_report.json", "test_results.json") if not (model_dir / name).is_file()]
    if missing:
        raise SystemExit(f"push_to_hub.py: {model_dir} lacks {', '.join(missing)}: is it a train.py output folder?")
    for name in UPLOADED_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, folder / name)
    model_card(model_dir, args).save(folder / "README.md")


def model_card(model_dir: Path, args) -> ModelCard:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    report = json.loads((model_dir / "test_report.json").read_text(encoding="utf-8"))
    corpus = _read_json(model_dir / "corpus.json")
    data = ModelCardData(
        language="zh",
        license=args.license,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["token-classification", "ner", "medical", "chinese", "bert", "bilstm", "crf"],
        datasets=[args.dataset_repo_id] if args.dataset_repo_id else None,
        metrics=["precision", "recall", "f1"],
        model_name=args.repo_id.split("/")[-1],
        eval_results=_eval_results(report, args.dataset_name),
        widget=[{"text": text} for text in WIDGET_EXAMPLES],
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_card_text(args, config, report, corpus)}")


def _eval_results(report: dict, dataset_name: str) -> list[EvalResult]:
    common = {"task_type": "token-classification", "task_name": "Named entity recognition",
              "dataset_type": "brat", "dataset_name": dataset_name, "dataset_split": "test"}
    rows = (("micro avg", "f1", "micro-F1 (entities)"), ("micro avg", "precision", "micro precision"),
            ("micro avg", "recall", "micro recall"), ("macro avg", "f1", "macro-F1 over types"))
    return [EvalResult(metric_type=metric, metric_value=round(report[row][_column(metric)], 4), metric_name=name,
                       **common) for row, metric, name in rows]


def _column(metric: str) -> str:
    return "f1-score" if metric == "f1" else metric


def _card_text(args, config: dict, report: dict, corpus: dict | None) -> str:
    architecture = "BERT → BiLSTM → CRF" if config.get("use_lstm", True) else "BERT → CRF"
    types = sorted({label[2:] for label in config["id2label"].values() if label != "O"})
    type_rows = "\n".join(f"| {name} | {ruijin_ner.RUIJIN_TYPE_NAMES_ZH.get(name, '')} |" for name in types)
    micro, macro = report["micro avg"]["f1-score"], report["macro avg"]["f1-score"]
    data_text = _data_text(corpus)
    return f"""# {args.repo_id.split('/')[-1]}

A character-level {architecture} tagger for Chinese medical named entities ({len(types)} types,
{len(config['id2label'])} BIO tags), trained on brat-annotated diabetes literature. Test micro-F1 **{micro:.3f}**,
macro-F1 **{macro:.3f}** (entity level: type and both boundaries must match; held-out documents).

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

The pipeline decodes with the CRF (Viterbi), not with the argmax of each character's scores, and returns
character offsets into the input. The model itself:

```python
from transformers import AutoModelForTokenClassification, AutoTokenizer

model = AutoModelForTokenClassification.from_pretrained("{args.repo_id}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{args.repo_id}", trust_remote_code=True)
```

`model(**inputs, labels=labels).loss` is the CRF negative log-likelihood and `model.decode(...)` returns the
Viterbi tags. For folders of documents, `predict.py` of the project writes brat `.ann` files.

## Training data

{data_text}

## Results on the test split

Entity-level scores per type (seqeval over the test windows: type, first and last character must match):

{report_to_markdown(report)}
![Training curves](training_curves.png)
![Test F1 per type](test_f1_per_type.png)

## Limitations

- Trained on diabetes literature and guidelines; other specialties, clinical notes and colloquial text will
  score lower.
- Rare types (few hundred training examples) are markedly less accurate than frequent ones; see the table.
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


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


if __name__ == "__main__":
    main()
