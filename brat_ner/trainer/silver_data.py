"""Silver windows weigh less (``--silver_weight`` of train.py, with self-training's ``--silver_model``): windows
a model tagged (``brat_ner/self_training.py``) add ``silver_weight`` times their CRF negative log-likelihood to
the loss, gold windows their whole NLL; the sum is averaged over the batch's windows, as the model's own loss is.
"""

from __future__ import annotations

import torch

from brat_ner.training_data import window_key


class SilverDataTrainerMixin:
    """For a ``Trainer`` subclass: the windows of ``silver_windows`` (rows with ``input_ids`` and ``labels``) weigh
    ``silver_weight`` in the training loss (1 or no silver windows: the model's loss as it is)."""

    def __init__(self, *args, silver_windows=None, silver_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= silver_weight <= 1:
            raise ValueError(f"--silver_weight must be between 0 and 1, got {silver_weight}")
        self.silver_weight = silver_weight
        self.silver_keys = {window_key(torch.tensor(row["input_ids"]), torch.tensor(row["labels"]) != -100)
                            for row in silver_windows or ()} if silver_weight != 1 else set()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.silver_keys or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        visible = labels != -100
        lengths = inputs["attention_mask"].sum(1).tolist()
        weights = torch.tensor([self.silver_weight if window_key(ids[:length], mask[:length]) in self.silver_keys
                                else 1.0 for ids, mask, length in zip(inputs["input_ids"], visible, lengths)],
                               device=labels.device)
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        crf = self.accelerator.unwrap_model(model).crf
        nll = -crf(outputs.logits, labels, mask=visible, reduction="none")
        loss = (weights * nll).sum() / len(nll)
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss
