"""The encoder a training run starts from: its config read without building it, the model built from it and
the head's settings, and the checks that refuse a start that cannot work."""

from __future__ import annotations

from transformers import BertConfig

from modeling_bert_bilstm_crf import BertBiLstmCrfConfig, BertBiLstmCrfForTokenClassification


def build_model(model_args, tokenizer, label_names, data_args):
    settings = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "use_lstm": model_args.use_lstm,
        "lstm_hidden_size": model_args.lstm_hidden_size,
        "lstm_layers": model_args.lstm_layers,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "window_chars": data_args.window_chars,
        "context_chars": data_args.context_chars,
        "constrain_bio": model_args.constrain_bio,
        "bigram_buckets": model_args.bigram_buckets,
        "bigram_embedding_size": model_args.bigram_embedding_size,
        "skip_blanks": model_args.skip_blanks,
    }
    config = model_config(model_args.encoder_config or model_args.model_name_or_path, settings)
    if model_args.encoder_config:
        config._attn_implementation = model_args.attn_implementation
        return BertBiLstmCrfForTokenClassification(config)
    check_saved_bigram_table(model_args)
    return BertBiLstmCrfForTokenClassification.from_pretrained(
        model_args.model_name_or_path, config=config, attn_implementation=model_args.attn_implementation
    )


def check_saved_bigram_table(model_args):
    """A folder with bigram embeddings (written by pretrain_embeddings.py, or a checkpoint of this model) fixes
    their shape: refuse other bigram options before loading fails deep inside transformers, or drops the table."""
    saved, _ = BertConfig.get_config_dict(model_args.model_name_or_path)
    if not saved.get("bigram_buckets"):
        return
    shape = (saved["bigram_buckets"], saved["bigram_embedding_size"])
    if (model_args.bigram_buckets, model_args.bigram_embedding_size) != shape:
        raise ValueError(f"--model_name_or_path {model_args.model_name_or_path} holds bigram embeddings of "
                         f"{shape[0]} buckets x {shape[1]}: give --bigram_buckets {shape[0]} "
                         f"--bigram_embedding_size {shape[1]} (got {model_args.bigram_buckets} x "
                         f"{model_args.bigram_embedding_size})")


def model_config(name_or_path, settings):
    """This model's config from a BERT config (or a checkpoint of this model) and the head's settings. Read as a
    plain dict, so transformers does not warn that a `bert` config builds another model type: that is the intent."""
    config_dict, _ = BertConfig.get_config_dict(name_or_path)
    config_dict.pop("model_type", None)
    return BertBiLstmCrfConfig.from_dict(config_dict, **settings)



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
        raise ValueError(f"{option} {name_or_path}: no config.json there or on the Hub ({reason})") from None
    return config.get("max_position_embeddings", BertConfig().max_position_embeddings)
