"""The encoder a training run starts from: its config read without building it, the model built from it and
the head's settings, and the checks that refuse a start that cannot work.

Four starts (``build_model``): an encoder config with random weights (``--encoder_config``); a pretrained encoder
of any architecture ``AutoModel`` builds as a bidirectional encoder (BERT and the RoBERTa-wwm / MacBERT checkpoints,
which are BERT, ERNIE, ELECTRA, RoFormer are tested), saved as a base model or with its pre-training head; a
folder of character vectors (``pretrain_embeddings.py``); and a folder of this model written by train.py, which
goes on training with its own head. Whatever is not loaded from the checkpoint is said in one line; an encoder
weight that should have loaded and did not stops the run, unless ``--allow_random_encoder_weights``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections import Counter

import torch
from transformers import AutoConfig, AutoModel, BertConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import logging as transformers_logging

from brat_ner.cli import UsageError
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig, BertBiLstmCrfEnsembleConfig
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification
from processing_bert_bilstm_crf import CharacterEncoder, window_fit_problem

logger = logging.getLogger(__name__)

HEAD_OPTIONS = tuple(BertBiLstmCrfConfig.head_options)
"""The head's settings a user chooses: the config declares them (``BertBiLstmCrfConfig.head_options``)."""

LABEL_TENSORS = {"classifier.weight": 1, "classifier.bias": 1, "crf.start_transitions": 1,
                 "crf.end_transitions": 1, "crf.transitions": 2}
"""The tensors with one row (and for transitions one column) per label: how many leading dimensions are labels."""

HEAD_PARTS = {"bigram_embeddings": "bigram embeddings", "lstm": "BiLSTM", "classifier": "linear", "crf": "CRF"}


def build_model(model_args, tokenizer, label_names, data_args, train_windows=None):
    """The model train.py trains: from ``--encoder_config`` (random), a folder of this model (continued), or a
    pretrained encoder or character vectors; ``train_windows`` (the training windows' ``tokens``) check that the
    tokenizer has an entry for each character."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if train_windows is not None:
        check_characters_in_vocabulary(tokenizer, train_windows, name)
    settings = head_settings(model_args, tokenizer, label_names, data_args)
    if model_args.encoder_config:
        config = BertBiLstmCrfConfig(encoder=read_encoder_config(model_args.encoder_config, "--encoder_config"),
                                     **settings)
        config._attn_implementation = model_args.attn_implementation
        return BertBiLstmCrfForTokenClassification(config)
    if trained_model_config(model_args.model_name_or_path) is not None:
        return continued_model(model_args, settings, label_names)
    return pretrained_encoder_model(model_args, settings)


def head_settings(model_args, tokenizer, label_names, data_args) -> dict:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "window_chars": data_args.window_chars,
        "context_chars": data_args.context_chars,
        **{option: getattr(model_args, option) for option in HEAD_OPTIONS},
    }


def head_option_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """train.py's head options as ``dataclasses.make_dataclass`` fields, made from the config: its
    ``head_options`` (names and help) and ``__init__``'s types. Each defaults to None, "not given": a new model
    then takes ``head_option_default``, and a model trained further keeps its own (``adopt_trained_head``)."""
    parameters = inspect.signature(BertBiLstmCrfConfig.__init__).parameters
    return [(option, parameters[option].annotation | None, dataclasses.field(default=None, metadata={
        "help": f"{help_text} Left out: {head_option_default(option)} for a new model, its own for a model "
                f"trained further."})) for option, help_text in BertBiLstmCrfConfig.head_options.items()]


def head_option_default(option: str):
    """A new model's value of a head option the user left out."""
    if option in BertBiLstmCrfConfig.new_model_defaults:
        return BertBiLstmCrfConfig.new_model_defaults[option]
    return inspect.signature(BertBiLstmCrfConfig.__init__).parameters[option].default


# ----- The encoder's architecture and vocabulary -----


def read_encoder_config(name_or_path: str, option: str) -> dict:
    """The encoder's config as a dict with its ``model_type`` (a config without one is BERT's, as this project's
    configs were), refused in one line when its architecture is not a bidirectional encoder that ``AutoModel``
    builds: a decoder reads each character without the ones after it, an encoder-decoder is two models."""
    config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
    model_type = config_dict.get("model_type", "bert")
    if model_type == BertBiLstmCrfConfig.model_type:
        raise UsageError(f"{option} {name_or_path} is a model trained by train.py: give it as --model_name_or_path "
                         f"to train it further")
    if model_type == BertBiLstmCrfEnsembleConfig.model_type:
        raise UsageError(f"{option} {name_or_path} is an ensemble (ensemble.py): train one of its members further "
                         f"(the folders its ensemble_members.json names)")
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or config_dict.get("is_encoder_decoder"):
        raise UsageError(f"{option} {name_or_path}: a {model_type} model is not a bidirectional encoder that "
                         f"transformers pretrains by masked language modelling (BERT, ERNIE, ELECTRA, RoFormer ...), "
                         f"so it cannot tag each character from both sides")
    fields = {key: value for key, value in config_dict.items() if key != "model_type"}
    return AutoConfig.for_model(model_type, **fields).to_dict()


ENCODER_NAMES = {"bert": "BERT", "ernie": "ERNIE", "electra": "ELECTRA", "roformer": "RoFormer"}
"""The tested architectures by the names of their papers (others go by their ``model_type``)."""


def encoder_name(encoder: dict | None) -> str:
    """The architecture of an encoder config (a model config's ``encoder``; None, in a folder saved before the
    encoder had a config of its own: BERT)."""
    model_type = (encoder or {}).get("model_type", "bert")
    return ENCODER_NAMES.get(model_type, model_type)


def check_characters_in_vocabulary(tokenizer, windows, name: str, checked_windows: int = 200) -> None:
    """Refuse a tokenizer without a vocabulary entry of its own for most Chinese characters of the training
    windows: the model feeds one entry per character (``CharacterEncoder``), as BERT's Chinese vocab.txt has
    them; a sentencepiece or BPE vocabulary of word pieces or bytes would feed mostly [UNK]."""
    characters = Counter(character for window in windows[:checked_windows] for character in window
                         if "\u4e00" <= character <= "\u9fff")
    encoder = CharacterEncoder(tokenizer)
    unknown = [character for character in characters if encoder.token(character) == tokenizer.unk_token]
    unknown_count = sum(characters[character] for character in unknown)
    total = sum(characters.values())
    if total and unknown_count * 2 > total:
        raise UsageError(f"the tokenizer of {name} has no vocabulary entry of its own for {unknown_count} of the "
                         f"{total} Chinese characters of the first training windows (e.g. {''.join(unknown[:5])}): "
                         f"the model feeds one entry per character, as BERT's Chinese vocab.txt has them, which a "
                         f"sentencepiece or BPE vocabulary of word pieces does not")


# ----- A pretrained encoder (or character vectors) -----


def pretrained_encoder_model(model_args, settings):
    """The model with its encoder (and bigram table, if any) from ``--model_name_or_path``: an encoder checkpoint
    of its own architecture, with or without its pre-training head, whose keys under the head's prefix
    (``electra.``, ``ernie.``, ...) are read as the encoder's (``bert.``, the attribute that holds every
    architecture's encoder)."""
    path = model_args.model_name_or_path
    check_saved_bigram_table(model_args)
    encoder = read_encoder_config(path, "--model_name_or_path")
    config = BertBiLstmCrfConfig(encoder=encoder, **settings)
    prefix = AutoModel._model_mapping[type(config.encoder_config())].base_model_prefix
    with quiet_transformers():
        model, info = BertBiLstmCrfForTokenClassification.from_pretrained(
            path, config=config, attn_implementation=model_args.attn_implementation,
            key_mapping={rf"^{prefix}\.": "bert."} if prefix != "bert" else None,
            ignore_mismatched_sizes=True, output_loading_info=True)
    logger.warning(load_report(model, info, path, model_args.allow_random_encoder_weights))
    # transformers keeps the renaming (and the prefix added to a base model's keys) to undo it on saving; this
    # model is saved as itself, with every architecture's encoder under ``bert.``, as all its folders are.
    model._weight_conversions = None
    return model


def load_report(model, info: dict, path: str, allow_random: bool) -> str:
    """One line: the encoder's architecture, how many of its tensors came from ``path`` and which parts start
    fresh. Raises when an encoder weight is not loaded (or a checkpoint weight not used) beyond what is expected:
    heads (pre-training heads, the pooler), recomputed buffers, and the rest of the encoder of a checkpoint of
    character vectors alone (``pretrain_embeddings.py``)."""
    mismatched = {key for key, *_ in info["mismatched_keys"]}
    missing = set(info["missing_keys"]) | mismatched
    encoder_keys = [key for key in model.state_dict() if key.startswith("bert.")]
    missing_encoder = sorted(key for key in encoder_keys if key in missing)
    loaded = [key for key in encoder_keys if key not in missing]
    unused = sorted(key for key in info["unexpected_keys"] if key.startswith("bert.")
                    and not key.startswith("bert.pooler.") and not key.endswith("position_ids"))
    vectors_only = bool(loaded) and all(key.endswith("embeddings.word_embeddings.weight") for key in loaded)
    name = encoder_name(model.config.encoder)
    if (missing_encoder and not vectors_only or unused or not loaded) and not allow_random:
        keys = missing_encoder or unused
        problem = ("has no encoder weights this model can read" if not loaded else
                   f"lacks {len(missing_encoder)} of the {len(encoder_keys)} {name} encoder weights" if missing_encoder
                   else f"holds {len(unused)} encoder weights a {name} encoder does not have")
        raise UsageError(f"--model_name_or_path {path} {problem} (first: {', '.join(keys[:3])}): training would "
                         f"start those from random weights; add --allow_random_encoder_weights to do so anyway")
    fresh = [label for part, label in HEAD_PARTS.items() if any(key.startswith(part + ".") for key in missing)]
    if missing_encoder:
        fresh.insert(0, f"{len(missing_encoder)} encoder tensors")
    return (f"encoder {name} from {path}: {len(loaded)} tensor{'s' if len(loaded) != 1 else ''} loaded"
            + (" (character vectors)" if vectors_only and missing_encoder else "")
            + (f"; {', '.join(fresh)} start fresh" if fresh else ""))


@contextlib.contextmanager
def quiet_transformers():
    """Without transformers' own load report, a table of every key the head does not find in an encoder
    checkpoint (all of them, as intended): ``load_report`` says it in one line, and refuses what was not
    intended."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def check_saved_bigram_table(model_args):
    """A folder with bigram embeddings (written by pretrain_embeddings.py) fixes their shape: refuse other bigram
    options before loading fails deep inside transformers, or drops the table."""
    saved, _ = BertConfig.get_config_dict(model_args.model_name_or_path)
    if not saved.get("bigram_buckets"):
        return
    shape = (saved["bigram_buckets"], saved["bigram_embedding_size"])
    if (model_args.bigram_buckets, model_args.bigram_embedding_size) != shape:
        raise UsageError(f"--model_name_or_path {model_args.model_name_or_path} holds bigram embeddings of "
                         f"{shape[0]} buckets x {shape[1]}: give --bigram_buckets {shape[0]} "
                         f"--bigram_embedding_size {shape[1]} (got {model_args.bigram_buckets} x "
                         f"{model_args.bigram_embedding_size})")


# ----- A model trained by train.py, trained further -----


def trained_model_config(name_or_path: str | None) -> BertBiLstmCrfConfig | None:
    """The config of a model written by train.py at ``name_or_path`` (a folder), else None."""
    try:
        saved, _ = PretrainedConfig.get_config_dict(name_or_path, local_files_only=True)
    except (OSError, TypeError, ValueError):  # ValueError: a missing local path read as a malformed Hub id
        return None
    if saved.get("model_type") != BertBiLstmCrfConfig.model_type:
        return None
    return BertBiLstmCrfConfig.from_dict(saved)


def adopt_trained_head(model_args, model_name_or_path_default: str) -> None:
    """For ``ModelArguments.__post_init__``: the head options the user left out (None) take a new model's defaults,
    or with ``--model_name_or_path`` a folder written by train.py, the folder's; of the options given, those its
    weights fix (``BertBiLstmCrfConfig.fixed_by_weights``) must be the folder's, and the others apply.
    ``--encoder_config`` with a ``--model_name_or_path`` of one's own is refused: one would silently override
    the other."""
    if model_args.encoder_config and model_args.model_name_or_path != model_name_or_path_default:
        raise UsageError(f"--encoder_config {model_args.encoder_config} builds an encoder with random weights and "
                         f"--model_name_or_path {model_args.model_name_or_path} names one to start from: give one "
                         f"of them (--encoder_config '' drops the one of an options file)")
    saved = None if model_args.encoder_config else trained_model_config(model_args.model_name_or_path)
    for option in HEAD_OPTIONS:
        given = getattr(model_args, option)
        trained = head_option_default(option) if saved is None else getattr(saved, option)
        if given is None:
            setattr(model_args, option, trained)
        elif saved is not None and option in BertBiLstmCrfConfig.fixed_by_weights and given != trained:
            raise UsageError(f"--{option} {given}: the model at {model_args.model_name_or_path} was trained with "
                             f"{trained}, and training it further keeps its head (leave --{option} out)")


def adopt_trained_windows(model_name_or_path: str, data_args) -> None:
    """For train.py before it reads the corpus: training a model written by train.py further, its windows
    (``--window_chars``, ``--context_chars``) are the folder's unless given with other values than the defaults
    (which this run may choose: the windows are not weights), said in one line."""
    saved = trained_model_config(model_name_or_path)
    if saved is None:
        return
    options_from_folder(data_args, saved, ("window_chars", "context_chars"))
    logger.warning(f"windows of {data_args.window_chars} characters, {data_args.context_chars} of context: "
                   f"{model_name_or_path} was trained on {saved.window_chars} and {saved.context_chars}")


def options_from_folder(arguments, saved, options) -> list[tuple[str, object, object]]:
    """Sets each of ``options`` left at its default in the ``arguments`` dataclass to the ``saved`` config's value;
    returns (option, given value, saved value) of those given with another value. (An option given with its
    default's value cannot be told from one left out: it takes the folder's too.)"""
    defaults = {field.name: field.default for field in dataclasses.fields(arguments)}
    given = []
    for option in options:
        if getattr(arguments, option) == defaults[option]:
            setattr(arguments, option, getattr(saved, option))
        else:
            given.append((option, getattr(arguments, option), getattr(saved, option)))
    return given


def continued_model(model_args, settings: dict, label_names: list[str]):
    """The model at ``--model_name_or_path`` (written by train.py) with this run's settings. Labels it knows keep
    their rows of the linear layer and the CRF; new ones (a type first annotated in the new documents) start
    fresh, and labels the new corpus lacks are dropped, said in one line."""
    path = model_args.model_name_or_path
    with quiet_transformers():
        trained, info = BertBiLstmCrfForTokenClassification.from_pretrained(
            path, attn_implementation=model_args.attn_implementation, output_loading_info=True)
    unread = sorted(info["missing_keys"]) + sorted(info["unexpected_keys"])
    if unread:
        raise UsageError(f"--model_name_or_path {path}: its weights do not fit its config (first: "
                         f"{', '.join(unread[:3])}): is model.safetensors the one train.py wrote there?")
    known = [trained.config.id2label[index] for index in range(trained.config.num_labels)]
    config = trained.config
    config.update(settings)
    if known == list(label_names):
        logger.warning(f"model {path} ({encoder_name(config.encoder)} encoder) trained further: all weights loaded")
        return trained
    model = BertBiLstmCrfForTokenClassification(config)
    model.load_state_dict(relabelled_state(trained.state_dict(), model.state_dict(), known, label_names))
    new = [name for name in label_names if name not in known]
    dropped = [name for name in known if name not in label_names]
    logger.warning(f"model {path} ({encoder_name(config.encoder)} encoder) trained further: "
                   f"{len(label_names) - len(new)} known labels keep their weights"
                   + (f", {len(new)} new ones start fresh ({', '.join(new)})" if new else "")
                   + (f", {len(dropped)} absent from the corpus are dropped ({', '.join(dropped)})" if dropped else ""))
    return model


def relabelled_state(trained: dict, fresh: dict, known: list[str], label_names: list[str]) -> dict:
    """``fresh`` (a new model's state) with every tensor of ``trained`` except the label rows (and columns) of
    ``LABEL_TENSORS``, which are taken from ``trained`` for the labels it knows."""
    state = {key: trained[key] for key in fresh if key not in LABEL_TENSORS}
    new_rows = [index for index, name in enumerate(label_names) if name in known]
    old_rows = torch.tensor([known.index(label_names[index]) for index in new_rows], dtype=torch.long)
    new_rows = torch.tensor(new_rows, dtype=torch.long)
    for key, label_dims in LABEL_TENSORS.items():
        tensor = fresh[key].clone()
        if label_dims == 1:
            tensor[new_rows] = trained[key][old_rows]
        else:
            tensor[new_rows.unsqueeze(1), new_rows] = trained[key][old_rows.unsqueeze(1), old_rows]
        state[key] = tensor
    return state


def check_window_fits(window_chars: int, max_position_embeddings: int, name: str) -> None:
    """Refuse (``UsageError``) windows of ``window_chars`` characters that the encoder has no positions for, named
    by the option(s) ``name`` that asked for them."""
    problem = window_fit_problem(window_chars, max_position_embeddings, name)
    if problem:
        raise UsageError(problem)


def encoder_positions(encoder_config: str | None, model_name_or_path: str | None) -> int:
    """``max_position_embeddings`` of the encoder a training script starts from, without building it: its
    ``--encoder_config`` when given, else its ``--model_name_or_path`` (a folder, a config.json or a Hub id). A
    config that cannot be read (e.g. a folder that is not there) is one line naming that option, not the Hub
    client's traceback."""
    option, name_or_path = (("--encoder_config", encoder_config) if encoder_config
                            else ("--model_name_or_path", model_name_or_path))
    try:
        config, _ = BertConfig.get_config_dict(name_or_path)
    except OSError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{option} {name_or_path}: no config.json there or on the Hub ({reason})") from None
    return config.get("max_position_embeddings", BertConfig().max_position_embeddings)
