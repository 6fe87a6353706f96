"""Characters per second of predict.py's path against the stock token-classification pipeline, on real text.

For each encoder size (``--sizes``), random weights:

* ``project``: ``brat_ner.tagging.tag_texts`` through the model's own pipeline (``BertBiLstmCrfNerPipeline``):
  windows of 510 characters, one position per non-blank character (``skip_blanks``, train.py's default),
  windows of similar length batched together across the documents (packed), BiLSTM, CRF Viterbi and confidence
  scores (CRF marginals);
* ``unpacked``: the same with ``pack_windows=0``: windows batched in input order, each length of a batch run
  separately (the pipeline's batching before 2026-12-07);
* ``user-path``: what a user calls: the same model saved to a folder (``save_pretrained``, as train.py writes
  it) and loaded by ``pipeline("token-classification", model=FOLDER, trust_remote_code=...)``, called on each
  text alone (``ner(text, batch_size=...)``);
* ``every-position``: the same with one position per character, blanks included (models trained with
  ``--skip_blanks false``, and those trained before it existed);
* ``int8`` / ``bf16`` / ``onnx``: the ``project`` pipeline with ``fast_inference.quantize_int8``, with the model in
  bfloat16 (``predict.py --bf16 true``), with ``fast_inference.use_onnx``;
* ``ensemble`` / ``ensemble-int8``: the ``project`` model and ``--ensemble_members`` - 1 more of the same size
  (other random weights) as one ``BertBiLstmCrfEnsembleForTokenClassification`` (ensemble.py's, averaging their
  CRF potentials), float and with ``fast_inference.quantize_int8``;
* ``stock``: ``transformers``' token-classification pipeline with ``BertForTokenClassification`` (argmax of the
  logits, ``aggregation_strategy="simple"``), the same encoder size, the same text cut into pieces of 500
  characters (the stock tokenizer drops whitespace and may join digits and Latin letters, so it feeds fewer
  positions per character than the project, which keeps one per character for exact offsets);
* ``stock-fixed``: the same stock pipeline on the text cut every 500 characters, wherever that falls: every piece
  but each document's last of one length, so its batches hold little padding (what a user of the stock pipeline
  most simply does; entities cut at the pieces' edges are its user's problem).

Same threads, same batch size; the variants take turns within every repetition (a busy machine slows them alike)
and each figure is the median of ``--repeats``. Then a profile of one run of the project's pipeline with each
batching (``unpacked``, ``packed``): time inside the encoder, the BiLSTM, Viterbi, the marginals, and the rest
(windows, batching, entity dicts: Python overhead), and what the encoder computed: its passes, windows per pass and
the share of its positions that were padding.

    python benchmarks/bench_inference.py                                    # both sizes, 20,000 characters
    python benchmarks/bench_inference.py --sizes small --chars 2000 --repeats 1   # a quick check
"""

import argparse
import contextlib
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
import transformers
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification, pipeline

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brat_ner import fast_inference  # noqa: E402
from brat_ner.tagging import tag_texts  # noqa: E402
from brat_ner.trust import trust_remote_code  # noqa: E402
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig  # noqa: E402
from dataset_script.brat import read_text  # noqa: E402
from modeling_bert_bilstm_crf import (  # noqa: E402
    BertBiLstmCrfEnsembleForTokenClassification,
    BertBiLstmCrfForTokenClassification,
)
from pipeline_bert_bilstm_crf import BertBiLstmCrfNerPipeline  # noqa: E402
from processing_bert_bilstm_crf import split_into_windows  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
BERT_BASE_CHINESE = SHARED / "bert-base-chinese"
UNLABELED = SHARED / "ruijin_round1" / "unlabeled"
SAMPLE = REPO / "data" / "sample"
NUM_LABELS = 31  # BIO over the Ruijin corpus' 15 types
STOCK_PIECE_CHARS = 500
VARIANTS = ("project", "unpacked", "user-path", "every-position", "int8", "bf16", "onnx", "ensemble", "ensemble-int8",
            "stock", "stock-fixed")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["base", "small"], choices=["base", "small", "recipe"],
                        help="base: bert-base-chinese's config, BiLSTM 2 x 256; small: 4 layers x 256, BiLSTM 2 x "
                             "128; recipe: the CPU recipe's (no transformer layers, bigrams, BiLSTM 2 x 256)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--chars", type=int, default=20_000, help="characters of text, the same for every variant")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8, help="windows (pieces) per forward pass")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="torch and ONNX Runtime threads (default: the cores available to this process)")
    parser.add_argument("--ensemble_members", type=int, default=5,
                        help="models in the ensemble variants (cross_validate.py's default folds: 5)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def benchmark_texts(num_chars: int) -> tuple[list[str], str]:
    """The first ``num_chars`` characters of the unlabeled Ruijin documents in name order (the last document cut),
    else of data/sample; and where they came from."""
    folder = UNLABELED if UNLABELED.is_dir() else SAMPLE
    texts, remaining = [], num_chars
    for path in sorted(folder.glob("*.txt")):
        if remaining <= 0:
            break
        texts.append(read_text(path)[:remaining])
        remaining -= len(texts[-1])
    return texts, str(folder)


def encoder_config(size: str) -> tuple[dict, dict]:
    """BERT config values and the head's (BiLSTM, bigrams, windows)."""
    if size == "recipe":  # configs/cpu-recipe.json: no transformer layers, bigram features, windows of 126
        return dict(hidden_size=128, num_hidden_layers=0, num_attention_heads=1, intermediate_size=128,
                    vocab_size=21128), dict(lstm_hidden_size=256, bigram_buckets=50021, bigram_embedding_size=32,
                                            window_chars=126)
    if size == "small":
        return dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                    vocab_size=21128), dict(lstm_hidden_size=128, window_chars=510)
    config_file = BERT_BASE_CHINESE / "config.json"
    config = BertConfig.from_json_file(config_file) if config_file.is_file() else BertConfig(vocab_size=21128)
    return {key: getattr(config, key) for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                  "intermediate_size", "vocab_size")}, dict(lstm_hidden_size=256,
                                                                                            window_chars=510)


def build_taggers(size: str, tokenizer, variants, scratch: Path, num_threads: int, batch_size: int,
                  ensemble_members: int):
    """One tagging function per variant, all from the same random encoder weights; the project's pipeline; the
    stock variants' encoders (``_fed`` counts what they compute)."""
    bert, head = encoder_config(size)
    labels = {"id2label": {i: f"L{i}" for i in range(NUM_LABELS)}, "label2id": {f"L{i}": i for i in range(NUM_LABELS)}}
    config = BertBiLstmCrfConfig(**bert, **head, **labels, use_lstm=True, skip_blanks=True)
    model = BertBiLstmCrfForTokenClassification(config).eval()
    project = BertBiLstmCrfNerPipeline(model=model, tokenizer=tokenizer, device="cpu")
    taggers, stock_encoders = {}, {}
    for variant in variants:
        if variant.startswith("stock"):
            stock_model = BertForTokenClassification(BertConfig(**bert, **labels)).eval()
            stock_model.bert.load_state_dict(model.bert.state_dict())
            stock = pipeline("token-classification", model=stock_model, tokenizer=tokenizer, device="cpu",
                             aggregation_strategy="simple")
            cut = fixed_pieces if variant == "stock-fixed" else sentence_pieces
            taggers[variant] = lambda texts, stock=stock, cut=cut: list(stock(cut(texts), batch_size=batch_size))
            stock_encoders[variant] = stock_model.bert
            continue
        if variant in ("project", "unpacked"):
            pack = {"pack_windows": 0} if variant == "unpacked" else {}
            taggers[variant] = lambda texts, pack=pack: tag_texts(project, texts, batch_size, **pack)
            continue
        if variant == "user-path":
            user = saved_and_loaded(model, tokenizer, scratch / f"{size}-model")
            taggers[variant] = lambda texts, user=user: [user(text, batch_size=batch_size) for text in texts]
            continue
        variant_model = model
        if variant == "every-position":  # the same weights, blanks fed
            variant_model = copy.deepcopy(model)
            variant_model.config.skip_blanks = False
        elif variant == "bf16":
            variant_model = copy.deepcopy(model).to(torch.bfloat16)
        elif variant.startswith("ensemble"):
            others = [BertBiLstmCrfForTokenClassification(config) for _ in range(ensemble_members - 1)]
            variant_model = BertBiLstmCrfEnsembleForTokenClassification.from_members([model, *others])
        tagger = BertBiLstmCrfNerPipeline(model=variant_model, tokenizer=tokenizer, device="cpu")
        if variant.endswith("int8"):
            fast_inference.quantize_int8(tagger)  # a quantised copy: the other variants keep the float model
        elif variant == "onnx":
            fast_inference.use_onnx(tagger, scratch / f"{size}.onnx", num_threads)
        taggers[variant] = lambda texts, tagger=tagger: tag_texts(tagger, texts, batch_size)
    return taggers, project, stock_encoders


def saved_and_loaded(model, tokenizer, folder: Path):
    """The model as a user gets it: saved as train.py saves it (weights, config, modelling code, tokenizer) and
    loaded through ``pipeline`` with the project's trust rule."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return pipeline("token-classification", model=str(folder), device="cpu",
                    trust_remote_code=trust_remote_code(str(folder), asked=False))


def sentence_pieces(texts: list[str]) -> list[str]:
    """``stock``'s pieces: cut as the project cuts its windows (sentence ends first), so of uneven lengths."""
    return [text[start:end] for text in texts for start, end in split_into_windows(text, STOCK_PIECE_CHARS)]


def fixed_pieces(texts: list[str]) -> list[str]:
    """``stock-fixed``'s pieces: every ``STOCK_PIECE_CHARS`` characters, wherever that falls."""
    return [text[start : start + STOCK_PIECE_CHARS] for text in texts for start in range(0, len(text),
                                                                                          STOCK_PIECE_CHARS)]


def measure(taggers: dict, texts: list[str], repeats: int) -> dict[str, list[float]]:
    """Characters per second of each variant, one list per variant; variants interleaved, after one warm-up."""
    num_chars = sum(map(len, texts))
    for tag in taggers.values():
        tag(texts[:1])
    speeds = {variant: [] for variant in taggers}
    for _ in range(repeats):
        for variant, tag in taggers.items():
            start = time.perf_counter()
            tag(texts)
            speeds[variant].append(num_chars / (time.perf_counter() - start))
    return speeds


@contextlib.contextmanager
def _timed(owner, name: str, totals: dict, label: str):
    """Add the time spent in ``owner.name(...)`` to ``totals[label]`` while inside the block."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, timed)
    try:
        yield
    finally:
        delattr(owner, name)


@contextlib.contextmanager
def _fed(encoder, counts: dict):
    """Count the encoder's passes, windows and positions, and the positions that are padding, while in the block."""

    def count(module, args, kwargs):
        input_ids = args[0] if args else kwargs["input_ids"]
        attention_mask = kwargs.get("attention_mask")
        counts["passes"] += 1
        counts["windows"] += input_ids.shape[0]
        counts["positions"] += input_ids.numel()
        counts["padded"] += 0 if attention_mask is None else int((attention_mask == 0).sum())

    hook = encoder.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()


def profile(tag, model, texts: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds of one run of ``tag`` spent in each part of the project's model (the rest is Python overhead), and
    what its encoder computed (``_fed``)."""
    totals = dict.fromkeys(["encoder", "BiLSTM", "CRF Viterbi", "CRF marginals"], 0.0)
    fed = dict.fromkeys(["passes", "windows", "positions", "padded"], 0)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_fed(model.bert, fed))
        stack.enter_context(_timed(model.bert, "forward", totals, "encoder"))
        stack.enter_context(_timed(model, "_bilstm", totals, "BiLSTM"))
        stack.enter_context(_timed(model.crf, "viterbi_tags", totals, "CRF Viterbi"))
        stack.enter_context(_timed(model.crf, "marginals", totals, "CRF marginals"))
        start = time.perf_counter()
        tag(texts)
        total = time.perf_counter() - start
    totals["other (windows, batching, linear, entities)"] = total - sum(totals.values())
    totals["total"] = total
    return totals, fed


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}"


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    num_threads = fast_inference.set_num_threads(args.num_threads)
    texts, source = benchmark_texts(args.chars)
    tokenizer_folder = BERT_BASE_CHINESE if BERT_BASE_CHINESE.is_dir() else REPO / "configs" / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    print(f"# Inference speed, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"`python benchmarks/bench_inference.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print(f"Machine: {machine()}; {num_threads} threads; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, onnxruntime {onnxruntime.__version__}\n")
    print(f"Text: {sum(map(len, texts)):,} characters in {len(texts)} documents from {source}; batch "
          f"{args.batch_size}; random weights; median (min-max) of {args.repeats} interleaved repetitions.\n")
    print("| encoder | variant | characters/s | vs stock | vs stock-fixed |")
    print("| --- | --- | ---: | ---: | ---: |")
    profiles, fed = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            taggers, project, stock_encoders = build_taggers(size, tokenizer, args.variants, Path(scratch),
                                                             num_threads, args.batch_size, args.ensemble_members)
            speeds = measure(taggers, texts, args.repeats)
            baselines = [statistics.median(speeds[name]) if name in speeds else None
                         for name in ("stock", "stock-fixed")]
            for variant, values in speeds.items():
                median = statistics.median(values)
                ratios = " | ".join(f"{median / baseline:.2f}x" if baseline else "-" for baseline in baselines)
                print(f"| {size} | {variant} | {median:,.0f} ({min(values):,.0f}-{max(values):,.0f}) | {ratios} |")
            if {"project", "unpacked"} & set(args.variants):
                for batching, pack in (("unpacked", {"pack_windows": 0}), ("packed", {})):
                    tag = lambda texts, pack=pack: tag_texts(project, texts, args.batch_size, **pack)  # noqa: E731
                    profiles[size, batching] = profile(tag, project.model, texts)
            for variant, encoder in stock_encoders.items():
                fed[size, variant] = dict.fromkeys(["passes", "windows", "positions", "padded"], 0)
                with _fed(encoder, fed[size, variant]):
                    taggers[variant](texts)
    if profiles:
        print("\nProfile of one run of the project's pipeline per batching (seconds, share of the run):\n")
        print("| encoder | batching | part | seconds | share |")
        print("| --- | --- | --- | ---: | ---: |")
        for (size, batching), (parts, _) in profiles.items():
            for part, seconds in parts.items():
                print(f"| {size} | {batching} | {part} | {seconds:.3f} | {seconds / parts['total']:.1%} |")
    fed = {key: counts for key, (_, counts) in profiles.items()} | fed
    if fed:
        num_chars = sum(map(len, texts))
        print("\nWhat the encoder computed in one run of the project's pipeline per batching and of the stock "
              "variants (windows or pieces; positions include [CLS], [SEP] and padding):\n")
        print("| encoder | run | passes | windows per pass | positions | per character | padded share |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for (size, run), counts in fed.items():
            print(f"| {size} | {run} | {counts['passes']:,} | {counts['windows'] / counts['passes']:.2f} | "
                  f"{counts['positions']:,} | {counts['positions'] / num_chars:.2f} | "
                  f"{counts['padded'] / counts['positions']:.1%} |")


if __name__ == "__main__":
    main()
