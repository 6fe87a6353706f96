"""Adversarial training on the embedding tables: FGM (``--fgm_epsilon`` of train.py).

Each training step runs twice on the same batch (Miyato et al., "Adversarial training methods for
semi-supervised text classification", 2017): once as usual, then with the character (and bigram) embedding
tables moved by ``epsilon`` along their gradient, ``epsilon * g / ||g||`` per table, the direction that raises
the loss most. Both backward passes add to the gradients the optimizer then applies, so the model learns to be
right in a small neighbourhood of its embeddings. A step costs about twice as much; the logged loss is the
first pass's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from brat_ner.cli import UsageError


class FgmTrainerMixin:
    """For a ``Trainer`` subclass: with a positive ``fgm_epsilon``, every training step adds an adversarial pass
    (None or 0: off)."""

    def __init__(self, *args, fgm_epsilon: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if fgm_epsilon is not None and not fgm_epsilon >= 0:
            raise UsageError(f"--fgm_epsilon must be positive (or 0: off), got {fgm_epsilon}")
        self.fgm_epsilon = fgm_epsilon

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.fgm_epsilon:
            with perturbed_along_gradient(embedding_tables(self.model), self.fgm_epsilon):
                super().training_step(model, inputs, num_items_in_batch)
        return loss


def embedding_tables(model: torch.nn.Module) -> list[torch.Tensor]:
    """The tables that map input ids to vectors: the encoder's character embeddings, and the bigram
    embeddings of a model that has them. Positions and segments are left alone."""
    tables = [model.get_input_embeddings().weight]
    if getattr(model, "bigram_embeddings", None) is not None:
        tables.append(model.bigram_embeddings.weight)
    return tables


@contextmanager
def perturbed_along_gradient(tables: list[torch.Tensor], epsilon: float):
    """Inside the block each table is moved by ``epsilon`` along its current gradient (unit norm per table);
    after it each holds exactly its earlier values again. A table without a finite, non-zero gradient stays."""
    saved = []
    with torch.no_grad():
        for table in tables:
            if table.grad is None:
                continue
            norm = torch.linalg.vector_norm(table.grad)
            if not (torch.isfinite(norm) and norm > 0):
                continue
            saved.append((table, table.detach().clone()))
            table.add_(table.grad, alpha=epsilon / norm.item())
    try:
        yield
    finally:
        with torch.no_grad():
            for table, original in saved:
                table.copy_(original)
