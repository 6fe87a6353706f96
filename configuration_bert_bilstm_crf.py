"""The configuration of the BERT -> (BiLSTM) -> CRF token classifier (``modeling_bert_bilstm_crf.py``): the
encoder's own config plus the head's settings, and the ensemble's. Imports transformers only; it travels in every
model folder (``auto_map``'s ``AutoConfig``)."""

from transformers import AutoConfig, BertConfig

# BertConfig's own fields, copied from the encoder's config where it has them: code that reads the model's config
# (positions for the windows, the vocabulary for bigram hashing, the dropout before the emission layer, the layers
# in the model card) reads the encoder's, whatever its architecture.
ENCODER_FIELDS_SHOWN = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                        "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")


class BertBiLstmCrfConfig(BertConfig):
    """The encoder's own config plus the BiLSTM-CRF head, e.g.
    ``BertBiLstmCrfConfig(encoder=AutoConfig.from_pretrained("hfl/chinese-electra-180g-base-discriminator").to_dict(),
    num_labels=31, id2label=...)``.

    Args:
        encoder: The encoder's config as a dict with its ``model_type`` (any architecture ``AutoModel`` builds: BERT,
            ERNIE, ELECTRA, RoFormer ...), as ``EncoderDecoderConfig`` holds its parts. Its ``ENCODER_FIELDS_SHOWN``
            are copied to this config's own fields, which callers read. None: the encoder is a BERT whose config is
            this config's own fields, as in the folders saved before the encoder had a config of its own.
        use_lstm, lstm_hidden_size, lstm_layers, lstm_dropout, constrain_bio, bigram_buckets, bigram_embedding_size,
            skip_blanks: The head's settings, described in ``head_options``.
        cls_token_id / sep_token_id: Ids hidden from the CRF by ``decode`` when no ``crf_mask`` is given
            (BERT's Chinese vocabulary: 101 and 102).
        window_chars: Length in characters of the windows the model was trained on; the pipeline cuts texts
            into windows of this length (positions beyond it would be untrained).
        context_chars: Characters of the text before and after each window fed with it (the encoder and the
            BiLSTM see them, the CRF does not), in training as in the pipeline; 0: none.
        classifier_dropout (from ``BertConfig``): dropout before the emission layer; defaults to
            ``hidden_dropout_prob``.
    """

    model_type = "bert_bilstm_crf"

    head_options = {
        "use_lstm": "Put a BiLSTM between the encoder and the emission layer (false: BERT-CRF).",
        "lstm_hidden_size": "BiLSTM units per direction (the BiLSTM outputs twice this many features).",
        "lstm_layers": "Number of stacked BiLSTM layers.",
        "lstm_dropout": "Dropout between stacked BiLSTM layers (nn.LSTM's dropout; none with one layer).",
        "constrain_bio": "Viterbi decoding (evaluation and prediction) may only produce valid BIO: no I-X at the "
                         "start, after O or after another type's tag. Training is unconstrained.",
        "bigram_buckets": "Character-bigram features (0: none): each position also gets learnt embeddings of the "
                          "bigrams it ends and starts, hashed from the input ids into this many buckets, read by the "
                          "BiLSTM beside the encoder's output. Chinese words are mostly two characters long, so "
                          "bigrams tell where a term begins and ends, with no word segmenter.",
        "bigram_embedding_size": "Size of each bigram embedding (the BiLSTM reads 2 x this many more features).",
        "skip_blanks": "Blank characters (is_blank: whitespace, invisible format characters) get no model position: "
                       "a blank is tagged afterwards, inside an entity when the entity goes on after it, else O. "
                       "Offsets stay exact; the encoder does less work per character. false: every character has "
                       "its position.",
    }
    """The head's settings a user chooses, each with what it does: train.py's options are made from them (default:
    ``__init__``'s, or ``new_model_defaults``'s), and the model card lists their values."""
    new_model_defaults = {"constrain_bio": True, "skip_blanks": True}
    """A new model's defaults where they differ from ``__init__``'s, which are those of the folders saved before the
    setting existed (without it in their config)."""
    fixed_by_weights = ("use_lstm", "lstm_hidden_size", "lstm_layers", "bigram_buckets", "bigram_embedding_size",
                        "skip_blanks")
    """The head options a trained model keeps when trained further: its weights have their shapes (or, for
    ``skip_blanks``, were learnt on its positions)."""

    def __init__(
        self,
        use_lstm: bool = True,
        lstm_hidden_size: int = 256,
        lstm_layers: int = 1,
        lstm_dropout: float = 0.0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        window_chars: int = 510,
        context_chars: int = 0,
        constrain_bio: bool = False,
        bigram_buckets: int = 0,
        bigram_embedding_size: int = 64,
        skip_blanks: bool = False,
        encoder: dict | None = None,
        **kwargs,
    ):
        self.encoder = encoder
        if encoder is not None:
            kwargs.update({name: encoder[name] for name in ENCODER_FIELDS_SHOWN if name in encoder})
        self.use_lstm = use_lstm
        self.lstm_hidden_size = lstm_hidden_size
        self.lstm_layers = lstm_layers
        self.lstm_dropout = lstm_dropout
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.window_chars = window_chars
        self.context_chars = context_chars
        self.constrain_bio = constrain_bio
        self.bigram_buckets = bigram_buckets
        self.bigram_embedding_size = bigram_embedding_size
        self.skip_blanks = skip_blanks
        # The model's own token-classification pipeline (CRF decoding), loaded by pipeline(..., trust_remote_code=True).
        kwargs.setdefault("custom_pipelines", {"token-classification": {
            "impl": "pipeline_bert_bilstm_crf.BertBiLstmCrfNerPipeline", "pt": ["AutoModelForTokenClassification"],
            "tf": [], "type": "text"}})
        super().__init__(**kwargs)

    def encoder_config(self):
        """The encoder's own config (``encoder``; None for an old folder, whose BERT config is this one)."""
        return None if self.encoder is None else AutoConfig.for_model(**self.encoder)


class BertBiLstmCrfEnsembleConfig(BertBiLstmCrfConfig):
    """An ensemble's config (``BertBiLstmCrfEnsembleForTokenClassification``): the fields its members share
    (labels, windows, tokenizer ids) plus

    Args:
        ensemble_members: The members' own configs (dicts): models of one label set, tokenizer and windows whose
            CRF potentials are averaged.
        ensemble_min_votes: How an ensemble decodes. 0: one Viterbi pass over the averaged potentials (emissions and
            transitions). N > 0: each member decodes with its own CRF and an entity is kept when at least N members
            predict it (type and both offsets); overlapping entities go to the one with more votes.

    A model type of its own: the auto classes map each config class to one model class, so with the single
    model's config an ensemble's folder would load as a single model (without its weights) in a process that
    had loaded a single model of the same code.
    """

    model_type = "bert_bilstm_crf_ensemble"

    def __init__(self, ensemble_members: list[dict] | None = None, ensemble_min_votes: int = 0, **kwargs):
        self.ensemble_members = ensemble_members or []
        self.ensemble_min_votes = ensemble_min_votes
        super().__init__(**kwargs)


BertBiLstmCrfConfig.register_for_auto_class("AutoConfig")
BertBiLstmCrfEnsembleConfig.register_for_auto_class("AutoConfig")
