"""How much slower predict.py runs when another CPU-bound PyTorch process shares the machine's cores.

A user tagging documents while something else trains on the same CPU should lose about the share of the CPU the
other job takes (2x on 2 cores), not more: more threads than cores in the two processes together make PyTorch's
threads wait for each other (over-subscription), which once made prediction 26 times slower here.

The command line is ``predict.py --input_dir ... --output_dir ...`` as a user runs it (wall clock of the whole
command: start-up, model loading, tagging, writing), on a model of the ``small`` size of ``bench_inference.py``
(random weights, saved as train.py saves a model) and the first ``--chars`` characters of the unlabeled Ruijin
documents. Conditions, taking turns within every repetition:

* ``alone``: nothing else running;
* ``busy``: beside a PyTorch process multiplying matrices on as many threads as there are cores (PyTorch's
  default, as a training run has), predict.py with its default threads;
* ``busy, --num_threads 1``: the same, predict.py told to use one thread.

    python benchmarks/bench_contention.py                 # 20,000 characters, 3 repetitions (a few minutes)
"""

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_inference import BERT_BASE_CHINESE, NUM_LABELS, benchmark_texts, encoder_config, machine  # noqa: E402

from configuration_bert_bilstm_crf import BertBiLstmCrfConfig  # noqa: E402
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification  # noqa: E402

# The other job: matrix products on PyTorch's default threads (one per core), until it is stopped.
BUSY_JOB = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a)\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=20_000, help="characters of text to tag")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def save_model(folder: Path) -> None:
    """A small random-weight model folder, as train.py writes one (weights, config, code, tokenizer)."""
    torch.manual_seed(0)
    bert, lstm_hidden_size = encoder_config("small")
    tokenizer = AutoTokenizer.from_pretrained(BERT_BASE_CHINESE if BERT_BASE_CHINESE.is_dir()
                                              else REPO / "configs" / "tiny-bert")
    labels = [f"{prefix}-T{index}" for index in range(NUM_LABELS // 2) for prefix in "BI"]
    config = BertBiLstmCrfConfig(
        **bert, id2label=dict(enumerate(["O", *labels])), label2id={name: i for i, name in enumerate(["O", *labels])},
        lstm_hidden_size=lstm_hidden_size, window_chars=510, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id)
    BertBiLstmCrfForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_documents(folder: Path, num_chars: int) -> int:
    texts, _ = benchmark_texts(num_chars)
    folder.mkdir()
    for index, text in enumerate(texts):
        (folder / f"{index:03d}.txt").write_text(text, encoding="utf-8", newline="")
    return len(texts)


def run_predict(model: Path, documents: Path, output: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "predict.py", "--model_name_or_path", str(model), "--input_dir", str(documents),
                    "--output_dir", str(output), "--device", "cpu", *extra],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    conditions = {"alone": (False, []), "busy": (True, []), "busy, --num_threads 1": (True, ["--num_threads", "1"])}
    seconds = {name: [] for name in conditions}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        save_model(scratch / "model")
        num_documents = write_documents(scratch / "documents", args.chars)
        for repeat in range(args.repeats):
            for number, (name, (busy, extra)) in enumerate(conditions.items()):
                other = subprocess.Popen([sys.executable, "-c", BUSY_JOB]) if busy else None
                try:
                    if other:
                        time.sleep(2)  # the other job is up and multiplying
                    output = scratch / f"predicted-{repeat}-{number}"
                    seconds[name].append(run_predict(scratch / "model", scratch / "documents", output, extra))
                finally:
                    if other:
                        other.kill()
                        other.wait()
    alone = statistics.median(seconds["alone"])
    print(f"# predict.py beside another CPU-bound PyTorch process, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
          f" UTC\n\n`python benchmarks/bench_contention.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print(f"Machine: {machine()}; torch {torch.__version__}. {args.chars:,} characters in {num_documents} documents; "
          f"wall clock of the whole command; median (min-max) of {args.repeats} interleaved repetitions.\n")
    print("| condition | seconds | vs alone |\n| --- | ---: | ---: |")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} ({min(values):.1f}-{max(values):.1f}) | {median / alone:.2f}x |")


if __name__ == "__main__":
    main()
