"""The model card (README.md of a model repository) of a model folder written by train.py or ensemble.py: its
metadata (language, tags, widget examples, the Hub's eval results) and its text (architecture, head settings, labels,
usage, training data, test scores, cross-validation, limitations), from the folder's config, reports and corpus
summary. push_to_hub.py writes it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from brat_ner.cli import UsageError
from brat_ner.encoders import encoder_name
from brat_ner.evaluation import report_to_markdown
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig
from dataset_script import ruijin_ner

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


def model_card(model_dir: Path, args) -> ModelCard:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    report = json.loads((model_dir / "test_report.json").read_text(encoding="utf-8"))
    corpus = read_json(model_dir / "corpus.json")
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
    overlap_report = read_json(model_dir / "test_report_overlap.json")
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
            raise UsageError(f"{path}: no such file (--widget_examples_file)")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise UsageError(f"{path} holds no example text (one per line)")
        return [{"text": text, "entities": []} for text in texts]
    data_dir = args.data_dir or (corpus or {}).get("data_dir")
    examples = corpus_sentences(Path(data_dir)) if data_dir and Path(data_dir).is_dir() else []
    if examples:
        return examples
    if is_ruijin:
        return [{"text": text, "entities": [RUIJIN_FIRST_EXAMPLE_ENTITY] if index == 0 else []}
                for index, text in enumerate(RUIJIN_WIDGET_EXAMPLES)]
    raise UsageError(f"no example texts for the widget: the training corpus ({data_dir}) is not "
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

{_head_text(config)}

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
    results = read_json(model_dir / "cross_validation.json")
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


def _head_text(config: dict) -> str:
    """The head's settings (``BertBiLstmCrfConfig.head_options``) as the folder's config holds them."""
    rows = "\n".join(f"| `{name}` | {config[name]} |" for name in BertBiLstmCrfConfig.head_options if name in config)
    return f"The head's settings (`config.json`):\n\n| setting | value |\n| --- | --- |\n{rows}\n"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
