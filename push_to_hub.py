#!/usr/bin/env python
"""Publish a model trained by train.py on the Hugging Face Hub, with a model card written from its results.

    python push_to_hub.py --model_dir outputs/ruijin --repo_id your-name/bert-bilstm-crf-chinese-medical-ner
    python push_to_hub.py --model_dir outputs/ruijin --repo_id your-name/... --dry_run hub_folder/

The repository holds what loading needs and nothing else: safetensors weights, ``config.json`` (with
``auto_map`` and the model's own token-classification pipeline), the model's code (``modeling_bert_bilstm_crf.py``
and the files it imports), the tokenizer files, the plots, and a ``README.md`` model card (``brat_ner/model_card.py``)
whose metadata (``model-index``) and per-type table are read from the training output, never typed in.
``--dry_run DIR`` writes exactly that folder and uploads nothing. ``--dataset_repo_id`` also pushes the prepared
corpus (Parquet, ClassLabel features). ``--space_id`` also publishes the Gradio demo of ``space/`` as a Space whose
card lists ``--repo_id`` as the model its app loads (with ``--dry_run DIR``: written to ``DIR/space``).
"""

from __future__ import annotations

from brat_ner.cli import exit_early_for_help

exit_early_for_help(__name__, "push_to_hub.py")  # --help from its stored page: the imports below take seconds

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import HfArgumentParser

from brat_ner.cli import UsageError, parse_arguments, run_main
from brat_ner.model_card import UNNAMED_CORPUS, model_card, read_json
from brat_ner.runs import check_model_weights, unfinished_run_problem
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
            raise UsageError(f"{folder} is not empty; give a new --dry_run folder")
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
        raise UsageError(f"--space_id: {error}") from None


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
    corpus = read_json(model_dir / "corpus.json") or {}
    data_dir = args.data_dir or corpus.get("data_dir")
    if not data_dir:
        raise UsageError("--dataset_repo_id needs --data_dir (the model folder has no corpus.json)")
    return {"data_dir": data_dir, "window_chars": corpus.get("window_chars", corpus.get("max_chars", 510)),
            "context_chars": corpus.get("context_chars", 0)}


def build_repository(model_dir: Path, folder: Path, args) -> None:
    """Check the model folder, then copy the files the model needs and write the model card."""
    for repo_id in filter(None, (args.repo_id, args.dataset_repo_id)):
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise UsageError(f"{error}") from None
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir}: no such folder")
    check_model_weights(str(model_dir), "--model_dir")  # pickled or unreadable weights: the rule of every loader
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in TOKENIZER_VOCABULARIES):
        missing.append(" or ".join(TOKENIZER_VOCABULARIES))
    if missing:
        raise UsageError(f"{model_dir} lacks {', '.join(missing)}: is it a train.py output folder?")
    unfinished = unfinished_run_problem(model_dir)  # the card and plots come from what the run wrote last
    if unfinished:
        raise UsageError(f"{model_dir}: {unfinished}")
    trust_remote_code(str(model_dir), args.trust_remote_code)  # its code goes public, and the Space runs it
    folder.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(MODEL_FILES + MODEL_CODE_FILES + TOKENIZER_VOCABULARIES + OPTIONAL_FILES):
        if (model_dir / name).is_file():  # copyfile: the umask's mode, not that of a private source (safetensors')
            shutil.copyfile(model_dir / name, folder / name)
    for name in ENDPOINT_FILES:
        shutil.copyfile(ENDPOINT_SOURCE / name, folder / name)
    model_card(model_dir, args).save(folder / "README.md")


def model_code(model_dir: Path) -> list[Path]:
    """The files of the model's code that the folder holds, which go public with it."""
    return [model_dir / name for name in MODEL_CODE_FILES if (model_dir / name).is_file()]


if __name__ == "__main__":
    run_main(main, "push_to_hub.py")
