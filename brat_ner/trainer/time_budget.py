"""Training for a wall-clock budget (``--time_budget_minutes`` of train.py and pretrain_mlm.py).

A run that must fit in ten minutes on a GPU whose speed is not known in advance cannot fix its number of steps
beforehand. With a budget, the learning-rate schedule follows *progress*, the larger of the share of the budget
elapsed and the share of the maximum steps done (``--num_train_epochs`` / ``--max_steps`` become an upper
bound): a linear warmup over the first ``--warmup_steps`` (a fraction) of it, then a linear decay to zero, and
training stops when progress reaches 1. So the schedule ends on time on any machine, and ends on its last step
when the steps run out first. This is the budget-aware schedule of Geiping & Goldstein, "Cramming" (2022).

The budget covers the training loop, evaluations inside it included; loading, the final save and the test pass
come on top. Under several processes (``accelerate launch``) the main process's clock is broadcast at every
step, so all of them change the learning rate alike and stop at the same step. A resumed run starts a new
budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from brat_ner.cli import UsageError, check_at_least, check_positive


@dataclass
class TimeBudgetTrainingArguments(TrainingArguments):
    time_budget_minutes: float | None = field(
        default=None,
        metadata={"help": "Train for this many minutes of wall-clock time: the learning rate warms up and decays "
                          "to zero over the budget (or the maximum steps, whichever ends first), and training "
                          "stops when it runs out. --lr_scheduler_type is then not used."},
    )

    def __post_init__(self):
        # A schedule that trains nothing would save an untrained model and call the run finished.
        if not (self.num_train_epochs > 0 or self.max_steps > 0):
            raise UsageError(f"--num_train_epochs must be positive (or --max_steps), got {self.num_train_epochs:g}")
        check_positive(learning_rate=self.learning_rate, time_budget_minutes=self.time_budget_minutes)
        check_at_least(1, per_device_train_batch_size=self.per_device_train_batch_size,
                       per_device_eval_batch_size=self.per_device_eval_batch_size,
                       gradient_accumulation_steps=self.gradient_accumulation_steps)
        super().__post_init__()


class TimeBudget(TrainerCallback):
    """The clock of a budgeted run: started when training begins, read (and shared between processes) after
    every optimizer step; stops training when the budget is spent."""

    def __init__(self, minutes: float, clock=time.monotonic):
        if minutes <= 0:
            raise UsageError(f"a time budget must be positive, got {minutes} minutes")
        self.seconds = minutes * 60
        self.clock = clock
        self.start = None
        self.elapsed = 0.0
        self.spent = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.clock()
        self.elapsed = 0.0
        self.spent = False

    def on_step_end(self, args, state, control, **kwargs):
        self.elapsed = self.clock() - self.start
        if args.world_size > 1:
            # Each process has its own clock; they must agree on the learning rate and on the last step.
            elapsed = torch.tensor([self.elapsed], dtype=torch.float64, device=args.device)
            torch.distributed.broadcast(elapsed, src=0)
            self.elapsed = elapsed.item()
        if self.elapsed >= self.seconds:
            self.spent = True
            control.should_training_stop = True
        return control

    def progress(self, step: int, max_steps: int) -> float:
        return min(1.0, max(self.elapsed / self.seconds, step / max_steps))

    def scheduler(self, optimizer, max_steps: int, warmup_fraction: float):
        """Linear warmup over ``warmup_fraction`` of progress, then linear decay to zero at its end."""

        def multiplier(step: int) -> float:
            done = self.progress(step, max_steps)
            if done < warmup_fraction:
                return done / warmup_fraction
            return (1.0 - done) / (1.0 - warmup_fraction)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


class TimeBudgetTrainer(Trainer):
    """``Trainer`` that trains for ``args.time_budget_minutes`` when it is set (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.time_budget = None
        if getattr(self.args, "time_budget_minutes", None):
            if not 0 <= self.args.warmup_steps < 1:
                raise UsageError("with --time_budget_minutes, give --warmup_steps as a fraction of the budget "
                                 f"(0 <= warmup < 1), not {self.args.warmup_steps} steps")
            self.time_budget = TimeBudget(self.args.time_budget_minutes)
            self.add_callback(self.time_budget)

    def train(self, *args, **kwargs):
        """``Trainer.train``; with a budget, its metrics say whether the budget ended the run
        (``train_stopped_by_time_budget``) rather than the steps, the epochs or early stopping."""
        output = super().train(*args, **kwargs)
        if self.time_budget is not None:
            output.metrics["train_stopped_by_time_budget"] = self.time_budget.spent
        return output

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.time_budget is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = self.time_budget.scheduler(
            optimizer or self.optimizer, num_training_steps, self.args.warmup_steps
        )
        self._created_lr_scheduler = True  # so that Trainer builds a fresh one for the next train()
        return self.lr_scheduler


def measured_throughput(metrics: dict, epochs: float, steps: int, samples_per_epoch: int) -> dict:
    """``metrics`` of ``Trainer.train`` with samples and steps per second over the ``epochs`` and ``steps`` run.

    Some transformers versions (5.17 among them) divide the whole planned schedule by the runtime; a time budget
    or early stopping cuts that schedule short, and the figures came out up to a hundred times too high."""
    runtime = metrics["train_runtime"]
    return {**metrics, "train_samples_per_second": samples_per_epoch * epochs / runtime,
            "train_steps_per_second": steps / runtime}
