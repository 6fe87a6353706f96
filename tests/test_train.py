"""train.py end to end on the CPU: Trainer, seqeval on CRF paths, best model, test report, plots, reload through
AutoModel, resumption, accelerate, the classic baseline and the recipes of configs/, as a user runs it."""

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import TrainerState, pipeline

import pretrain_embeddings
import train
from brat_ner import cli, fast_inference
from brat_ner.reporting import chosen_epoch
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig
from conftest import REPO, SAMPLE, TINY_BERT, parse_error, refusal, run_script, sample_texts, small_training
from dataset_script import ruijin_ner
from dataset_script.formats import registry

# ----- the session's run: files, evaluations, reloading, resuming -----


def checkpoint_step(path):
    return int(path.name.split("-")[1])


def test_training_writes_model_reports_and_plots(trained_model):
    output_dir, completed = trained_model
    for name in ("model.safetensors", "config.json", "modeling_bert_bilstm_crf.py", "tokenizer.json",
                 "test_report.json", "test_report.md", "training_curves.png", "test_f1_per_type.png",
                 "train_results.json", "test_results.json"):
        assert (output_dir / name).is_file(), name
    report = json.loads((output_dir / "test_report.json").read_text(encoding="utf-8"))
    test_results = json.loads((output_dir / "test_results.json").read_text(encoding="utf-8"))
    assert report["micro avg"]["f1-score"] == pytest.approx(test_results["test_f1"])
    assert report["macro avg"]["f1-score"] == pytest.approx(test_results["test_macro_f1"])
    assert "| **micro avg** |" in (output_dir / "test_report.md").read_text(encoding="utf-8")
    train_results = json.loads((output_dir / "train_results.json").read_text(encoding="utf-8"))
    assert train_results["train_characters_per_second"] > 0
    # The per-type table is printed at the end for the user.
    assert "| type | precision | recall | F1 | support |" in completed.stdout


def test_validation_every_epoch_and_best_model_kept(trained_model):
    output_dir, _ = trained_model
    latest = max(output_dir.glob("checkpoint-*"), key=checkpoint_step)
    state = json.loads((latest / "trainer_state.json").read_text(encoding="utf-8"))
    evaluations = [entry for entry in state["log_history"] if "eval_f1" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1.0, 2.0, 3.0]
    assert state["best_metric"] == max(entry["eval_f1"] for entry in evaluations)
    assert {"eval_macro_f1", "eval_precision", "eval_recall"} <= evaluations[0].keys()


def test_trained_model_reloads_in_a_fresh_process(trained_model, tmp_path):
    output_dir, _ = trained_model
    script = (
        "import torch\n"
        "from transformers import AutoModelForTokenClassification\n"
        f"model = AutoModelForTokenClassification.from_pretrained({str(output_dir)!r}, trust_remote_code=True)\n"
        "print(type(model).__name__, model.config.num_labels)\n"
    )
    completed = run_script(["-c", script], cwd=tmp_path)
    assert completed.stdout.split() == ["BertBiLstmCrfForTokenClassification", "31"]


def test_interrupted_training_resumes_from_its_last_checkpoint(trained_model, tmp_path):
    output_dir, _ = trained_model
    earliest = min(output_dir.glob("checkpoint-*"), key=checkpoint_step)
    # An interruption after that checkpoint: rerunning the same command goes on from it to the last epoch.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(earliest, resumed_dir / earliest.name)
    completed = run_script(small_training(resumed_dir))
    assert f"Resuming from {resumed_dir / earliest.name}" in completed.stderr
    latest = max(resumed_dir.glob("checkpoint-*"), key=checkpoint_step)
    assert json.loads((latest / "trainer_state.json").read_text(encoding="utf-8"))["epoch"] == 3.0
    assert (resumed_dir / "test_report.json").is_file()
    # Throughput counts the steps of this run only, not those before the checkpoint.
    results = json.loads((resumed_dir / "train_results.json").read_text(encoding="utf-8"))
    steps_run = checkpoint_step(latest) - checkpoint_step(earliest)
    assert results["train_steps_per_second"] * results["train_runtime"] == pytest.approx(steps_run, rel=1e-3)


# ----- configurations and launchers -----


def test_quickstart_configuration_runs_with_overrides(tmp_path):
    # The README's first command, its JSON values overridden on the command line (output elsewhere, 2 epochs).
    completed = run_script(["train.py", "configs/quickstart.json", "--output_dir", str(tmp_path / "quickstart"),
                            "--num_train_epochs", "2", "--use_cpu", "true"])
    assert (tmp_path / "quickstart" / "test_report.md").is_file()
    assert f"Model, reports and plots in {tmp_path / 'quickstart'}" in completed.stdout
    # Quiet output: one line per epoch with the key figures, no metric dicts, no repeated library warnings.
    epoch_lines = [line for line in completed.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("validation micro-F1" in line and "macro-F1" in line for line in epoch_lines)
    assert "{'" not in completed.stdout and "pin_memory" not in completed.stderr
    assert "sam2_video" not in completed.stderr and "Writing model shards" not in completed.stderr


def test_cpu_recipe_chains_skip_gram_embeddings_into_the_classic_model_with_bigrams_on_a_time_budget():
    # The README's CPU recipe (configs/cpu-recipe.sh) as its two scripts read it: the embeddings are written where
    # train.py starts from, in the shapes it builds (the training path from such a folder runs end to end in
    # test_pretraining.py; classic + context + bigrams in this module's classic baseline test).
    (embedding_args,) = cli.parse_arguments(pretrain_embeddings.argument_parser(),
                                                   ["configs/cpu-recipe-embeddings.json"])
    model_args, data_args, _, training_args = cli.parse_arguments(
        train.argument_parser(), ["configs/cpu-recipe.json", "--output_dir", "elsewhere"])
    encoder = json.loads((REPO / embedding_args.encoder_config).read_text(encoding="utf-8"))
    assert encoder["num_hidden_layers"] == 0 and model_args.encoder_config is None
    assert model_args.model_name_or_path == embedding_args.output_dir
    assert (model_args.bigram_buckets, model_args.bigram_embedding_size) == \
        (embedding_args.bigram_buckets, embedding_args.bigram_embedding_size)
    assert model_args.bigram_buckets >= encoder["vocab_size"] and data_args.window_chars == embedding_args.window_chars
    # The CPU recipe's promised limit of 30 minutes, with a minute of it for the embeddings (docs/experiments.md).
    assert 0 < training_args.time_budget_minutes <= 29
    assert training_args.output_dir == "elsewhere"


def test_accelerate_launch_runs_the_same_script(tmp_path):
    output_dir = tmp_path / "accelerate"
    arguments = small_training(output_dir, "--num_train_epochs", "1")
    run_script(["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", *arguments])
    assert (output_dir / "model.safetensors").is_file()
    # The metrics are the run's: one epoch, evaluated once, then the sample's test split scored type by type.
    train_results = json.loads((output_dir / "train_results.json").read_text(encoding="utf-8"))
    assert train_results["epoch"] == 1.0 and math.isfinite(train_results["train_loss"])
    state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    assert [entry["epoch"] for entry in state["log_history"] if "eval_f1" in entry] == [1.0]
    test_documents = ruijin_ner.load(SAMPLE, name="brat", cache_dir=str(tmp_path / "cache"))["test"]
    types = {entity["type"] for document in test_documents for entity in document["entities"]}
    test_results = json.loads((output_dir / "test_results.json").read_text(encoding="utf-8"))
    scores = ["test_f1", "test_macro_f1", "test_precision", "test_recall", "test_overlap_f1",
              *(f"test_f1_{entity_type}" for entity_type in types)]
    assert all(0 <= test_results[key] <= 1 for key in scores), test_results
    assert math.isfinite(test_results["test_loss"]) and test_results["test_loss"] > 0
    report = json.loads((output_dir / "test_report.json").read_text(encoding="utf-8"))
    assert report["micro avg"]["f1-score"] == pytest.approx(test_results["test_f1"])
    assert report["micro avg"]["support"] == sum(len(document["entities"]) for document in test_documents)


# ----- refused before training -----


def test_a_split_without_text_is_refused_before_training(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("01.txt", "01.ann"):  # one document: the hash split leaves validation and test empty
        shutil.copy(REPO / "data" / "sample" / name, corpus / name)
    arguments = small_training(tmp_path / "model")
    arguments[arguments.index("data/sample")] = str(corpus)
    completed = run_script(arguments, succeeds=False)
    assert re.search(r"the (validation and test|train and validation|train and test) splits have no text",
                     completed.stderr), completed.stderr[-2000:]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("script", ["train.py", "pretrain_mlm.py"])
def test_a_window_beyond_the_encoder_positions_is_refused_before_the_corpus_is_read(script, tmp_path):
    positions = json.loads((TINY_BERT / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
    arguments = [script, "--data_dir", str(tmp_path / "no_corpus_here"),  # read first, it would fail otherwise
                 "--encoder_config", str(TINY_BERT), "--tokenizer_name", str(TINY_BERT),
                 "--output_dir", str(tmp_path / "model"), "--window_chars", str(positions - 1), "--use_cpu", "true"]
    completed = run_script(arguments, succeeds=False)
    assert f"--window_chars must be between 1 and {positions - 2} (the encoder has {positions} positions" \
           in completed.stderr, completed.stderr[-2000:]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("script", ["train.py", "pretrain_mlm.py"])
@pytest.mark.parametrize("option", ["--encoder_config", "--model_name_or_path"])
def test_a_missing_encoder_folder_is_one_line_naming_the_option(script, option, tmp_path):
    missing = tmp_path / "no_encoder_here"
    arguments = [script, "--data_dir", "data/sample", option, str(missing), "--tokenizer_name", str(TINY_BERT),
                 "--output_dir", str(tmp_path / "model"), "--use_cpu", "true"]
    completed = run_script(arguments, succeeds=False)
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"{script}: {option} {missing}: no config.json there or on the Hub ("), \
        completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "model").exists()


MLM_EPOCH_BOUND, NER_EPOCH_BOUND = 10**6, 10**5


# ----- the GPU recipe, run small -----


def test_ten_minute_gpu_run_script_runs_small(tmp_path):
    """configs/h100_10min.sh end to end on the CPU: the sample corpus laid out like ../shared/data, a tiny BERT,
    both phases on a wall-clock budget of 3 seconds."""
    data = tmp_path / "data"
    (data / "ruijin_round1" / "unlabeled").mkdir(parents=True)
    (data / "ruijin_round1" / "train").symlink_to(REPO / "data" / "sample")
    (data / "ruijin_round1" / "unlabeled" / "1.txt").write_text("糖尿病患者口服二甲双胍。\n", encoding="utf-8")
    (data / "bert-base-chinese").symlink_to(TINY_BERT)
    settings = dict(DATA=str(data), OUT_DIR=str(tmp_path / "out"), REPORT_DIR=str(tmp_path / "report"),
                    ENCODER=str(TINY_BERT / "config.json"), MLM_MINUTES="0.05", MLM_CHARS="62", NER_MINUTES="0.05",
                    NER_CHARS="62", MLM_EPOCHS=str(MLM_EPOCH_BOUND), NER_EPOCHS=str(NER_EPOCH_BOUND), WORKERS="0",
                    PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(["bash", str(REPO / "configs" / "h100_10min.sh")], env={**os.environ, **settings},
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert re.search(r"wall clock: pretraining \d+ s, fine-tuning and test \d+ s, total \d+ s", completed.stdout)
    assert (tmp_path / "out" / "mlm" / "model.safetensors").is_file()
    report = json.loads((tmp_path / "out" / "ner" / "test_report.json").read_text(encoding="utf-8"))
    assert {"micro avg", "macro avg"} <= set(report)

    # Each phase was ended by its 3 s budget, as the trainer's own record says, not by the epoch bound (far
    # beyond what any machine runs in 3 s) or early stopping. No bound on time: speed is the benchmarks' job.
    pretraining = json.loads((tmp_path / "report" / "mlm_results.json").read_text(encoding="utf-8"))
    fine_tuning = json.loads((tmp_path / "report" / "all_results.json").read_text(encoding="utf-8"))
    for results, epoch_bound in ((pretraining, MLM_EPOCH_BOUND), (fine_tuning, NER_EPOCH_BOUND)):
        assert results["train_stopped_by_time_budget"] is True
        assert 0 < results["epoch"] < epoch_bound
    # Throughput is over what was run, not over the planned epochs that the budget cut short.
    windows = int(re.search(r"MLM text: \d+ documents, \d+ characters, (\d+) windows", completed.stdout)[1])
    samples_run = pretraining["train_samples_per_second"] * pretraining["train_runtime"]
    assert samples_run == pytest.approx(pretraining["epoch"] * windows, rel=1e-3)
    # The report folder holds the run's log and results without the weights.
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == [
        "all_results.json", "corpus.json", "mlm_results.json", "run.log", "test_f1_per_type.png",
        "test_report.json", "test_report.md", "training_curves.png"]
    assert "wall clock: pretraining" in (tmp_path / "report" / "run.log").read_text(encoding="utf-8")


# ----- plots and metrics -----


def test_chosen_epoch_is_the_best_checkpoint(trained_model):
    output_dir, _ = trained_model
    latest = max(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = TrainerState.load_from_json(str(latest / "trainer_state.json"))
    evaluations = [entry for entry in state.log_history if "eval_f1" in entry]
    best = next(entry for entry in evaluations if entry["eval_f1"] == state.best_metric)  # the first best
    assert chosen_epoch(state) == best["epoch"]
    assert chosen_epoch(TrainerState()) is None


def test_training_reports_strict_and_overlap(trained_model):
    output_dir, completed = trained_model
    strict = json.loads((output_dir / "test_report.json").read_text(encoding="utf-8"))
    overlap = json.loads((output_dir / "test_report_overlap.json").read_text(encoding="utf-8"))
    assert strict["micro avg"]["support"] == overlap["micro avg"]["support"] > 0
    assert overlap["micro avg"]["f1-score"] >= strict["micro avg"]["f1-score"]
    assert "| **micro avg** |" in (output_dir / "test_report_overlap.md").read_text(encoding="utf-8")
    assert "Strict (type, first and last offset" in completed.stdout and "Overlap (type must match" in completed.stdout
    test_results = json.loads((output_dir / "test_results.json").read_text(encoding="utf-8"))
    assert test_results["test_overlap_f1"] == pytest.approx(overlap["micro avg"]["f1-score"])


# ----- The classic baseline: zero transformer layers, context and constrained decoding through train.py -----


def test_classic_baseline_with_context_and_bigrams_trains_saves_reloads_and_predicts(tmp_path):
    config = json.loads((REPO / "configs" / "classic-bilstm-crf.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 0 and config["hidden_size"] == 128
    tiny_vocabulary = json.loads((TINY_BERT / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    classic = tmp_path / "classic.json"  # the same encoder over the tests' tiny vocabulary and positions
    classic.write_text(json.dumps({**config, "vocab_size": tiny_vocabulary, "max_position_embeddings": 128}))
    output_dir = tmp_path / "classic"
    arguments = small_training(output_dir, "--context_chars", "16", "--constrain_bio", "true", "--lstm_layers",
                               "2", "--num_train_epochs", "2", "--bigram_buckets", "211", "--bigram_embedding_size",
                               "8", encoder=("--encoder_config", str(classic)))
    run_script(arguments)
    saved = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert (saved["num_hidden_layers"], saved["context_chars"], saved["constrain_bio"]) == (0, 16, True)
    assert (saved["bigram_buckets"], saved["bigram_embedding_size"]) == (211, 8)
    assert json.loads((output_dir / "corpus.json").read_text(encoding="utf-8"))["context_chars"] == 16
    assert (output_dir / "test_report_overlap.json").is_file()
    tagger = pipeline("token-classification", model=str(output_dir), trust_remote_code=True, device="cpu")
    assert tagger.model.config.context_chars == 16 and len(tagger.model.bert.encoder.layer) == 0
    assert tagger.model.bigram_embeddings.weight.shape == (211, 8)
    texts = sample_texts(SAMPLE)
    assert any(item["input_ids"].shape[1] > len(item["window"]) + 2 for item in tagger.preprocess(texts[0]))
    for entries in tagger(texts, aggregation_strategy="none", batch_size=8):
        assert all(is_valid_bio_names([entry["entity"] for entry in entries], [entry["index"] for entry in entries]))
    for text, entities in zip(texts, tagger(texts, batch_size=8)):
        assert all(entity["word"] == text[entity["start"] : entity["end"]] for entity in entities)


def is_valid_bio_names(names, indices):
    """Per character: an I-X continues an X at the previous character (only non-O characters are listed)."""
    previous = dict(zip(indices, names))
    for index, name in zip(indices, names):
        if name.startswith("I-"):
            before = previous.get(index - 1, "O")
            yield before != "O" and before[2:] == name[2:]
        else:
            yield True


def test_a_doccano_export_of_the_sample_trains_the_very_same_model(trained_model, tmp_path):
    """The corpus as a doccano JSONL file (detected) builds the same examples as the brat folder: with the same
    seed, the same splits, figures and test scores."""
    (name, content), = registry.write_documents(registry.read_documents(SAMPLE), "doccano")[0].items()
    (tmp_path / name).write_text(content, encoding="utf-8")
    brat_dir, _ = trained_model
    run_script(small_training(tmp_path / "model", "--data_dir", str(tmp_path / name)))
    varying = {"data_dir", "test_runtime", "test_samples_per_second", "test_steps_per_second"}
    for results in ("corpus.json", "test_results.json"):
        from_doccano, from_brat = ({key: value for key, value in json.loads((folder / results).read_text()).items()
                                    if key not in varying} for folder in (tmp_path / "model", brat_dir))
        assert from_doccano == from_brat, results


def test_early_stopping_says_when_and_why_and_checkpoint_ordering_says_nothing(tmp_path):
    """A run whose validation F1 cannot improve (learning rates of 1e-12) stops after patience + 1
    evaluations, and one line says so; transformers' "mtime may not be reliable" (checkpoints saved within a
    second of each other) is not printed into the progress bar."""
    arguments = small_training(tmp_path / "model", "--num_train_epochs", "10", "--early_stopping_patience", "1",
                               "--learning_rate", "1e-12", "--head_learning_rate", "1e-12", "--save_total_limit", "1")
    completed = run_script(arguments)
    state = json.loads((tmp_path / "model" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 2.0
    said = re.search(r"Early stopping after epoch 2 of 10: no better validation f1 than \d\.\d{4} in the last 1 "
                     r"evaluations \(--early_stopping_patience 1; 0: never\)", completed.stdout)
    assert said, completed.stdout[-2000:]
    assert "mtime may not be reliable" not in completed.stderr


def test_a_hub_id_that_cannot_be_had_is_one_line_without_the_hub_clients_retries(tmp_path):
    """Without a network (as here) the Hub client would retry for half a minute, two dozen warning lines; the
    command goes offline at once when the Hub's host does not resolve, and says it in its one line."""
    arguments = ["train.py", "--data_dir", "data/sample", "--model_name_or_path", "someone/no-such-model",
                 "--tokenizer_name", str(TINY_BERT), "--output_dir", str(tmp_path / "model"), "--use_cpu", "true"]
    completed = run_script(arguments, succeeds=False)
    assert completed.stderr.strip().splitlines()[-1].startswith(
        "train.py: --model_name_or_path someone/no-such-model: no config.json there or on the Hub (")
    assert "Retrying" not in completed.stderr and not (tmp_path / "model").exists()


# ----- the head options: declared once, by the config -----


def test_the_command_lines_head_options_are_the_configs():
    """train.py's model options that are settings of the model's config are exactly the config's head options, each
    with the config's help (and data options hold the windows')."""
    settings = set(BertBiLstmCrfConfig().to_dict())
    command_line = {field.name for field in dataclasses.fields(train.ModelArguments)} & settings
    assert command_line == set(BertBiLstmCrfConfig.head_options)
    helps = {action.dest: action.help for action in train.argument_parser()._actions}
    for option, help_text in BertBiLstmCrfConfig.head_options.items():
        assert helps[option].startswith(help_text)


HEAD_OPTION_ADDED = """
import inspect, sys
import configuration_bert_bilstm_crf

# A head option added to the config, as its file would add it: an __init__ argument and its entry in head_options.
Config = configuration_bert_bilstm_crf.BertBiLstmCrfConfig
config_init = Config.__init__

def __init__(self, emission_temperature: float = 1.0, **kwargs):
    self.emission_temperature = emission_temperature
    config_init(self, **kwargs)

*named, rest = inspect.signature(config_init).parameters.values()
new = inspect.Parameter("emission_temperature", inspect.Parameter.KEYWORD_ONLY, default=1.0, annotation=float)
__init__.__signature__ = inspect.Signature([*named, new, rest])
Config.__init__ = __init__
Config.head_options = {**Config.head_options, "emission_temperature": "Divide the emissions by this."}

import push_to_hub, train
from brat_ner import cli

command, *arguments = sys.argv[1:]
sys.argv = [command, *arguments]
cli.run_main(train.main if command == "train.py" else push_to_hub.main, command)
"""


def test_a_head_option_added_to_the_config_reaches_help_saved_config_and_model_card(tmp_path):
    """Nothing but the config declares a head option: one added there is a train.py option with its help and
    default, goes into the saved config.json and is listed on the model card."""
    def run(*arguments):
        return run_script(["-c", HEAD_OPTION_ADDED, *arguments])

    page = run("train.py", "--help").stdout
    assert "--emission_temperature" in page and "Divide the emissions by this. Left out: 1.0 for a new model" in page
    output_dir = tmp_path / "model"
    run(*small_training(output_dir, "--num_train_epochs", "1", "--emission_temperature", "2.5"))
    assert json.loads((output_dir / "config.json").read_text(encoding="utf-8"))["emission_temperature"] == 2.5
    run("push_to_hub.py", "--model_dir", str(output_dir), "--repo_id", "someone/ner", "--dry_run",
        str(tmp_path / "repo"))
    assert "| `emission_temperature` | 2.5 |" in (tmp_path / "repo" / "README.md").read_text(encoding="utf-8")


def test_training_further_applies_only_the_head_options_given(trained_model, tmp_path):
    """Continuing from a folder written by train.py: options left out are the folder's (even where they differ from a
    new model's defaults), a given option its weights do not fix applies, and one they fix is refused if it differs."""
    model_dir, _ = trained_model
    saved = BertBiLstmCrfConfig.from_pretrained(model_dir)
    first = ["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "further")]
    model_args, *_ = cli.parse_arguments(train.argument_parser(), [*first, "--constrain_bio", "false",
                                                                  "--lstm_dropout", "0.2"])
    assert model_args.lstm_hidden_size == saved.lstm_hidden_size == 16  # the folder's, not a new model's 256
    assert (model_args.constrain_bio, model_args.lstm_dropout) == (False, 0.2)  # given: applied
    assert model_args.skip_blanks == saved.skip_blanks
    with pytest.raises(SystemExit) as refusal:
        cli.parse_arguments(train.argument_parser(), [*first, "--lstm_hidden_size", "256"])
    assert refusal.value.code == 2


# ----- options refused in one line -----


@pytest.mark.parametrize("options, message", [
    (["--num_train_epochs", "0"], "--num_train_epochs must be positive"),
    (["--num_train_epochs", "-3"], "--num_train_epochs must be positive"),
    (["--learning_rate", "-1"], "--learning_rate must be positive, got -1.0"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1"),
    (["--window_chars", "0"], "--window_chars must be at least 1"),
    (["--ema_decay", "1.5"], "--ema_decay must be between 0 and 1"),
    (["--head_learning_rate", "0"], "--head_learning_rate must be positive"),
    (["--num_threads", "0"], "--num_threads must be at least 1"),
    (["--train_fraction", "0"], "--train_fraction must be above 0 and at most 1, got 0.0"),
    (["--train_fraction", "1.5"], "--train_fraction must be above 0 and at most 1, got 1.5"),
    (["--extra_text_dirs", "data/sample"], "--extra_text_dirs adds text without gold tags, which only a teacher"),
    (["--extra_text_dirs", "data/sample", "--teacher", "t", "--teacher_weight", "0"], "give --teacher DIR (and a"),
    (["--no_such_option", "1"], "unknown options --no_such_option 1"),
])
def test_train_refuses_options_that_cannot_train_in_one_line_before_any_folder(options, message, tmp_path,
                                                                               capsys):
    output_dir = tmp_path / "never-made"
    error = parse_error(train.argument_parser(), [str(REPO / "configs" / "quickstart.json"), "--output_dir",
                                                  str(output_dir), *options], capsys)
    assert error.startswith("train.py: ") and message in error
    assert not output_dir.exists()


def test_a_refused_run_ends_with_status_2_and_one_line_from_the_command_line(tmp_path):
    line = refusal("train.py", "configs/quickstart.json", "--num_train_epochs", "0", "--output_dir",
                   str(tmp_path / "out"))
    assert "--num_train_epochs must be positive" in line and not (tmp_path / "out").exists()


def test_train_sizes_its_threads_to_the_idle_cores_or_to_num_threads(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(fast_inference, "idle_cores", lambda cores: 0.2)  # another job keeps the cores busy
    try:
        for extra, expected in (((), 1), (("--num_threads", "2"), 2)):
            arguments = small_training(tmp_path / f"run{expected}", "--num_train_epochs", "1", *extra)[1:]
            monkeypatch.setattr(sys, "argv", ["train.py", *arguments])
            monkeypatch.chdir(REPO)
            cli.run_main(train.main, "train.py")
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(threads)
