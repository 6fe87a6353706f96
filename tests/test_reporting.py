"""brat_ner/reporting.py: what a run prints while it trains."""

from types import SimpleNamespace

from brat_ner.reporting import EpochLineCallback


def test_on_a_time_budget_the_progress_bar_counts_the_budget_not_the_epochs():
    callback = EpochLineCallback()
    state = SimpleNamespace(is_world_process_zero=True, max_steps=41050, global_step=0)
    callback.on_train_begin(SimpleNamespace(time_budget_minutes=21), state, None)
    assert callback.training_bar.total == 21 * 60
    callback.training_bar.close()
    callback.on_train_begin(SimpleNamespace(time_budget_minutes=None), state, None)
    assert callback.training_bar.total == 41050
    callback.training_bar.close()
