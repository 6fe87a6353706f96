"""An exponential moving average of the weights (``--ema_decay`` of train.py).

After every optimizer step the average moves towards the trained weights by ``1 - decay`` (Polyak averaging
as in Tarvainen & Valpola, "Mean teachers", 2017). The average, not the last step, is what gets evaluated,
checkpointed and saved: the trainer swaps it into the model around each evaluation and save
(``WeightAverageTrainerMixin``) and leaves it in the model when training ends. Early on the average would be
dominated by the random start, so the decay is capped at ``(1 + n) / (10 + n)`` after ``n`` updates.

A checkpoint therefore holds averaged weights; a resumed run continues training from them and starts a new
average there.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import TrainerCallback

from brat_ner.cli import UsageError


class WeightAverage(TrainerCallback):
    """The moving average of a model's trainable parameters, updated after every optimizer step."""

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise UsageError(f"--ema_decay must lie between 0 and 1 (exclusive), got {decay}")
        self.decay = decay
        self.names: list[str] = []
        self.averages: list[torch.Tensor] = []
        self.updates = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.update(model)

    def start(self, model: torch.nn.Module) -> None:
        trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in trained]
        self.averages = [p.detach().clone() for _, p in trained]
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.averages, self._parameters(model), 1.0 - decay)

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The averaged weights in ``model`` inside the block, the trained ones again after it."""
        parameters = self._parameters(model)
        trained = [p.detach().clone() for p in parameters]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(parameters, trained)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        torch._foreach_copy_(self._parameters(model), self.averages)

    def _parameters(self, model: torch.nn.Module) -> list[torch.Tensor]:
        by_name = dict(model.named_parameters())
        return [by_name[name].data for name in self.names]


class WeightAverageTrainerMixin:
    """For a ``Trainer`` subclass: with ``ema_decay``, evaluations and checkpoints see the averaged weights (so
    the best checkpoint is chosen by them), and the model holds them when ``train`` returns."""

    def __init__(self, *args, ema_decay: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_average = WeightAverage(ema_decay) if ema_decay else None
        if self.weight_average is not None:
            self.add_callback(self.weight_average)

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # The only place where Trainer evaluates and checkpoints during training.
        if self.weight_average is None or not (self.control.should_evaluate or self.control.should_save):
            return super()._maybe_log_save_evaluate(*args, **kwargs)
        with self.weight_average.swapped_in(self.model):
            return super()._maybe_log_save_evaluate(*args, **kwargs)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.weight_average is not None and not self.args.load_best_model_at_end:
            self.weight_average.copy_to(self.model)
        return output
