#!/usr/bin/env python
"""Skip-gram (word2vec) vectors for the characters and character bigrams of raw text, to start the classic
BiLSTM-CRF from instead of random embeddings.

The classic model (``configs/classic-bilstm-crf.json``: no transformer layer) has nothing pretrained: its
character embeddings, and its bigram embeddings with ``--bigram_buckets``, are learnt from the labelled
windows alone. This script learns them first from the text, in under a minute, and writes a folder that
train.py starts from:

    python pretrain_embeddings.py --data_dir ../shared/data/ruijin_round1/train \
        --extra_text_dirs ../shared/data/ruijin_round1/unlabeled \
        --encoder_config configs/classic-bilstm-crf.json --tokenizer_name ../shared/data/bert-base-chinese \
        --bigram_buckets 50021 --bigram_embedding_size 32 --output_dir outputs/embeddings
    python train.py --model_name_or_path outputs/embeddings --bigram_buckets 50021 --bigram_embedding_size 32 ...

The text is the TRAINING split of ``--data_dir`` (as for pretrain_mlm.py: no validation or test document is
seen) plus every .txt under ``--extra_text_dirs``, encoded as the model encodes it (``CharacterEncoder``, the
bigram buckets of ``bigram_ids``), in windows of ``--window_chars``. The folder holds the encoder config, the
tokenizer and ``model.safetensors`` with the two embedding tables only; train.py initialises the rest (position
embeddings, BiLSTM, CRF) as from scratch. Ids the text never shows keep random vectors of the learnt vectors'
scale. A BERT encoder is pretrained by pretrain_mlm.py instead.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "pretrain_embeddings.py")  # --help from its stored page: the imports below take seconds

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from gensim.models import Word2Vec
from safetensors.torch import save
from transformers import AutoTokenizer, BertConfig, HfArgumentParser

from brat_ner import fast_inference
from brat_ner.cli import parse_arguments, run_main
from brat_ner.files import atomic_write
from brat_ner.pretraining import PretrainingTextArguments, encoded_windows, pretraining_texts, vocabulary_size
from brat_ner.runs import RunArguments, claim_output_dir
from modeling_bert_bilstm_crf import bigram_ids

logger = logging.getLogger(__name__)

FINISHED_MARKER = "embedding_results.json"


@dataclass
class EmbeddingArguments(PretrainingTextArguments):
    encoder_config: str = field(
        default="configs/classic-bilstm-crf.json",
        metadata={"help": "BERT config of the model to start (its hidden_size is the character vectors' size)."},
    )
    tokenizer_name: str = field(
        default="bert-base-chinese",
        metadata={"help": "Tokenizer (vocabulary) folder or Hub id: the one train.py will use."},
    )
    output_dir: str = field(default="outputs/embeddings", metadata={"help": "Folder for train.py's "
                                                                           "--model_name_or_path."})
    bigram_buckets: int = field(default=0, metadata={"help": "Also learn bigram vectors for train.py's "
                                                             "--bigram_buckets (0: characters only)."})
    bigram_embedding_size: int = field(default=64, metadata={"help": "As train.py's --bigram_embedding_size."})
    window_chars: int = field(default=126, metadata={"help": "Characters per window (a word2vec sentence; formerly "
                                                             "--max_chars).", "aliases": ["--max_chars"]})
    skip_blanks: bool = field(default=True, metadata={"help": "As train.py's --skip_blanks (its default)."})
    window: int = field(default=5, metadata={"help": "Skip-gram context: this many ids on each side."})
    negative: int = field(default=5, metadata={"help": "Negative samples per positive pair."})
    epochs: int = field(default=5, metadata={"help": "Passes over the text."})
    workers: int | None = field(
        default=None, metadata={"help": "Threads (more than one makes runs differ slightly); default: the cores "
                                        "idle when the command starts, as for train.py's --num_threads."})
    seed: int = field(default=42)
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write the vectors again although --output_dir holds finished ones."}
    )


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(EmbeddingArguments, prog="pretrain_embeddings.py")


def main():
    parser = argument_parser()
    (args,) = parse_arguments(parser)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("gensim").setLevel(logging.WARNING)  # a dozen lines per table otherwise
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.bigram_buckets < 0 or args.bigram_embedding_size < 1:
        parser.error("--bigram_buckets must be 0 or more and --bigram_embedding_size positive")
    lock = claim_output_dir("pretrain_embeddings.py", SimpleNamespace(output_dir=args.output_dir, process_index=0),
                            RunArguments(overwrite_output_dir=args.overwrite_output_dir),
                            finished_marker=FINISHED_MARKER,
                            data_folders={"--data_dir": [args.data_dir], "--extra_text_dirs": args.extra_text_dirs})
    try:
        write_embeddings(args)
    finally:
        lock.release()


def write_embeddings(args):
    """The encoder config, the tokenizer and the tables in --output_dir; the results file last, so that an
    interrupted run is not taken for a finished one."""
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name)
    config = BertConfig.from_pretrained(args.encoder_config, vocab_size=vocabulary_size(tokenizer))

    windows = encoded_windows(pretraining_texts(args), tokenizer, args)
    positions = sum(map(len, windows))
    logger.info("Embedding text: %d windows, %d positions", len(windows), positions)
    tables = {"bert.embeddings.word_embeddings.weight": skip_gram_table(
        [window[1:-1] for window in windows], config.vocab_size, config.hidden_size, args)}
    if args.bigram_buckets:
        buckets = [bigram_ids(torch.tensor([window]), None, config.vocab_size, args.bigram_buckets)[0][0].tolist()
                   for window in windows]
        tables["bigram_embeddings.weight"] = skip_gram_table(buckets, args.bigram_buckets,
                                                             args.bigram_embedding_size, args)

    output_dir = Path(args.output_dir)
    config.update({"bigram_buckets": args.bigram_buckets, "bigram_embedding_size": args.bigram_embedding_size})
    atomic_write(output_dir / "config.json", config.to_json_string())
    atomic_write(output_dir / "model.safetensors", save(tables, metadata={"format": "pt"}))
    tokenizer.save_pretrained(output_dir)
    results = {"windows": len(windows), "positions": positions,
               **{name: list(table.shape) for name, table in tables.items()}}
    atomic_write(output_dir / FINISHED_MARKER, json.dumps(results, indent=2))


def skip_gram_table(sentences: list[list[int]], rows: int, size: int, args) -> torch.Tensor:
    """A (rows, size) embedding table: row i the skip-gram vector of id i in ``sentences``; rows of ids that
    never occur are drawn at random with the learnt vectors' standard deviation."""
    model = Word2Vec([[str(token) for token in sentence] for sentence in sentences], vector_size=size,
                     window=args.window, negative=args.negative, sg=1, min_count=1, epochs=args.epochs,
                     workers=args.workers or fast_inference.default_num_threads(), seed=args.seed)
    learnt = torch.from_numpy(model.wv.vectors).float()
    generator = torch.Generator().manual_seed(args.seed)
    table = torch.randn(rows, size, generator=generator) * learnt.std()
    table[torch.tensor([int(token) for token in model.wv.index_to_key])] = learnt
    logger.info("Skip-gram vectors for %d of %d ids (size %d)", len(learnt), rows, size)
    return table


if __name__ == "__main__":
    run_main(main, "pretrain_embeddings.py")
