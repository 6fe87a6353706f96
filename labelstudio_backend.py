#!/usr/bin/env python
"""Serve a trained model to Label Studio as its ML backend: pre-annotated tasks, and training on the team's
annotations.

    python labelstudio_backend.py --model_name_or_path outputs/ruijin --output_dir outputs/labelstudio \
        --label_studio_url http://localhost:8080 --label_studio_api_key TOKEN     # or LABEL_STUDIO_API_KEY
    python labelstudio_backend.py ... --training_options configs/labelstudio_training.json   # train.py's options

In Label Studio: the project's Settings > Model > Connect Model, URL ``http://HOST:9090``. Tasks get the model's
entities, each with its score, and the task's score (its least certain entity's): sort the tasks by prediction
score to annotate the least certain first. "Start Training" (Settings > Model) trains a new version from the
project's annotations, starting from the served model (``train.py --model_name_or_path``: known types kept, new
types start fresh), into ``--output_dir/NAME-vN``; the backend switches to it when the run finished, and keeps
the served model when it failed (``GET /training`` says why). See docs/labelstudio.md and
``brat_ner/labelstudio_backend.py``.

The model folder's Python code runs only when it is this project's own (a folder written by train.py) or with
--trust_remote_code.
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "labelstudio_backend.py")  # --help from its stored page: the imports below take seconds

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from transformers import HfArgumentParser, pipeline

from brat_ner import fast_inference
from brat_ner.cli import UsageError, check_at_least, check_positive, parse_arguments, run_main
from brat_ner.labelstudio_backend import Backend, BackendSettings, create_app, remembered_model
from brat_ner.runs import check_model_weights
from brat_ner.trust import trust_remote_code


@dataclass
class BackendArguments:
    model_name_or_path: str = field(metadata={"help": "The model folder to serve (written by train.py)."})
    output_dir: str = field(metadata={"help": "Where trained versions go (NAME-v1, NAME-v2 ...); a backend started "
                                              "again on it serves the version it served last."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=9090, metadata={"help": "Port to listen on (Label Studio's examples use 9090)."})
    label_studio_url: str | None = field(
        default=None, metadata={"help": "Label Studio's address, from which training reads the annotations."})
    label_studio_api_key: str | None = field(
        default=None, metadata={"help": "A Label Studio access token (Account & Settings; a legacy token); default: "
                                        "$LABEL_STUDIO_API_KEY."})
    label_studio_timeout: float = field(
        default=30.0, metadata={"help": "Seconds to wait for Label Studio's export before refusing the training "
                                        "event."})
    training_options: str | None = field(
        default=None, metadata={"help": "A JSON file of train.py options for the training runs (epochs, learning "
                                        "rate ...); the data, model and output folder are the backend's."})
    max_text_chars: int = field(
        default=100_000, metadata={"help": "Longest task text tagged; a longer one is refused (HTTP 413)."})
    batch_size: int = field(default=32, metadata={"help": "Windows per forward pass."})
    num_threads: int | None = field(default=None, metadata={"help": fast_inference.NUM_THREADS_HELP})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run the Python code that comes with --model_name_or_path when it is not this project's "
                          "own (a folder written by train.py needs none)."},
    )

    def __post_init__(self):
        check_at_least(1, port=self.port, max_text_chars=self.max_text_chars, batch_size=self.batch_size,
                       num_threads=self.num_threads)
        check_positive(label_studio_timeout=self.label_studio_timeout)


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(
        BackendArguments, prog="labelstudio_backend.py",
        usage="labelstudio_backend.py [OPTIONS.json] [--option VALUE ...]",
        description="Serve a trained model to Label Studio (its ML backend protocol): pre-annotations with scores, "
                    "and new versions trained on the project's annotations.")


def main():
    (args,) = parse_arguments(argument_parser())
    if args.training_options and not Path(args.training_options).is_file():
        raise UsageError(f"--training_options {args.training_options}: no such file")
    versions_dir = Path(args.output_dir)
    model_folder = Path(args.model_name_or_path)
    if not model_folder.is_dir():
        raise UsageError(f"--model_name_or_path {model_folder}: no such folder (the backend serves a local folder, "
                         "which it trains further)")
    trusted = {model_folder.resolve()} if args.trust_remote_code else set()

    def load_tagger(folder: Path):
        # Versions trained here are train.py's folders, which the trust rule accepts without being asked.
        check_model_weights(str(folder))
        return pipeline("token-classification", model=str(folder), device="cpu",
                        trust_remote_code=trust_remote_code(str(folder), folder.resolve() in trusted))

    fast_inference.set_num_threads(args.num_threads)
    served = remembered_model(versions_dir) or model_folder
    settings = BackendSettings(
        versions_dir, args.label_studio_url, args.label_studio_api_key or os.environ.get("LABEL_STUDIO_API_KEY"),
        args.label_studio_timeout, args.max_text_chars, args.batch_size,
        [str(Path(args.training_options).resolve())] if args.training_options else [])
    backend = Backend(served, settings, load_tagger)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(f"labelstudio_backend.py: serving {served} (model_version {backend.model.version}) on "
          f"http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(backend), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    run_main(main, "labelstudio_backend.py")
