"""The token-classification pipeline of the BERT -> (BiLSTM) -> CRF model: texts in, entities with character
offsets out, decoded by the model's CRF. ``config.custom_pipelines`` names it, so
``pipeline("token-classification", model=FOLDER, trust_remote_code=True)`` returns it; it travels in every model
folder."""

import torch
from transformers.pipelines.base import ChunkPipeline, pad_collate_fn

try:
    from .processing_bert_bilstm_crf import (
        CharacterEncoder,
        bio_to_spans,
        brat_annotations,
        is_blank,
        split_into_windows,
        tags_with_blanks,
        window_context,
        window_fit_problem,
    )
except ImportError:  # imported from the repository's root, not from a model folder
    from processing_bert_bilstm_crf import (
        CharacterEncoder,
        bio_to_spans,
        brat_annotations,
        is_blank,
        split_into_windows,
        tags_with_blanks,
        window_context,
        window_fit_problem,
    )

# The brat writer of this pipeline's entities: the endpoint handler and the demo Space take it from the module of the
# pipeline they loaded, so that they write as the model's own code does.
__all__ = ["BertBiLstmCrfNerPipeline", "brat_annotations"]

PACK_BATCHES = 16
"""Packing sorts the windows of at least this many batches' worth of whole documents together (``pack_windows``'s
default: 16 x ``batch_size``). Windows end at sentence ends, so their lengths vary (10 to 510 characters on
``ruijin_round1/unlabeled`` at 510): batches of 8 cut from 128 sorted windows hold about 3% padded positions, from
windows in input order 16%; a larger pool pads less but returns its first document later."""


class BertBiLstmCrfNerPipeline(ChunkPipeline):
    """Token classification that returns the CRF's Viterbi entities with character offsets into the input.

    The standard token-classification pipeline takes the argmax of each token's logits, which is not what a
    CRF model predicts. This one splits each text into windows of ``config.window_chars`` characters (as in
    training), feeds one model position per character (per non-blank character with ``config.skip_blanks``, the
    blanks then tagged from their neighbours), decodes each window with the CRF and reads the BIO tags back into
    entities. With ``config.context_chars`` (or the ``context_chars`` parameter), each window is
    fed with up to that many characters of the text before and after it, which the CRF does not decode: every
    character is decoded once, from the window it belongs to. ``constrain_bio=True/False`` overrides
    ``config.constrain_bio`` (valid-BIO Viterbi) for comparing the two on one model, and ``min_votes=N`` an ensemble's
    ``config.ensemble_min_votes`` (``tags``). Registered as the model's
    ``token-classification`` pipeline, so ``pipeline("token-classification", model=..., trust_remote_code=True)``
    returns it.

    With ``batch_size`` > 1, windows of similar length are batched together across the texts of a call
    (``pack_windows``): the pipeline takes whole texts until it holds at least ``pack_windows`` windows (default
    ``PACK_BATCHES`` x ``batch_size``), sorts them by length, runs each batch of neighbours padded to its longest
    (the attention mask and the packed BiLSTM keep padding out of every window's scores) and returns each text's
    entities in input order, text by text. ``pack_windows=0`` batches windows in input order, each length of a
    batch run separately (the batching before 2026-12-07: no padding, but mostly batches of one window).

    Each entity is ``{"entity_group", "score", "word", "start", "end"}`` (``end`` exclusive) with the
    aggregation ``"simple"`` (the default), or one entry per tagged character (``"entity"``, ``"index"``)
    with ``"none"``. ``score`` is the CRF's posterior marginal probability of the predicted tags, averaged
    over the entity's characters. Predicted entities are trimmed of leading and trailing blanks (whitespace and
    invisible format characters, ``is_blank``; a blank-only one is dropped): blanks are tagged inside entities,
    never at their edges.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    emission_network = None
    """Replaces the model's ``emissions`` when set: a callable from the ids of a batch of windows of one length, no
    padding, to what ``emissions`` returns (e.g. an ONNX Runtime session, ``brat_ner/fast_inference.py``). It takes
    no attention mask, so packed batches reach it one length at a time. The CRF always runs in torch, by the
    model's ``tags`` and ``marginals``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.character_encoder = CharacterEncoder(self.tokenizer, self.model.config.skip_blanks)

    def _sanitize_parameters(self, aggregation_strategy=None, window_chars=None, context_chars=None,
                             constrain_bio=None, min_votes=None, pack_windows=None, **kwargs):
        config = self.model.config
        if window_chars is not None or context_chars is not None:
            if context_chars is not None and context_chars < 0:
                raise ValueError(f"context_chars must not be negative, got {context_chars}")
            window = config.window_chars if window_chars is None else window_chars
            context = config.context_chars if context_chars is None else context_chars
            name = "window_chars + 2 * context_chars" if context else "window_chars"
            problem = window_fit_problem(window + 2 * context, config.max_position_embeddings, name)
            if problem:
                raise ValueError(problem)
        preprocess_params = {"window_chars": window_chars} if window_chars else {}
        if context_chars is not None:
            preprocess_params["context_chars"] = context_chars
        decoding = {"constrain_bio": constrain_bio, "min_votes": min_votes}
        forward_params = {name: value for name, value in decoding.items() if value is not None}
        if pack_windows is not None:
            if pack_windows < 0:
                raise ValueError(f"pack_windows must not be negative, got {pack_windows}")
            # Read by get_iterator, which takes it out before the forward passes.
            forward_params["pack_windows"] = pack_windows
        postprocess_params = {"aggregation_strategy": aggregation_strategy} if aggregation_strategy else {}
        if aggregation_strategy not in (None, "simple", "none"):
            raise ValueError(f"aggregation_strategy must be 'simple' or 'none', not {aggregation_strategy!r}")
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, text, window_chars=None, context_chars=None):
        if not isinstance(text, str):
            raise ValueError(f"this pipeline takes strings, got {type(text).__name__}")
        config = self.model.config
        context_chars = config.context_chars if context_chars is None else context_chars
        windows = split_into_windows(text, window_chars or config.window_chars) or [(0, 0)]
        for index, (start, end) in enumerate(windows):
            before, after = window_context(text, start, end, context_chars)
            input_ids = torch.tensor([self.character_encoder.window_ids(text[start:end], before, after)])
            # The CRF decodes the window's own characters only: not [CLS], [SEP] or the context.
            crf_mask = torch.zeros_like(input_ids, dtype=torch.bool)
            first = 1 + len(self.character_encoder.fed(before))
            crf_mask[0, first : first + len(self.character_encoder.fed(text[start:end]))] = True
            yield {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "crf_mask": crf_mask,
                "window": text[start:end],
                "offset": start,
                "is_last": index == len(windows) - 1,
            }

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        forward_params = dict(forward_params)
        pack_windows = forward_params.pop("pack_windows", PACK_BATCHES * batch_size)
        if batch_size == 1 or not pack_windows:
            return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                        postprocess_params)
        return self._packed(inputs, batch_size, pack_windows, preprocess_params, forward_params, postprocess_params)

    def _packed(self, inputs, batch_size, pack_windows, preprocess_params, forward_params, postprocess_params):
        """Each text's entities, in input order: the windows of at least ``pack_windows`` windows' worth of whole
        texts sorted by length and batched with their neighbours (``_forward(pad=True)``), then regrouped by text.
        The windows are made in this process (the stock iterator's ``num_workers`` would only move them)."""
        collate = pad_collate_fn(self.tokenizer, None)
        texts = (list(self.preprocess(text, **preprocess_params)) for text in inputs)
        for pool in _pools(texts, pack_windows):
            windows = [window for text_windows in pool for window in text_windows]
            # A stable sort: windows of one length keep their order, so the result depends on the pool only.
            order = sorted(range(len(windows)), key=lambda index: windows[index]["input_ids"].shape[1])
            outputs = [None] * len(windows)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self.forward(collate([windows[row] for row in rows]), pad=True, **forward_params)
                for position, row in enumerate(rows):
                    outputs[row] = {key: value[position : position + 1] if isinstance(value, torch.Tensor)
                                    else value[position] for key, value in batch.items()}
            done = 0
            for text_windows in pool:
                yield self.postprocess(outputs[done : done + len(text_windows)], **postprocess_params)
                done += len(text_windows)

    def _forward(self, model_inputs, pad=False, **decoding):
        """``pad``: the batch's windows are of similar lengths (``_packed``), so the model runs them padded to the
        longest in one pass; otherwise (and for an ``emission_network``, which takes no mask) each length runs
        separately."""
        window, offset, is_last = model_inputs.pop("window"), model_inputs.pop("offset"), model_inputs.pop("is_last")
        crf_mask = model_inputs["crf_mask"]
        if pad and self.emission_network is None:
            emissions = self.model.emissions(model_inputs["input_ids"], model_inputs["attention_mask"])
        else:
            emissions = self._emissions_by_length(model_inputs["input_ids"], model_inputs["attention_mask"])
        tags = self.model.tags(emissions, crf_mask, **decoding)
        marginals = self.model.marginals(emissions, crf_mask)
        return {"tags": tags, "marginals": marginals, "window": window, "offset": offset, "is_last": is_last}

    def _emissions_by_length(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The model's ``emissions`` (or ``emission_network``'s) of a right-padded batch, computed for each window
        length separately without padding (zeros at padding): no encoder work on padding, no packed BiLSTM, and an
        emission network that needs no mask."""
        network = self.emission_network or self._model_emissions
        lengths = attention_mask.sum(1)
        if bool((lengths == input_ids.shape[1]).all()):
            return network(input_ids)
        emissions = None
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            group = network(input_ids[rows, :length])
            if emissions is None:
                emissions = group.new_zeros((*input_ids.shape, *group.shape[2:]))
            emissions[rows, :length] = group
        return emissions

    def _model_emissions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.emissions(input_ids)

    def postprocess(self, all_outputs, aggregation_strategy="simple"):
        id2label = self.model.config.id2label
        entities = []
        for output in all_outputs:
            visible = output["tags"][0] != -100
            tags = output["tags"][0][visible]
            scores = output["marginals"][0][visible].gather(1, tags.unsqueeze(1)).squeeze(1).tolist()
            window, offset = output["window"], output["offset"]
            names = [id2label[tag] for tag in tags.tolist()]
            if self.model.config.skip_blanks:  # back to one tag per character
                names, sources = tags_with_blanks(window, names)
                # A blank inside an entity has the score of the tag it took; one outside (O) is never reported.
                scores = [scores[source] if source >= 0 else 1.0 for source in sources]
            if aggregation_strategy == "none":
                entities += [
                    {"entity": name, "score": score, "index": offset + i, "word": window[i],
                     "start": offset + i, "end": offset + i + 1}
                    for i, (name, score) in enumerate(zip(names, scores)) if name != "O"
                ]
                continue
            for entity_type, start, end in _strip_blanks(window, bio_to_spans(names)):
                entities.append({
                    "entity_group": entity_type,
                    "score": sum(scores[start:end]) / (end - start),
                    "word": window[start:end],
                    "start": offset + start,
                    "end": offset + end,
                })
        return entities


def _pools(texts, min_windows: int):
    """Consecutive texts' window lists in groups holding at least ``min_windows`` windows (the last may hold
    fewer), each group taken as soon as it is complete, so that results stream while later texts are read."""
    pool, windows = [], 0
    for text_windows in texts:
        pool.append(text_windows)
        windows += len(text_windows)
        if windows >= min_windows:
            yield pool
            pool, windows = [], 0
    if pool:
        yield pool


def _strip_blanks(text: str, spans):
    """Spans without leading or trailing blanks (``is_blank``); blank-only spans are left out."""
    for entity_type, start, end in spans:
        while start < end and is_blank(text[start]):
            start += 1
        while end > start and is_blank(text[end - 1]):
            end -= 1
        if start < end:
            yield entity_type, start, end
