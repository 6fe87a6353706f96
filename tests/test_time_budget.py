"""time_budget.py: the learning rate follows the elapsed share of the budget (or of the steps), training stops
when it is spent, and several processes agree on both. The scripts' use of it is tested in test_train.py."""

import types

import pytest
import torch
import torch.distributed
import torch.multiprocessing
from transformers import BertConfig, BertForMaskedLM, TrainerControl

from brat_ner.trainer.time_budget import TimeBudget, TimeBudgetTrainer, TimeBudgetTrainingArguments

SINGLE_PROCESS = types.SimpleNamespace(world_size=1, device=torch.device("cpu"))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def budget_and_optimizer(minutes, max_steps, warmup_fraction, clock):
    budget = TimeBudget(minutes, clock=clock)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = budget.scheduler(optimizer, max_steps=max_steps, warmup_fraction=warmup_fraction)
    budget.on_train_begin(SINGLE_PROCESS, None, TrainerControl())
    return budget, optimizer, scheduler


def step_at(seconds, clock, budget, optimizer, scheduler):
    """One optimizer step that ends ``seconds`` into training; returns the next step's learning rate and whether
    training stops."""
    optimizer.step()
    clock.now = 1000.0 + seconds
    control = budget.on_step_end(SINGLE_PROCESS, None, TrainerControl())
    scheduler.step()
    return scheduler.get_last_lr()[0], control.should_training_stop


def test_learning_rate_warms_up_then_decays_to_zero_at_the_end_of_the_budget():
    clock = FakeClock()
    budget, optimizer, scheduler = budget_and_optimizer(1.0, max_steps=10**6, warmup_fraction=0.1, clock=clock)
    assert scheduler.get_last_lr() == [0.0]
    expected = [(3.0, 0.25, False), (6.0, 0.5, False), (33.0, 0.25, False), (59.4, 0.5 * 0.01 / 0.9, False),
                (60.0, 0.0, True)]
    for seconds, learning_rate, stops in expected:
        assert step_at(seconds, clock, budget, optimizer, scheduler) == (pytest.approx(learning_rate), stops)
        assert budget.spent == stops


def test_steps_end_the_schedule_when_they_run_out_before_the_budget():
    clock = FakeClock()
    budget, optimizer, scheduler = budget_and_optimizer(60.0, max_steps=10, warmup_fraction=0.0, clock=clock)
    rates = [step_at(step, clock, budget, optimizer, scheduler) for step in range(1, 11)]
    # Ten steps of a second each use a tiny share of the hour: the step count sets the decay.
    assert [rate for rate, _ in rates] == pytest.approx([0.5 * (10 - step) / 10 for step in range(1, 11)])
    assert not any(stops for _, stops in rates) and not budget.spent  # Trainer's own max_steps ends this run


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        TimeBudget(0)


def test_warmup_given_in_steps_is_refused_with_a_budget(tmp_path):
    model = BertForMaskedLM(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                       intermediate_size=8))
    args = TimeBudgetTrainingArguments(output_dir=str(tmp_path), time_budget_minutes=1, warmup_steps=100,
                                       use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="--warmup_steps as a fraction"):
        TimeBudgetTrainer(model=model, args=args)


def share_clock(rank, init_file, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    clock = FakeClock()
    budget = TimeBudget(1.0, clock=clock)
    args = types.SimpleNamespace(world_size=2, device=torch.device("cpu"))
    budget.on_train_begin(args, None, TrainerControl())
    # The second process's clock runs past the budget, the main process's does not.
    clock.now += 59.0 if rank == 0 else 75.0
    control = budget.on_step_end(args, None, TrainerControl())
    results[rank] = (budget.elapsed, control.should_training_stop)
    torch.distributed.destroy_process_group()


def test_processes_follow_the_main_process_clock(tmp_path):
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(share_clock, args=(str(tmp_path / "init"), results), nprocs=2)
    assert dict(results) == {0: (59.0, False), 1: (59.0, False)}
