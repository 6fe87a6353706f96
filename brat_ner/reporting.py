"""What a training run tells its user: one line per epoch beside the progress bar, the run's throughput, the
corpus summary and the plots written beside the model."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import EarlyStoppingCallback, ProgressCallback

from brat_ner.files import atomic_write
from brat_ner.trainer.time_budget import measured_throughput
from dataset_script import ruijin_ner


def without_checkpoint_bars(factory, args, kwargs):
    """transformers' tqdm hook: no 'Writing model shards' bar at every epoch's checkpoint (the training bar
    already shows progress); other bars (downloads, say) unchanged."""
    if kwargs.get("desc") == "Writing model shards":
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


def quiet_checkpoint_ordering() -> None:
    """No "mtime may not be reliable on this filesystem" in the progress bar: transformers says it whenever two
    checkpoints were saved within a second (any small run), then orders them by step, as this project does."""
    logging.getLogger("transformers.trainer_utils").addFilter(
        lambda record: "mtime may not be reliable" not in record.getMessage())


class SaidEarlyStoppingCallback(EarlyStoppingCallback):
    """transformers' early stopping, which ends a run of 10 epochs after 4 in silence, with the line saying why."""

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        patience = self.early_stopping_patience
        if control.should_training_stop and self.early_stopping_patience_counter >= patience \
                and state.is_world_process_zero:
            print(f"Early stopping after epoch {state.epoch:g} of {args.num_train_epochs:g}: no better validation "
                  f"{args.metric_for_best_model} than {state.best_metric:.4f} in the last {patience} evaluations "
                  f"(--early_stopping_patience {patience}; 0: never)", flush=True)


class EpochLineCallback(ProgressCallback):
    """The training progress bar, and at each evaluation one line with the figures that matter (losses,
    validation micro/macro-F1, time) instead of the metric dicts and a progress bar per evaluation. On a time
    budget (``--time_budget_minutes``) the bar counts seconds of the budget, not the steps of the epochs that
    bound it (50 epochs would show a day for a 20-minute run)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.budget_seconds = round(60 * args.time_budget_minutes) if getattr(args, "time_budget_minutes", None) \
            else None
        if self.budget_seconds is None:
            super().on_train_begin(args, state, control, **kwargs)
        elif state.is_world_process_zero:
            self.training_bar = tqdm(total=self.budget_seconds, unit="s", dynamic_ncols=True,
                                     bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s of the time budget")
        self.start = self.line_start = time.monotonic()
        self.training_loss = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.budget_seconds is None:
            super().on_step_end(args, state, control, **kwargs)
        elif state.is_world_process_zero:
            elapsed = min(round(time.monotonic() - self.start), self.budget_seconds)
            self.training_bar.update(elapsed - self.training_bar.n)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass  # a few seconds of validation need no bar of their own

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None:
            return
        if "loss" in logs:
            self.training_loss = logs["loss"]
        if "eval_f1" in logs:
            now = time.monotonic()
            loss = f"loss {self.training_loss:.3f} (validation {logs['eval_loss']:.3f})" \
                if self.training_loss is not None else f"validation loss {logs['eval_loss']:.3f}"
            epochs = f"{state.epoch:g}" if self.budget_seconds else f"{state.epoch:g}/{args.num_train_epochs:g}"
            self.training_bar.write(
                f"epoch {epochs}: {loss}, validation micro-F1 {logs['eval_f1']:.3f}, macro-F1 "
                f"{logs['eval_macro_f1']:.3f}, {now - self.line_start:.1f} s")
            self.line_start = now


def training_figures(metrics, start, end, train_set):
    """Training throughput of this run (from the ``start`` state of a resumed checkpoint, if any, to the ``end``
    state): windows, optimizer steps and characters of text (no padding, [CLS] or [SEP]) per second, and peak
    GPU memory."""
    start_epoch, start_step = (start.epoch or 0, start.global_step) if start else (0, 0)
    epochs, steps = (end.epoch or 0) - start_epoch, end.global_step - start_step
    figures = measured_throughput(metrics, epochs, steps, len(train_set))
    characters = sum(train_set["characters"])  # blanks included with --skip_blanks too
    figures["train_characters_per_second"] = characters * epochs / metrics["train_runtime"]
    if torch.cuda.is_available():
        figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return figures


def write_corpus_summary(stats, data_args, model_args, path):
    """What the model was trained and tested on, and the encoder it started from, for the model card."""
    split_folders = ruijin_ner.split_folders(Path(data_args.data_dir))
    corpus_summary = {
        "data_dir": data_args.data_dir,
        "window_chars": data_args.window_chars,
        "context_chars": data_args.context_chars,
        "split_rule": ("the corpus' train/validation/test folders" if split_folders
                       else "by a hash of the document group id, 80/10/10")
        + (f"; training and validation documents in {data_args.folds} folds by document group (seed "
           f"{data_args.fold_seed}), fold {data_args.fold} validating" if data_args.folds else "")
        + (f"; {data_args.train_fraction:g} of the training documents (whole groups, seed {data_args.fold_seed})"
           if data_args.train_fraction < 1 else ""),
        "splits": {split: {"documents": stats.documents[split], "windows": stats.windows[split]}
                   for split in ("train", "validation", "test")},
        "entities_read": stats.entities_read,
        "entities_encoded": stats.entities_encoded,
        # Whether the start was a folder here (an encoder from pretrain_mlm.py, embeddings from
        # pretrain_embeddings.py), which the model card must not name as a Hub model even once it is gone.
        "encoder": {"model_name_or_path": model_args.model_name_or_path, "encoder_config": model_args.encoder_config,
                    "local_folder": Path(model_args.model_name_or_path).is_dir()},
    }
    atomic_write(path, json.dumps(corpus_summary, indent=2))


def plot_training(state, test_report, output_dir):
    """Losses and validation F1 per epoch with the chosen (best) epoch marked, test F1 per type with each type's
    support, as PNG for people who would rather look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(entry["epoch"], entry["loss"]) for entry in state.log_history if "loss" in entry]
    evaluation = [entry for entry in state.log_history if "eval_loss" in entry]
    figure, (loss_axis, f1_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([epoch for epoch, _ in train], [loss for _, loss in train], marker="o", label="training")
    loss_axis.plot([e["epoch"] for e in evaluation], [e["eval_loss"] for e in evaluation], marker="o",
                   label="validation")
    loss_axis.set(xlabel="epoch", ylabel="CRF negative log-likelihood", title="Loss")
    for key, label in (("eval_f1", "micro-F1"), ("eval_macro_f1", "macro-F1")):
        f1_axis.plot([e["epoch"] for e in evaluation], [e[key] for e in evaluation], marker="o", label=label)
    f1_axis.set(xlabel="epoch", ylabel="F1", title="Validation entity F1", ylim=(0, 1))
    best_epoch = chosen_epoch(state)
    if best_epoch is not None:
        for axis in (loss_axis, f1_axis):
            axis.axvline(best_epoch, color="grey", linestyle="--", label=f"chosen: epoch {best_epoch:g}")
    loss_axis.legend()
    f1_axis.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "training_curves.png", dpi=120)
    plt.close(figure)

    types = [name for name in test_report if "avg" not in name]
    figure, axis = plt.subplots(figsize=(10, 4))
    # The support tells a type with one test entity (F1 0 or 1 by chance) from a well-measured one.
    axis.bar([f"{name} ({test_report[name]['support']})" for name in types],
             [test_report[name]["f1-score"] for name in types], color="tab:blue")
    axis.set(ylabel="F1", ylim=(0, 1), title=f"Test F1 per type (micro {test_report['micro avg']['f1-score']:.3f}, "
                                             f"macro {test_report['macro avg']['f1-score']:.3f})")
    plt.setp(axis.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    figure.tight_layout()
    figure.savefig(output_dir / "test_f1_per_type.png", dpi=120)
    plt.close(figure)


def chosen_epoch(state):
    """The epoch of the checkpoint kept as the model (best validation micro-F1), or None without evaluations."""
    evaluations = [entry for entry in state.log_history if "eval_f1" in entry]
    chosen = [entry for entry in evaluations if entry["step"] == state.best_global_step]
    return chosen[0]["epoch"] if chosen else None

