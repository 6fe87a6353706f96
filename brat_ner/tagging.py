"""Tagging many texts with the model's pipeline: windows of similar length batched together across documents,
results streamed as each pool of documents is done (predict.py and the benchmarks)."""

from __future__ import annotations

from tqdm.auto import tqdm


def tag_texts(tagger, texts: list[str], batch_size: int, progress: bool = False, **parameters) -> list[list[dict]]:
    """Entities for each text (the pipeline packs windows across documents), with a bar that moves as each pool of
    documents is done. ``parameters``: the pipeline's (``constrain_bio``, an ensemble's ``min_votes``,
    ``pack_windows`` ...)."""
    results = stream_entities(tagger, texts, batch_size, **parameters)
    return list(tqdm(results, total=len(texts), desc="Documents", unit="doc", disable=not progress))


def stream_entities(tagger, texts, batch_size: int, **parameters):
    """Each text's entities as soon as its windows are tagged: the pipeline reads texts until it holds
    ``pack_windows`` windows (16 batches' worth by default), tags them, and returns those texts' entities one by
    one, in order. It gets a generator: given a list, it tags every text before returning the first result, and a
    progress bar would jump from 0 to 100%."""
    return tagger((text for text in texts), batch_size=batch_size, **parameters)

