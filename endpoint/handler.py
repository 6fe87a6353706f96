"""A custom handler for a Hugging Face Inference Endpoint: the model's own token-classification pipeline (CRF
decoding, character offsets), which the hosted default handler does not run. ``push_to_hub.py`` copies this
file and ``requirements.txt`` into the model repository; the endpoint loads them from there.

Request: ``{"inputs": "text" or ["text", ...], "parameters": {...}}``. The parameters are the pipeline's
(``window_chars``, ``context_chars``, ``constrain_bio``, ``batch_size``) and two of the handler's: ``brat``
(also return the brat ``.ann`` text) and ``confidence`` (with ``brat``: an ``AnnotatorNotes`` line per entity
holding its score). Response: the pipeline's entity dicts (``entity_group``, ``word``, ``start``, ``end``
exclusive, ``score``) for a text, a list of them for a list of texts; with ``brat``, each text's
``{"entities": [...], "brat": "T1\\t..."}`` instead.
"""

from __future__ import annotations

import sys

import torch
from transformers import pipeline


class EndpointHandler:
    def __init__(self, path: str = ""):
        # The code of the repository this endpoint is deployed from: what its uploader published and saw.
        self.pipeline = pipeline("token-classification", model=path, trust_remote_code=True,
                                 device="cuda" if torch.cuda.is_available() else "cpu")
        # The model file's own brat writer (the pipeline's module), as predict.py and the demo Space use.
        self.brat_annotations = sys.modules[type(self.pipeline).__module__].brat_annotations

    def __call__(self, data: dict) -> list | dict:
        inputs = data.get("inputs") if isinstance(data, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise ValueError('expected {"inputs": a text or a list of texts, "parameters": {...}}')
        parameters = dict(data.get("parameters") or {})
        brat, confidence = parameters.pop("brat", False), parameters.pop("confidence", False)
        results = self.pipeline(texts, **parameters) if texts else []  # the pipeline cannot batch an empty list
        if brat:
            results = [{"entities": entities, "brat": self.brat_annotations(text, entities, confidence)}
                       for text, entities in zip(texts, results)]
        return results[0] if isinstance(inputs, str) else results
