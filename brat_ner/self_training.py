"""Self-training (train.py's ``--silver_model`` with ``--extra_text_dirs``): a trained model (one of train.py's,
or an ensemble of ensemble.py's) tags unlabelled text once, before training, and the windows it is sure of join
the training windows with its Viterbi tags as silver labels, their loss weighted by ``--silver_weight``
(``trainer/silver_data.py``).

A window is sure when the CRF marginal of every character's Viterbi tag is above ``--silver_threshold``: its
least certain character decides, an ``O`` included, since an ``O`` the model doubts may be an entity it missed.
A threshold of 1.0 keeps no window (a marginal is never above 1), and training is then plain training. Rounds:
train again with the last round's model as ``--silver_model``.
"""

from __future__ import annotations

import datasets
import torch

from brat_ner.trainer.distillation import load_teacher
from brat_ner.training_data import batches_of_one_length


@torch.no_grad()
def silver_windows(model_folder: str, untagged: datasets.Dataset, label_names: list[str], student_config,
                   threshold: float, batch_size: int = 64) -> tuple[datasets.Dataset, dict[str, int]]:
    """The windows of ``untagged`` (``training_data.untagged_windows``) whose every visible position the model in
    ``model_folder`` tags with a marginal above ``threshold``, labelled with its Viterbi tags; and counts for the
    log (windows read, kept, entities in them). The model must read the windows as the student does
    (``load_teacher``'s checks)."""
    model = load_teacher(model_folder, label_names, student_config, "--silver_model")
    kept, entities = [], 0
    begins = [index for index, name in enumerate(label_names) if name.startswith("B-")]
    for batch, input_ids, visible in batches_of_one_length(enumerate(untagged), batch_size):
        emissions = model.emissions(input_ids).float()  # the model's one decoding path, as the pipeline's
        tags = model.tags(emissions, visible)
        marginals = model.marginals(emissions, visible)
        chosen = marginals.gather(-1, tags.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        least_certain = torch.where(visible, chosen, torch.ones_like(chosen)).amin(dim=1)
        for (index, _), window_tags, certainty in zip(batch, tags, least_certain):
            if certainty > threshold:
                labels = window_tags.tolist()  # -100 where the window's labels were (tags' own mark)
                kept.append((index, labels))
                entities += sum(label in begins for label in labels)
    kept.sort()
    silver = untagged.select([index for index, _ in kept])
    silver = silver.map(lambda row, position: {"labels": kept[position][1]}, with_indices=True, desc="Silver labels")
    return silver, {"windows read": len(untagged), "windows kept": len(silver), "entities": entities}
