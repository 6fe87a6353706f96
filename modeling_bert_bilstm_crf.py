"""BERT -> (BiLSTM) -> CRF for token classification (Chinese medical NER), shipped next to every checkpoint and
loaded with ``trust_remote_code=True``, as transformers ships custom models: this file holds the models, and its
relative imports (which ``save_pretrained`` copies beside it) the rest, each importing only torch and transformers:

* ``configuration_bert_bilstm_crf.py``: ``BertBiLstmCrfConfig`` (the encoder's config with the head's settings) and
  ``BertBiLstmCrfEnsembleConfig``.
* ``crf.py``: ``CRF``, a drop-in, faster replacement for pytorch-crf's ``torchcrf.CRF``.
* ``processing_bert_bilstm_crf.py``: characters to ids, windows, BIO tags to spans, brat output.
* ``pipeline_bert_bilstm_crf.py``: ``BertBiLstmCrfNerPipeline``, texts to entities with character offsets.

The models:

* ``BertBiLstmCrfForTokenClassification``: the encoder (``AutoModel``) -> optional BiLSTM -> dropout -> linear
  emissions -> ``CRF``. ``forward(..., labels)`` returns the mean CRF negative log-likelihood as ``loss`` and the
  emission scores as ``logits``.
* ``BertBiLstmCrfEnsembleForTokenClassification``: models of one label set as one model, decoding their averaged
  CRF potentials (or keeping the entities enough of them predict).

Both decode the one way: ``emissions`` (what the CRF reads), then ``tags`` (the Viterbi tags, -100 at positions the
CRF does not see: [CLS], [SEP], padding, anything labelled -100) and ``marginals``; ``decode`` runs the three.
Training's evaluation, the pipeline (with an ONNX emission network or not) and the ensembles all call these.
"""

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput, TokenClassifierOutput
from transformers.models.bert.modeling_bert import BertEmbeddings

# The pipeline is not used here: it is imported so that save_pretrained copies its file beside this one
# (``config.custom_pipelines`` names it), and so that it is found in this module, as in folders saved before.
try:
    from .configuration_bert_bilstm_crf import BertBiLstmCrfConfig, BertBiLstmCrfEnsembleConfig
    from .crf import CRF, bio_transition_constraints, one_cpu_thread
    from .pipeline_bert_bilstm_crf import BertBiLstmCrfNerPipeline
    from .processing_bert_bilstm_crf import bio_to_spans
except ImportError:  # imported from the repository's root, not from a model folder
    from configuration_bert_bilstm_crf import BertBiLstmCrfConfig, BertBiLstmCrfEnsembleConfig
    from crf import CRF, bio_transition_constraints, one_cpu_thread
    from pipeline_bert_bilstm_crf import BertBiLstmCrfNerPipeline
    from processing_bert_bilstm_crf import bio_to_spans

__all__ = [
    "BertBiLstmCrfPreTrainedModel",
    "BertBiLstmCrfForTokenClassification",
    "BertBiLstmCrfEnsembleForTokenClassification",
    "BertBiLstmCrfNerPipeline",
    "CrfDecoderOutput",
    "bigram_ids",
]


class BertBiLstmCrfPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading. The encoder is the attribute ``bert`` whatever its architecture
    (``base_model_prefix = "bert"``): the state-dict keys of every folder saved so far (``bert.embeddings...``)
    stay valid, and a checkpoint of another architecture loads by renaming its prefix (``electra.`` -> ``bert.``,
    ``brat_ner/encoders.py``); ``from_pretrained`` takes a plain encoder checkpoint's keys as the encoder's."""

    config_class = BertBiLstmCrfConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # ``forward`` takes **kwargs, from which the Trainer would infer that the loss is normalised by its
    # ``num_items_in_batch`` and skip dividing it by the gradient accumulation steps; the CRF loss is a mean.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The base class covers Linear (normal(0, initializer_range)), LSTM (xavier weights, zero biases),
        # embeddings and LayerNorm; the CRF's transitions are plain parameters it does not know.
        super()._init_weights(module)
        if isinstance(module, CRF):
            for param in (module.start_transitions, module.end_transitions, module.transitions):
                init.uniform_(param, -0.1, 0.1)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)

    @torch.no_grad()
    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        crf_mask: torch.Tensor | None = None,
        return_marginals: bool = False,
        **decoding,
    ) -> "CrfDecoderOutput":
        """``tags``: Viterbi tags (B, T), -100 where the CRF does not look; with ``return_marginals`` also
        ``marginals``, the CRF's posterior tag probabilities (B, T, num_labels), which are the unconstrained CRF's.

        ``crf_mask`` defaults to ``attention_mask`` without the ``config.cls_token_id`` /
        ``config.sep_token_id`` positions, matching labels that put -100 on [CLS], [SEP] and padding.
        ``decoding``: ``tags``'s options (``constrain_bio``, and an ensemble's ``min_votes``).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if crf_mask is None:
            crf_mask = self.default_crf_mask(input_ids, attention_mask)
        emissions = self.emissions(input_ids, attention_mask, token_type_ids)
        tags = self.tags(emissions, crf_mask, **decoding)
        marginals = self.marginals(emissions, crf_mask) if return_marginals else None
        return CrfDecoderOutput(tags=tags, marginals=marginals)

    def emissions(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """What ``tags`` and ``marginals`` decode, computed by the network in front of the CRF (the part an ONNX
        file replaces, ``brat_ner/fast_inference.py``): the emission scores (B, T, num_labels)."""
        return self(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    @torch.no_grad()
    def tags(self, emissions: torch.Tensor, crf_mask: torch.Tensor, constrain_bio: bool | None = None,
             min_votes: int | None = None) -> torch.LongTensor:
        """The CRF's Viterbi tags of ``emissions`` (B, T), -100 where ``crf_mask`` is false, restricted to valid BIO
        when ``constrain_bio`` (default ``config.constrain_bio``) is true. ``min_votes`` is an ensemble's."""
        if min_votes:
            raise ValueError(f"min_votes ({min_votes}) decodes an ensemble's members; this model is one model")
        return self._viterbi_tags(self.crf, emissions, crf_mask, constrain_bio)

    def marginals(self, emissions: torch.Tensor, crf_mask: torch.Tensor) -> torch.Tensor:
        """The (unconstrained) CRF's posterior tag probabilities (B, T, num_labels), 0 where ``crf_mask`` is false."""
        return self.crf.marginals(emissions, crf_mask)

    def default_crf_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The positions the CRF sees: not padding, not ``config.cls_token_id`` / ``config.sep_token_id``."""
        special = (input_ids == self.config.cls_token_id) | (input_ids == self.config.sep_token_id)
        return attention_mask.bool() & ~special

    def _viterbi_tags(self, crf: CRF, emissions, crf_mask, constrain_bio: bool | None) -> torch.LongTensor:
        if constrain_bio is None:
            constrain_bio = self.config.constrain_bio
        allowed = bio_transition_constraints(self.config.id2label) if constrain_bio else None
        return crf.viterbi_tags(emissions, crf_mask, allowed)


class BertBiLstmCrfForTokenClassification(BertBiLstmCrfPreTrainedModel):
    """BERT -> optional BiLSTM -> dropout -> linear emissions -> CRF."""

    def __init__(self, config: BertBiLstmCrfConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = _encoder(config)
        features = config.hidden_size
        self.bigram_embeddings = None
        if config.bigram_buckets:
            self.bigram_embeddings = nn.Embedding(config.bigram_buckets, config.bigram_embedding_size)
            features += 2 * config.bigram_embedding_size
        self.lstm = None
        if config.use_lstm:
            self.lstm = nn.LSTM(
                features,
                config.lstm_hidden_size,
                num_layers=config.lstm_layers,
                dropout=config.lstm_dropout if config.lstm_layers > 1 else 0.0,
                bidirectional=True,
                batch_first=True,
            )
            features = 2 * config.lstm_hidden_size
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, config.num_labels)
        self.crf = CRF(config.num_labels, batch_first=True)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """Emission scores as ``logits``; with ``labels`` (-100 = invisible to the CRF) also ``loss``, the
        CRF negative log-likelihood averaged over sequences."""
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if self.bigram_embeddings is not None:
            if input_ids is None:
                raise ValueError("bigram features (config.bigram_buckets) are computed from input_ids, "
                                 "not inputs_embeds")
            bigrams = self._bigram_features(input_ids, attention_mask)
            hidden = torch.cat([hidden, self.dropout(bigrams)], dim=-1)
        logits = self._emissions(hidden, attention_mask)
        loss = None
        if labels is not None:
            loss = -self.crf(logits, labels, mask=labels != -100, reduction="mean")
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _bigram_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 2 * bigram_embedding_size): the embeddings of the bigram ending and of the one starting at each
        position (``bigram_ids``)."""
        ending, starting = bigram_ids(input_ids, attention_mask, self.config.vocab_size, self.config.bigram_buckets)
        return torch.cat([self.bigram_embeddings(ending), self.bigram_embeddings(starting)], dim=-1)

    def _emissions(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.lstm is not None:
            hidden = self._bilstm(hidden, attention_mask)
        return self.classifier(self.dropout(hidden))

    def _bilstm(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """BiLSTM over the non-padding positions (packed; assumes right padding) in the LSTM's own dtype
        (float32 under autocast): a 512-step recurrence in bf16 accumulates rounding. At inference on the CPU it
        runs on one thread (``_one_cpu_thread``); training keeps the threads for its larger batches."""
        seq_len = hidden.shape[1]
        threads = one_cpu_thread(hidden.device) if not torch.is_grad_enabled() else contextlib.nullcontext()
        with threads, torch.autocast(hidden.device.type, enabled=False):
            hidden = hidden.to(self.lstm.weight_ih_l0.dtype)
            lengths = None if attention_mask is None else attention_mask.sum(1).clamp(min=1).cpu()
            if lengths is None or bool((lengths == seq_len).all()):  # no padding: packing would only cost
                return self.lstm(hidden)[0]
            packed = nn.utils.rnn.pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
            output = self.lstm(packed)[0]
            return nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=seq_len)[0]


@dataclass
class CrfDecoderOutput(ModelOutput):
    """What ``decode`` returns: ``tags`` (B, T), the Viterbi tags, -100 where the CRF does not look; ``marginals``
    (B, T, num_labels), the posterior tag probabilities, when asked for (``to_tuple()`` leaves them out otherwise)."""

    tags: torch.LongTensor | None = None
    marginals: torch.FloatTensor | None = None


class BertBiLstmCrfEnsembleForTokenClassification(BertBiLstmCrfPreTrainedModel):
    """Models of one label set, tokenizer and windows as one model: ``logits`` are the members' emissions averaged
    and ``crf`` holds their averaged transitions, so one Viterbi pass decodes the averaged CRF potentials and the
    pipeline's scores are that CRF's marginals. With ``min_votes`` = N > 0 (``tags``), each member decodes with
    its own CRF instead and an entity is kept when N members predict it. Build one with
    ``from_members``; it saves and loads like any model of this file."""

    config_class = BertBiLstmCrfEnsembleConfig

    def __init__(self, config: BertBiLstmCrfEnsembleConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.members = nn.ModuleList(
            BertBiLstmCrfForTokenClassification(BertBiLstmCrfConfig(**member)) for member in config.ensemble_members)
        self.crf = CRF(config.num_labels, batch_first=True)
        self.post_init()

    @classmethod
    def from_members(cls, members: list["BertBiLstmCrfForTokenClassification"], min_votes: int = 0):
        """The ensemble of ``members`` (their weights copied), its CRF the mean of theirs."""
        configs = [member.config.to_dict() for member in members]
        for name in ("id2label", "window_chars", "context_chars", "skip_blanks", "cls_token_id", "sep_token_id"):
            values = [config.get(name) for config in configs]
            if any(value != values[0] for value in values):
                raise ValueError(f"the members differ in {name}: an ensemble's members must share it")
        if not 0 <= min_votes <= len(members):
            raise ValueError(f"min_votes must be between 0 and the number of members ({len(members)}), got {min_votes}")
        shared = {key: value for key, value in configs[0].items()
                  if key not in ("auto_map", "architectures", "model_type")}
        config = BertBiLstmCrfEnsembleConfig(**shared, ensemble_members=configs, ensemble_min_votes=min_votes)
        ensemble = cls(config)
        with torch.no_grad():
            for mine, member in zip(ensemble.members, members):
                mine.load_state_dict(member.state_dict())
            for name, parameter in ensemble.crf.named_parameters():
                parameter.copy_(torch.stack([member.crf.get_parameter(name).float() for member in members]).mean(0))
        return ensemble.eval()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        """The members' emissions averaged as ``logits``; with ``labels`` also ``loss``, the averaged CRF's
        negative log-likelihood."""
        logits = self.emissions(input_ids, attention_mask, token_type_ids).mean(dim=2)
        loss = None if labels is None else -self.crf(logits, labels, mask=labels != -100, reduction="mean")
        return TokenClassifierOutput(loss=loss, logits=logits)

    def emissions(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """(B, T, members, num_labels): each member's emission scores, which ``tags`` averages or lets vote."""
        return torch.stack([member(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
                            for member in self.members], dim=2)

    @torch.no_grad()
    def tags(self, emissions: torch.Tensor, crf_mask: torch.Tensor, constrain_bio: bool | None = None,
             min_votes: int | None = None) -> torch.LongTensor:
        """(B, T) tags of the members' ``emissions`` (B x T x members x labels), -100 where ``crf_mask`` is false.
        ``min_votes`` (default ``config.ensemble_min_votes``) 0: the Viterbi tags of the averaged CRF potentials;
        N > 0: the entities that at least N members predict (type and both ends), each member decoding its own
        emissions with its own CRF; of overlapping entities, the one with more votes (then the earlier, then the
        longer) is kept. ``constrain_bio`` as the single model's."""
        if min_votes is None:
            min_votes = self.config.ensemble_min_votes
        if not 0 <= min_votes <= len(self.members):
            raise ValueError(f"min_votes must be between 0 and the number of members ({len(self.members)}), "
                             f"got {min_votes}")
        if not min_votes:
            return self._viterbi_tags(self.crf, emissions.mean(dim=2), crf_mask, constrain_bio)
        votes = [{} for _ in range(emissions.shape[0])]
        for index, member in enumerate(self.members):
            tags = self._viterbi_tags(member.crf, emissions[:, :, index], crf_mask, constrain_bio)
            for row, row_tags in enumerate(tags.tolist()):
                names = [self.config.id2label[tag] for tag in row_tags if tag != -100]
                for span in bio_to_spans(names):
                    votes[row][span] = votes[row].get(span, 0) + 1
        tags = torch.full(crf_mask.shape, -100, dtype=torch.long, device=crf_mask.device)
        for row, row_votes in enumerate(votes):
            visible = crf_mask[row].nonzero().squeeze(1)
            row_tags = torch.full((len(visible),), self.config.label2id["O"], dtype=torch.long)
            for entity_type, start, end in _winning_spans(row_votes, min_votes):
                row_tags[start] = self.config.label2id[f"B-{entity_type}"]
                row_tags[start + 1 : end] = self.config.label2id[f"I-{entity_type}"]
            tags[row, visible] = row_tags.to(tags.device)
        return tags

    def marginals(self, emissions: torch.Tensor, crf_mask: torch.Tensor) -> torch.Tensor:
        """The averaged CRF's posterior tag probabilities (B, T, num_labels), 0 where ``crf_mask`` is false."""
        return self.crf.marginals(emissions.mean(dim=2), crf_mask)


def _winning_spans(votes: dict[tuple[str, int, int], int], min_votes: int) -> list[tuple[str, int, int]]:
    """The spans with at least ``min_votes`` votes, none overlapping: more votes first, then earlier, then longer."""
    kept, taken = [], set()
    ranked = sorted(votes.items(), key=lambda item: (-item[1], item[0][1], item[0][1] - item[0][2]))
    for (entity_type, start, end), count in ranked:
        if count >= min_votes and not taken.intersection(range(start, end)):
            kept.append((entity_type, start, end))
            taken.update(range(start, end))
    return kept


def _encoder(config: BertBiLstmCrfConfig) -> PreTrainedModel:
    """The encoder the config describes, with random weights (``from_pretrained`` loads them afterwards), without
    a pooler: the head reads every position's output, never the pooled [CLS] (a pooler would be weights that
    are never trained, and missing from every folder saved so far)."""
    if config.encoder is None:
        return BertModel(config, add_pooling_layer=False)
    encoder_config = config.encoder_config()
    encoder = AutoModel.from_config(encoder_config, attn_implementation=_attention(config, encoder_config))
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def _attention(config: BertBiLstmCrfConfig, encoder_config) -> str | None:
    """The attention the model was asked for (``attn_implementation``), or the encoder's default (eager) where its
    architecture has no such implementation (sdpa, the default of train.py, is missing from RoFormer and
    MegatronBERT): the same numbers, computed another way."""
    requested = config._attn_implementation
    encoder_class = AutoModel._model_mapping[type(encoder_config)]
    supported = {"sdpa": encoder_class._supports_sdpa, "flash_attention_2": encoder_class._supports_flash_attn,
                 "flex_attention": encoder_class._supports_flex_attn}
    return requested if supported.get(requested, True) else None


def bigram_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int, buckets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bucket of the bigram ending at each position (with the id before; the first position pairs with
    itself) and of the bigram starting there (the last position before the padding, or the end, pairs with
    itself, so padding never changes a feature), for (B, T) ``input_ids``. A bigram (a, b) is hashed to
    (a * vocab_size + b) mod buckets: distinct for each b given a when buckets >= vocab_size, so collisions are
    between unrelated pairs."""
    before = torch.cat([input_ids[:, :1], input_ids[:, :-1]], dim=1)
    after = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)
    if attention_mask is not None:
        next_is_text = torch.cat([attention_mask[:, 1:], torch.zeros_like(attention_mask[:, :1])], dim=1).bool()
        after = torch.where(next_is_text, after, input_ids)
    return (before * vocab_size + input_ids) % buckets, (input_ids * vocab_size + after) % buckets


BertBiLstmCrfForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
BertBiLstmCrfEnsembleForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
