"""Training speed on a CPU per encoder size: how many minutes one epoch of the corpus takes, so that a user with
Hub access but no GPU can tell which pretrained Chinese encoder fits the minutes they have.

For each BERT shape (``--layers`` x ``--widths``: the sizes the miniature Chinese checkpoints come in, e.g.
uer/chinese_roberta_L-4_H-256 ... L-12_H-768, hfl/rbt3 = 3 x 768), random weights with the project's head
(BiLSTM, linear, CRF; train.py's defaults), it times training steps (forward, CRF loss, backward, AdamW) on the
corpus' own training windows as train.py makes them (``ruijin_ner.load``, ``encode_batch``, the same collator),
batches drawn at random with ``--seed``. Characters per second are the window characters of the timed batches
over their seconds (median of ``--repeats`` steps after one warm-up step); minutes per epoch are the training
split's window characters over that rate. Sizes take turns step by step, so a busy moment slows them alike.

    python benchmarks/bench_training.py                                   # 5 x 3 sizes on ruijin_round1 (minutes)
    python benchmarks/bench_training.py --layers 2 4 --widths 256 --repeats 2       # a quick look

The data and vocabulary are ``../shared/data/ruijin_round1/train`` and ``bert-base-chinese``'s where present
(else the sample corpus and the tiny test vocabulary). It prints Markdown with command, machine and date.
Accuracy from pretrained weights cannot be measured without them: this says only what fits in the minutes.
"""

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, DataCollatorForTokenClassification

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brat_ner import fast_inference  # noqa: E402
from brat_ner.training_data import encode_batch  # noqa: E402
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig  # noqa: E402
from dataset_script import ruijin_ner  # noqa: E402
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
REAL_CORPUS, REAL_VOCABULARY = SHARED / "ruijin_round1" / "train", SHARED / "bert-base-chinese"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6, 8, 12])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 768], help="hidden sizes (64 per head)")
    parser.add_argument("--window_chars", type=int, default=510, help="train.py's default")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per step (train.py's default is 32; "
                                                                   "characters per second barely depend on it)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per size, after one warm-up step")
    parser.add_argument("--budget_minutes", type=float, default=30, help="the epochs that fit in these minutes")
    parser.add_argument("--num_threads", type=int, default=None, help=fast_inference.NUM_THREADS_HELP)
    parser.add_argument("--data_dir", default=str(REAL_CORPUS if REAL_CORPUS.is_dir() else REPO / "data" / "sample"))
    parser.add_argument("--tokenizer", default=str(REAL_VOCABULARY if REAL_VOCABULARY.is_dir()
                                                   else REPO / "configs" / "tiny-bert"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def training_windows(args, tokenizer):
    """The training split's windows encoded as train.py encodes them, with their label names."""
    corpus = ruijin_ner.load(args.data_dir, window_chars=args.window_chars)
    label_names = corpus["train"].features["ner_tags"].feature.names
    encoded = corpus["train"].map(encode_batch, batched=True, remove_columns=corpus["train"].column_names,
                                  fn_kwargs={"tokenizer": tokenizer, "label_names": label_names, "skip_blanks": True})
    return encoded, label_names


def build_model(layers: int, width: int, tokenizer, label_names) -> BertBiLstmCrfForTokenClassification:
    config = BertBiLstmCrfConfig(
        vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers, num_attention_heads=width // 64,
        intermediate_size=4 * width, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)}, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, skip_blanks=True)
    return BertBiLstmCrfForTokenClassification(config).train()


def main(argv=None):
    args = parse_args(argv)
    num_threads = fast_inference.set_num_threads(args.num_threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    windows, label_names = training_windows(args, tokenizer)
    epoch_characters = sum(windows["characters"])
    collate = DataCollatorForTokenClassification(tokenizer)
    rows = {(layers, width): [] for layers in args.layers for width in args.widths}
    models = {}
    for key in rows:
        torch.manual_seed(args.seed)
        model = build_model(*key, tokenizer, label_names)
        models[key] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    order = random.Random(args.seed)
    columns = ("input_ids", "attention_mask", "labels")
    for repeat in range(args.repeats + 1):  # the first round warms up
        indices = order.sample(range(len(windows)), min(args.batch_size, len(windows)))
        batch = windows.select(indices)
        inputs = collate([{name: row[name] for name in columns} for row in batch])
        for key, (model, optimizer) in models.items():
            start = time.perf_counter()
            model(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if repeat:
                rows[key].append(sum(batch["characters"]) / (time.perf_counter() - start))
    print(report(args, rows, models, epoch_characters, len(windows), num_threads))


def report(args, rows, models, epoch_characters, num_windows, num_threads) -> str:
    command = " ".join(["python", "benchmarks/bench_training.py", *sys.argv[1:]])
    lines = [f"`{command}`", "",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}; "
             f"{num_threads} threads; torch {torch.__version__}, transformers {transformers.__version__}. "
             f"Corpus: {args.data_dir}, training split: {num_windows:,} windows of at most {args.window_chars} "
             f"characters, {epoch_characters:,} characters; batch {args.batch_size}; random weights, the project's "
             f"head; median of {args.repeats} steps (sizes interleaved).", "",
             f"| layers x width | parameters | characters/s | minutes per epoch | epochs in {args.budget_minutes:g} "
             "min |", "| --- | ---: | ---: | ---: | ---: |"]
    for (layers, width), speeds in rows.items():
        speed = statistics.median(speeds)
        minutes = epoch_characters / speed / 60
        parameters = sum(parameter.numel() for parameter in models[layers, width][0].parameters())
        lines.append(f"| {layers} x {width} | {parameters / 1e6:.1f} M | {speed:,.0f} | {minutes:,.1f} | "
                     f"{args.budget_minutes / minutes:.2f} |")
    return "\n".join(lines)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return f"{os.cpu_count()} CPUs, {cpu or platform.processor() or platform.machine()}"


if __name__ == "__main__":
    main()
