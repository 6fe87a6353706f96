"""``Trainer`` for this model, with its add-ons: a wall-clock budget (``time_budget``), a moving average of
the weights (``weight_average``), FGM adversarial training (``adversarial``), a teacher's soft targets
(``distillation``) and silver windows of less weight (``silver_data``)."""

from __future__ import annotations

from brat_ner.trainer.adversarial import FgmTrainerMixin
from brat_ner.trainer.distillation import DistillationTrainerMixin
from brat_ner.trainer.metrics import NerMetrics
from brat_ner.trainer.silver_data import SilverDataTrainerMixin
from brat_ner.trainer.time_budget import TimeBudgetTrainer, TimeBudgetTrainingArguments, measured_throughput
from brat_ner.trainer.weight_average import WeightAverageTrainerMixin

__all__ = ["BertBiLstmCrfTrainer", "NerMetrics", "TimeBudgetTrainer", "TimeBudgetTrainingArguments",
           "measured_throughput"]


class BertBiLstmCrfTrainer(DistillationTrainerMixin, SilverDataTrainerMixin, FgmTrainerMixin, WeightAverageTrainerMixin,
                           TimeBudgetTrainer):
    """``Trainer`` with two learning rates: ``args.learning_rate`` for the pretrained encoder and
    ``head_learning_rate`` for the BiLSTM, linear and CRF layers, which start from random weights and need a
    far larger step. Biases, LayerNorm weights and the CRF transitions get no weight decay. With ``ema_decay``,
    a moving average of the weights is what gets evaluated and saved (``weight_average.py``); with
    ``fgm_epsilon``, every step adds an adversarial pass (``adversarial.py``); with a ``teacher``, the loss
    also learns the teacher's CRF (``distillation.py``); with ``silver_windows``, those weigh ``silver_weight``
    (``silver_data.py``)."""

    def __init__(self, *args, head_learning_rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(self.parameter_groups(model), **optimizer_kwargs)
        return self.optimizer

    def parameter_groups(self, model):
        groups = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            is_encoder = name.startswith(model.base_model_prefix + ".")
            decays = parameter.ndim >= 2 and not name.startswith("crf.")
            key = (is_encoder, decays)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "lr": self.args.learning_rate if is_encoder else self.head_learning_rate,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                }
            groups[key]["params"].append(parameter)
        return list(groups.values())

