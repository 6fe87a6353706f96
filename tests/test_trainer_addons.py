"""brat_ner/trainer/: the time budget (learning rate over the elapsed share of the budget, processes following the
main process's clock), the moving average of the weights (--ema_decay), adversarial training on the embeddings
(--fgm_epsilon), distillation from a teacher (--teacher) and the training metrics (NerMetrics), each through the
real Trainer."""

import copy
import shutil
import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed
import torch.multiprocessing
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForTokenClassification,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainingArguments,
)

import train
from brat_ner import cli
from brat_ner.trainer import NerMetrics, adversarial
from brat_ner.trainer.adversarial import FgmTrainerMixin, embedding_tables, perturbed_along_gradient
from brat_ner.trainer.distillation import DistillationTrainerMixin, check_teacher, load_teacher
from brat_ner.trainer.time_budget import TimeBudget, TimeBudgetTrainer, TimeBudgetTrainingArguments
from brat_ner.trainer.weight_average import WeightAverage, WeightAverageTrainerMixin
from brat_ner.training_data import UNTAGGED
from conftest import REPO, TINY_BERT, run_script, small_training, tiny_model
from dataset_script import ruijin_ner
from modeling_bert_bilstm_crf import BertBiLstmCrfEnsembleForTokenClassification, BertBiLstmCrfForTokenClassification
from processing_bert_bilstm_crf import split_into_windows

# ----- the time budget -----


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


# ----- the moving average of the weights (--ema_decay) -----


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x, labels=None):
        prediction = self.linear(x).squeeze(-1)
        return {"loss": ((prediction - labels) ** 2).mean(), "logits": prediction}


class AveragingTrainer(WeightAverageTrainerMixin, Trainer):
    pass


class Recorder(TrainerCallback):
    """The trained weights after every step, and the weights each evaluation saw."""

    def __init__(self):
        self.after_step, self.at_evaluation = [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step.append(copy.deepcopy(model.state_dict()))

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.at_evaluation.append((state.global_step, copy.deepcopy(model.state_dict())))


def expected_average(steps, start, decay):
    average = {name: value.clone() for name, value in start.items()}
    for n, weights in enumerate(steps, start=1):
        rate = 1 - min(decay, (1 + n) / (10 + n))
        for name in average:
            average[name] += rate * (weights[name] - average[name])
    return average


def train_regression(output_dir, ema_decay):
    """Three epochs of a linear regression through the real Trainer, evaluated every epoch; returns the model,
    its weights before training and what the recorder saw."""
    torch.manual_seed(0)
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(16)]
    model = Regression()
    start = copy.deepcopy(model.state_dict())
    recorder = Recorder()
    args = TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=4, num_train_epochs=3,
                             learning_rate=0.1, eval_strategy="epoch", save_strategy="no", report_to="none",
                             use_cpu=True, load_best_model_at_end=False, disable_tqdm=True, seed=0)
    AveragingTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, ema_decay=ema_decay,
                     callbacks=[recorder]).train()
    return model, start, recorder


def test_the_average_is_evaluated_and_kept_while_training_goes_on_from_the_trained_weights(tmp_path):
    model, start, recorder = train_regression(tmp_path / "averaged", ema_decay=0.8)
    _, _, plain = train_regression(tmp_path / "plain", ema_decay=None)

    assert len(recorder.after_step) == 12 and len(recorder.at_evaluation) == 3
    for step, seen in recorder.at_evaluation:  # each evaluation saw the average up to its step ...
        average = expected_average(recorder.after_step[:step], start, 0.8)
        for name in seen:
            torch.testing.assert_close(seen[name], average[name])
            assert not torch.equal(seen[name], recorder.after_step[step - 1][name])
    final = expected_average(recorder.after_step, start, 0.8)
    for name, value in model.state_dict().items():  # ... and the model ends holding it
        torch.testing.assert_close(value, final[name])
    # Training itself went on from the trained weights: step for step as without the average.
    for averaged_step, plain_step in zip(recorder.after_step, plain.after_step, strict=True):
        for name in averaged_step:
            assert torch.equal(averaged_step[name], plain_step[name])


def test_swapping_the_average_in_restores_the_trained_weights_exactly():
    model = Regression()
    average = WeightAverage(0.9)
    average.start(model)
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    average.update(model)
    trained = copy.deepcopy(model.state_dict())
    with average.swapped_in(model):
        torch.testing.assert_close(model.linear.weight, average.averages[0])
        assert not torch.equal(model.linear.weight, trained["linear.weight"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name])


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="--ema_decay"):
        WeightAverage(decay)


# ----- adversarial training (--fgm_epsilon) -----


def test_perturbation_follows_the_gradient_and_is_undone_exactly():
    table = nn.Parameter(torch.randn(5, 4))
    untouched = nn.Parameter(torch.randn(2, 2))  # no gradient: left alone
    table.grad = torch.randn(5, 4)
    original, original_untouched = table.detach().clone(), untouched.detach().clone()
    with perturbed_along_gradient([table, untouched], epsilon=0.5):
        step = table.detach() - original
        torch.testing.assert_close(torch.linalg.vector_norm(step), torch.tensor(0.5))
        torch.testing.assert_close(step, 0.5 * table.grad / torch.linalg.vector_norm(table.grad))
        assert torch.equal(untouched, original_untouched)
    assert torch.equal(table, original) and torch.equal(untouched, original_untouched)


def dropout_free_model(bigram_buckets):
    """A tiny BERT -> BiLSTM -> CRF without dropout, so that two passes over a batch compute the same thing."""
    return tiny_model(num_labels=5, lstm_hidden_size=8, bigram_buckets=bigram_buckets, bigram_embedding_size=4,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class FgmTrainer(FgmTrainerMixin, Trainer):
    pass


def fgm_training_step(model, inputs, epsilon, output_dir):
    """One ``training_step`` of a Trainer with FGM at ``epsilon``, outside a training loop: the gradients stay
    in ``model``; returns the loss it reports."""
    args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to="none")
    trainer = FgmTrainer(model=model, args=args, fgm_epsilon=epsilon)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this step runs outside of
    return trainer.training_step(model, dict(inputs))


@pytest.mark.parametrize("bigram_buckets", [0, 97])
def test_an_fgm_step_adds_the_gradient_at_the_perturbed_embeddings(tmp_path, bigram_buckets):
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_BERT))
    batch = tokenizer(["血糖升高", "糖尿病患者"], padding=True, return_tensors="pt")
    labels = torch.tensor([[-100, 1, 2, 0, 0, -100, -100], [-100, 3, 4, 4, 0, 0, -100]])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
    model = dropout_free_model(bigram_buckets)
    reference = copy.deepcopy(model)

    # By hand: the gradient of the clean pass, plus that of a pass with each table moved by epsilon * g / ||g||.
    reference.train()
    reference(**inputs).loss.backward()
    tables = embedding_tables(reference)
    assert len(tables) == (2 if bigram_buckets else 1)
    with perturbed_along_gradient(tables, 1.0):
        reference(**inputs).loss.backward()

    clean_loss = fgm_training_step(model, inputs, 1.0, tmp_path)
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter, expected[name])  # the perturbation was undone
        if expected[name].grad is not None:
            torch.testing.assert_close(parameter.grad, expected[name].grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(clean_loss, copy.deepcopy(model)(**inputs).loss.detach())


def test_a_negative_epsilon_is_refused(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="--fgm_epsilon"):
        FgmTrainer(model=dropout_free_model(0), args=args, fgm_epsilon=-1.0)


def test_epsilon_zero_is_a_plain_step(tmp_path):
    """``--fgm_epsilon 0`` turns FGM off (how to run configs/cpu-recipe.json without it)."""
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_BERT))
    batch = tokenizer(["血糖升高"], return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "labels": torch.tensor([[-100, 1, 2, 0, 0, -100]])}
    model = dropout_free_model(0)
    reference = copy.deepcopy(model)
    reference(**inputs).loss.backward()
    fgm_training_step(model, inputs, 0.0, tmp_path)
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        if expected[name].grad is not None:
            torch.testing.assert_close(parameter.grad, expected[name].grad)


# ----- both through train.py -----


def test_train_py_saves_the_average_of_the_weights_its_fgm_steps_trained(tmp_path, monkeypatch):
    """The whole script with --ema_decay and --fgm_epsilon, run in this process to watch it: every step is an
    FGM step, and the model it saves (and reloads) holds the moving average of the weights those steps trained,
    not the last step's weights."""
    recorded = {"names": [], "start": [], "steps": [], "fgm_steps": 0}
    start, update = WeightAverage.start, WeightAverage.update

    def recording_start(self, model):
        start(self, model)
        recorded["names"], recorded["start"] = list(self.names), [a.clone() for a in self.averages]

    def recording_update(self, model):
        recorded["steps"].append([p.clone() for p in self._parameters(model)])
        update(self, model)

    def counting_perturbation(tables, epsilon):
        recorded["fgm_steps"] += 1
        return perturbed_along_gradient(tables, epsilon)

    monkeypatch.setattr(WeightAverage, "start", recording_start)
    monkeypatch.setattr(WeightAverage, "update", recording_update)
    monkeypatch.setattr(adversarial, "perturbed_along_gradient", counting_perturbation)
    arguments = small_training(tmp_path / "model", "--num_train_epochs", "1", "--ema_decay", "0.9",
                               "--fgm_epsilon", "1.0")
    monkeypatch.setattr(sys, "argv", arguments)
    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    try:
        cli.run_main(train.main, "train.py")
    finally:
        torch.set_num_threads(threads)  # train.py sizes the threads to the idle cores

    steps = recorded["steps"]
    assert len(steps) > 1 and recorded["fgm_steps"] == len(steps)
    average = [tensor.clone() for tensor in recorded["start"]]
    for n, weights in enumerate(steps, start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        for averaged, trained in zip(average, weights, strict=True):
            averaged += (1 - decay) * (trained - averaged)
    reloaded = BertBiLstmCrfForTokenClassification.from_pretrained(tmp_path / "model")
    assert reloaded.config.num_labels == 31
    saved = dict(reloaded.named_parameters())
    for name, averaged in zip(recorded["names"], average, strict=True):
        torch.testing.assert_close(saved[name], averaged, msg=name)
    assert not all(torch.equal(saved[name], last) for name, last in zip(recorded["names"], steps[-1], strict=True))


# ----- distillation (--teacher) -----


class DistillationTrainer(DistillationTrainerMixin, Trainer):
    pass


def distillation_step(labels, output_dir):
    """(inputs, student, teacher, trainer, loss): a batch of two windows with ``labels``, a student and a teacher
    of different random weights, and the training loss at teacher weight 0.25."""
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_BERT))
    batch = tokenizer(["血糖升高", "糖尿病患者"], padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
    torch.manual_seed(1)
    student, teacher = dropout_free_model(0), dropout_free_model(0).eval()
    args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to="none")
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, teacher_weight=0.25)
    student.train()
    return inputs, student, teacher, trainer, trainer.compute_loss(student, dict(inputs))


def test_a_distillation_loss_mixes_the_gold_nll_with_the_cross_entropy_from_the_teachers_crf(tmp_path):
    labels = torch.tensor([[-100, 1, 2, 0, 0, -100, -100], [-100, 3, 4, 4, 0, 0, -100]])
    inputs, student, teacher, trainer, loss = distillation_step(labels, tmp_path)

    outputs = copy.deepcopy(student)(**inputs)
    counts = teacher.crf.expected_counts(teacher(**inputs).logits, labels != -100)
    soft = student.crf.cross_entropy(outputs.logits, counts, labels != -100)
    torch.testing.assert_close(loss, 0.75 * outputs.loss + 0.25 * soft)
    loss.backward()
    assert all(parameter.grad is None for parameter in teacher.parameters())  # the teacher learns nothing
    student.eval()  # evaluation keeps the gold NLL, comparable across runs
    torch.testing.assert_close(trainer.compute_loss(student, dict(inputs)), student(**inputs).loss)
    with pytest.raises(ValueError, match="--teacher_weight must be between 0 and 1"):
        DistillationTrainer(model=student, args=trainer.args, teacher=teacher, teacher_weight=1.5)


def test_windows_of_unlabelled_text_learn_from_the_teacher_alone(tmp_path):
    """A window of UNTAGGED positions (--extra_text_dirs) adds the teacher's cross-entropy and no gold NLL: the
    gold term is the tagged window's own; a batch of untagged windows only learns from the teacher."""
    labels = torch.tensor([[-100, 1, 2, 0, 0, -100, -100], [-100, UNTAGGED, UNTAGGED, UNTAGGED, UNTAGGED,
                                                             UNTAGGED, -100]])
    inputs, student, teacher, trainer, loss = distillation_step(labels, tmp_path)
    visible = labels != -100
    logits = copy.deepcopy(student)(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    counts = teacher.crf.expected_counts(teacher(input_ids=inputs["input_ids"],
                                                 attention_mask=inputs["attention_mask"]).logits, visible)
    soft = student.crf.cross_entropy(logits, counts, visible)
    tagged_nll = -student.crf(logits[:1], labels[:1], mask=visible[:1])
    torch.testing.assert_close(loss, 0.75 * tagged_nll + 0.25 * soft)

    untagged_only = {name: value[1:] for name, value in inputs.items()}
    only_soft = student.crf.cross_entropy(logits[1:], teacher.crf.expected_counts(
        teacher(input_ids=untagged_only["input_ids"]).logits, visible[1:]), visible[1:])
    torch.testing.assert_close(trainer.compute_loss(student, untagged_only), 0.25 * only_soft)


def test_the_teachers_counts_computed_once_before_training_equal_its_counts_online(tmp_path):
    """``TeacherCounts``: the training windows' counts, computed once per window (windows of each length in a
    batch of their own), are what the teacher gives online on a padded batch of them, and training steps then
    never run the teacher; a window outside the training set is counted online."""
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_BERT))
    texts = ["血糖升高", "糖尿病患者", "口服二甲双胍", "血糖", "患者血糖升高"]
    ids = [tokenizer(text)["input_ids"] for text in texts]
    rows = [{"input_ids": window, "attention_mask": [1] * len(window),
             "labels": [-100] + [index % 5 for index in range(len(window) - 2)] + [-100]} for window in ids]
    rows[4]["labels"][1:3] = [-100, -100]  # a window whose first characters are context
    torch.manual_seed(1)
    student, teacher = dropout_free_model(0), dropout_free_model(0).eval()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, teacher_weight=0.5,
                                  train_dataset=Dataset.from_list(rows + rows[:2]))  # oversampled copies
    assert len(trainer.precomputed_counts.by_window) == len(rows)
    batch = DataCollatorForTokenClassification(tokenizer)(rows)
    visible = batch["labels"] != -100
    online = teacher.crf.expected_counts(
        teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float(), visible)
    precomputed = trainer.precomputed_counts.of_batch(batch["input_ids"], batch["attention_mask"], batch["labels"])
    for offline_part, online_part in zip(precomputed, online, strict=True):
        torch.testing.assert_close(offline_part, online_part)

    teacher_calls = []
    teacher.register_forward_hook(lambda *args: teacher_calls.append(1))
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    assert not teacher_calls
    online_trainer = DistillationTrainer(model=student, args=args, teacher=teacher, teacher_weight=0.5)
    torch.testing.assert_close(loss, online_trainer.compute_loss(student, dict(batch)))
    assert teacher_calls  # no training set: the teacher ran on the batch
    other = tokenizer("高血糖")["input_ids"]
    unseen = DataCollatorForTokenClassification(tokenizer)([{"input_ids": other, "attention_mask": [1] * len(other),
                                                             "labels": [-100, 0, 0, 0, -100]}])
    assert trainer.precomputed_counts.of_batch(unseen["input_ids"], unseen["attention_mask"], unseen["labels"]) \
        is None


def test_a_teacher_folder_loads_as_this_projects_model_or_ensemble_and_must_share_labels(trained_model, tmp_path):
    folder, _ = trained_model
    config = BertBiLstmCrfForTokenClassification.from_pretrained(folder).config
    labels = [config.id2label[index] for index in range(config.num_labels)]
    single = load_teacher(str(folder), labels, config)
    assert type(single) is BertBiLstmCrfForTokenClassification and not single.training
    assert not any(parameter.requires_grad for parameter in single.parameters())
    BertBiLstmCrfEnsembleForTokenClassification.from_members([single, single]).save_pretrained(tmp_path / "ensemble")
    ensemble = load_teacher(str(tmp_path / "ensemble"), labels, config)
    assert type(ensemble) is BertBiLstmCrfEnsembleForTokenClassification and len(ensemble.members) == 2
    with pytest.raises(ValueError, match="a teacher must have the student's labels in the same order"):
        load_teacher(str(folder), labels[::-1], config)


def test_a_teacher_that_is_no_model_of_this_project_is_refused_saying_which_problem(trained_model, tmp_path):
    """Missing, not a model, only pickled weights, or a model whose code was changed: each its own one line."""
    from test_trust import tampered_copy

    folder, _ = trained_model
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine", encoding="utf-8")
    pickled = shutil.copytree(folder, tmp_path / "pickled", ignore=shutil.ignore_patterns("checkpoint-*"))
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle: loading it could run any code")
    tampered = tampered_copy(folder, tmp_path / "tampered", tmp_path / "ran.txt")
    expected = {
        tmp_path / "missing": f"--teacher {tmp_path / 'missing'}: no such folder",
        notes: f"--teacher {notes}: not a model folder (no config.json there)",
        pickled: f"--teacher {pickled}: holds pytorch_model.bin, a pickle, which can run any code when loaded",
        tampered: f"--teacher {tampered} holds a modeling_bert_bilstm_crf.py that differs from this project's: a "
                  "teacher must be a model folder of this project's code (written by train.py or ensemble.py)",
    }
    for teacher, message in expected.items():
        with pytest.raises(cli.UsageError) as refusal:
            check_teacher(str(teacher))
        assert str(refusal.value).startswith(message)
    assert not (tmp_path / "ran.txt").exists()
    # train.py refuses it in that one line before it reads the corpus or takes its output folder.
    completed = run_script(small_training(tmp_path / "student", "--teacher", str(notes)), succeeds=False)
    assert completed.returncode == 2 and completed.stderr.strip().splitlines()[-1] == f"train.py: {expected[notes]}"
    assert not (tmp_path / "student").exists()


def test_train_py_with_a_teacher_at_weight_zero_trains_exactly_as_plain_training(trained_model, tmp_path):
    """And at weight 0.5 it trains another model; a teacher of other windows is refused in one line."""
    teacher, _ = trained_model
    common = ("--num_train_epochs", "1", "--num_threads", "1")
    weights = {}
    for name, extra in (("plain", ()), ("weight0", ("--teacher", str(teacher), "--teacher_weight", "0")),
                        ("weight05", ("--teacher", str(teacher), "--teacher_weight", "0.5"))):
        run_script(small_training(tmp_path / name, *common, *extra))
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    assert weights["plain"].keys() == weights["weight0"].keys()
    assert all(torch.equal(weights["plain"][key], weights["weight0"][key]) for key in weights["plain"])
    assert not all(torch.equal(weights["plain"][key], weights["weight05"][key]) for key in weights["plain"])
    refused = run_script(small_training(tmp_path / "other", "--teacher", str(teacher), "--window_chars", "30"),
                         succeeds=False)
    assert f"--teacher {teacher} has window_chars 62 and this run 30" in refused.stderr
    assert not (tmp_path / "other" / "model.safetensors").exists()


def test_train_py_learns_unlabelled_text_from_the_teacher(trained_model, tmp_path):
    """--extra_text_dirs: the windows of unlabelled .txt files join training (said in the log, counted in the
    characters trained on) and the model differs from one trained with the teacher on the corpus alone."""
    teacher, _ = trained_model
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    text = "患者有2型糖尿病史十年，口服二甲双胍，空腹血糖 7.8 mmol/L。" * 20
    (unlabelled / "note.txt").write_text(text, encoding="utf-8")
    common = ("--num_train_epochs", "1", "--num_threads", "1", "--teacher", str(teacher))
    run_script(small_training(tmp_path / "corpus", *common))
    with_text = run_script(small_training(tmp_path / "text", *common, "--extra_text_dirs", str(unlabelled)))
    windows = len(split_into_windows(text, 62, cuts=ruijin_ner.TRAINING_CUTS))  # small_training's --window_chars
    assert f"--extra_text_dirs: {windows} windows of unlabelled text join the" in with_text.stderr
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in ("corpus", "text")}
    assert not all(torch.equal(weights["corpus"][key], weights["text"][key]) for key in weights["corpus"])


# ----- training metrics (NerMetrics) -----


LABELS = ["O", "B-Drug", "I-Drug", "B-Test", "I-Test"]


def test_training_metrics_give_strict_and_overlap_of_the_same_windows():
    label_ids = {name: index for index, name in enumerate(LABELS)}
    gold = [["B-Drug", "I-Drug", "I-Drug", "O", "B-Test", "I-Test"], ["O", "B-Test", "I-Test", "O"]]
    predicted = [["B-Drug", "I-Drug", "O", "O", "B-Test", "I-Test"], ["O", "O", "O", "O"]]

    def padded(rows):  # Trainer's layout: one row per window, -100 where the label is -100
        array = np.full((len(rows), 8), -100)
        for row, tags in enumerate(rows):
            array[row, 1 : 1 + len(tags)] = [label_ids[tag] for tag in tags]
        return array

    metrics = NerMetrics(LABELS)
    results = metrics(EvalPrediction(predictions=padded(predicted), label_ids=padded(gold)))
    assert results["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # strict: Test 4..6 found only
    assert results["overlap_f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))  # and the shortened Drug
    assert set(metrics.last_reports) == {"strict", "overlap"}
    assert metrics.last_reports["overlap"]["Drug"]["recall"] == 1.0
