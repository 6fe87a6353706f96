"""A custom handler for a Hugging Face Inference Endpoint: the model's own token-classification pipeline (CRF
decoding, character offsets), which the hosted default handler does not run. ``push_to_hub.py`` copies this
file and ``requirements.txt`` into the model repository; the endpoint loads them from there.

Request: ``{"inputs": "text" or ["text", ...], "parameters": {...}}``. The parameters are the pipeline's
(``window_chars``, ``context_chars``, ``constrain_bio``, ``batch_size``, ``aggregation_strategy``) and two of the
handler's: ``brat`` (also return the brat ``.ann`` text) and ``confidence`` (with ``brat``: an ``AnnotatorNotes``
line per entity holding its score). Each is checked (its type and range; an unknown name is refused): a mistake
raises ``ValueError`` naming the parameter, which the endpoint returns to the caller as its error.
Response: the pipeline's entity dicts (``entity_group``, ``word``, ``start``, ``end``
exclusive, ``score``) for a text, a list of them for a list of texts; with ``brat``, each text's
``{"entities": [...], "brat": "T1\\t..."}`` instead.
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import pipeline

# Parameter: (the JSON type it takes, its least value) for numbers, the values it takes otherwise.
PARAMETERS = {
    "window_chars": (int, 1), "context_chars": (int, 0), "batch_size": (int, 1),
    "constrain_bio": (bool, None), "brat": (bool, None), "confidence": (bool, None),
    "aggregation_strategy": (("simple", "none"), None),
}


def checked_parameters(parameters) -> dict:
    """The request's parameters, each of a known name, type and range; else ``ValueError`` naming the first that
    is not (JSON's true is no number here, and "no" no boolean)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ValueError(f'"parameters" must be an object of names and values, got {json_type(parameters)}')
    unknown = sorted(set(parameters) - PARAMETERS.keys())
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; the parameters are {', '.join(PARAMETERS)}")
    for name, value in parameters.items():
        kind, least = PARAMETERS[name]
        if isinstance(kind, tuple):
            if value not in kind:
                raise ValueError(f"parameter {name!r} must be one of {', '.join(map(repr, kind))}, got {value!r}")
        elif type(value) is not kind:  # not isinstance: True is an int to Python
            raise ValueError(f"parameter {name!r} must be {'an integer' if kind is int else 'true or false'}, "
                             f"got {json_type(value)} {json.dumps(value, ensure_ascii=False)}")
        elif least is not None and value < least:
            raise ValueError(f"parameter {name!r} must be at least {least}, got {value}")
    return dict(parameters)


def json_type(value) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


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
        parameters = checked_parameters(data.get("parameters"))
        brat, confidence = parameters.pop("brat", False), parameters.pop("confidence", False)
        results = self.pipeline(texts, **parameters) if texts else []  # the pipeline cannot batch an empty list
        if brat:
            results = [{"entities": entities, "brat": self.brat_annotations(text, entities, confidence)}
                       for text, entities in zip(texts, results)]
        return results[0] if isinstance(inputs, str) else results
