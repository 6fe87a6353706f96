"""The commands' options: one way to refuse them (one line, exit status 2, before any work or folder), option
files with former names, threads sized to the idle cores, and what a run prints (warnings, the budget's bar)."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import predict
import train
from brat_ner import cli, fast_inference
from brat_ner.reporting import EpochLineCallback
from conftest import REPO, TINY_BERT, small_training
from dataset_script import ruijin_ner

SAMPLE = REPO / "data" / "sample"


def refusal(script: str, *arguments, cwd=REPO) -> str:
    """The one line with which ``script`` refuses ``arguments``: exit status 2, no traceback."""
    completed = subprocess.run([sys.executable, script, *arguments], cwd=cwd, capture_output=True, text=True,
                               timeout=600, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert lines and lines[-1].startswith(f"{script}: "), completed.stderr[-3000:]
    return lines[-1]


def parse_error(parser, arguments, capsys) -> str:
    """The one line on standard error with which ``cli.parse_arguments`` refuses ``arguments`` (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_arguments(parser, arguments)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(error.strip().splitlines()) == 1, error
    return error.strip()


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


def test_predict_refuses_a_batch_size_of_zero_before_any_folder(tmp_path, capsys):
    output_dir = tmp_path / "predicted"
    error = parse_error(predict.argument_parser(), ["--model_name_or_path", str(tmp_path), "--input_dir",
                                                    str(SAMPLE), "--output_dir", str(output_dir), "--batch_size", "0"],
                        capsys)
    assert "--batch_size must be at least 1, got 0" in error and not output_dir.exists()


def test_predict_takes_a_json_file_of_options_that_the_command_line_overrides(tmp_path, capsys):
    options = tmp_path / "predict.json"
    options.write_text(json.dumps({"model_name_or_path": "outputs/quickstart", "input_dir": str(SAMPLE),
                                   "output_dir": "predicted", "batch_size": 4}), encoding="utf-8")
    (args,) = cli.parse_arguments(predict.argument_parser(), [str(options), "--batch_size", "8"])
    assert (args.model_name_or_path, args.input_dir, args.batch_size) == ("outputs/quickstart", str(SAMPLE), 8)
    options.write_text(json.dumps({"model_name_or_path": "m", "batch_sise": 4}), encoding="utf-8")
    assert "unknown options batch_sise" in parse_error(predict.argument_parser(), [str(options)], capsys)


def test_option_files_and_command_lines_with_the_former_window_name_still_read(tmp_path):
    old_options = tmp_path / "old.json"
    old_options.write_text(json.dumps({"max_chars": 62, "encoder_config": str(TINY_BERT)}), encoding="utf-8")
    _, data_args, _, _ = cli.parse_arguments(train.argument_parser(), [str(old_options)])
    assert data_args.window_chars == 62
    _, data_args, _, _ = cli.parse_arguments(train.argument_parser(), ["--max_chars", "30"])
    assert data_args.window_chars == 30


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


def test_the_corpus_summary_counts_every_warning_it_printed(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a_1.txt").write_text("糖尿病患者\n", encoding="utf-8")
    (corpus / "a_1.ann").write_text("T1\tDiseas 0 3\t糖尿病\n", encoding="utf-8")  # a misspelt type: warned
    with caplog.at_level("WARNING"):
        _, stats = ruijin_ner.load(corpus, return_stats=True, cache_dir=tmp_path / "cache")
    warned = [record for record in caplog.records if record.levelname == "WARNING"]
    assert warned and "Diseas" in warned[0].getMessage()
    assert f"warnings: {len(warned)} printed above" in stats.format()


def test_gold_types_that_the_folders_annotation_conf_does_not_declare_are_refused(tmp_path):
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "a.txt").write_text("口服二甲双胍治疗\n", encoding="utf-8")
    (gold / "a.ann").write_text("T1\tDrug 2 6\t二甲双胍\nT2\tRemedy 0 2\t口服\n", encoding="utf-8")
    (gold / "annotation.conf").write_text("[entities]\nDrug\n[relations]\n[events]\n[attributes]\n",
                                          encoding="utf-8")
    with pytest.raises(ValueError, match=r"entity types \['Remedy'\] are not in .*annotation.conf"):
        ruijin_ner.read_corpus_documents(gold)


def test_on_a_time_budget_the_progress_bar_counts_the_budget_not_the_epochs():
    callback = EpochLineCallback()
    state = SimpleNamespace(is_world_process_zero=True, max_steps=41050, global_step=0)
    callback.on_train_begin(SimpleNamespace(time_budget_minutes=21), state, None)
    assert callback.training_bar.total == 21 * 60
    callback.training_bar.close()
    callback.on_train_begin(SimpleNamespace(time_budget_minutes=None), state, None)
    assert callback.training_bar.total == 41050
    callback.training_bar.close()


COMMANDS = ("train.py", "predict.py", "push_to_hub.py", "pretrain_mlm.py", "pretrain_embeddings.py",
            "cross_validate.py", "compare_cv.py", "ensemble.py", "convert_corpus.py", "labelstudio_backend.py")


@pytest.mark.parametrize("script", COMMANDS)
def test_each_commands_stored_help_page_is_what_its_parser_prints(script):
    """``--help`` prints a stored page before the command's slow imports; it must say what the parser says.
    ``UPDATE_HELP_PAGES=1 python -m pytest tests/test_run_options.py -k help_page`` writes the pages anew."""
    import importlib
    import os

    page = cli.help_page(importlib.import_module(script.removesuffix(".py")).argument_parser())
    stored = cli.help_page_path(script)
    if os.environ.get("UPDATE_HELP_PAGES"):
        stored.write_text(page, encoding="utf-8")
    assert stored.read_text(encoding="utf-8") == page, f"{stored} is stale: see this test's docstring"


def test_help_shows_the_projects_options_and_the_trainer_options_people_set():
    page = cli.help_page(train.argument_parser())
    for option in ("--window_chars", "--head_learning_rate", "--num_train_epochs", "--learning_rate",
                   "--time_budget_minutes", "--fgm_epsilon", "--overwrite_output_dir"):
        assert f"  {option} " in page
    assert "--adam_beta1" not in page and "--help-all lists them" in page
    assert "--adam_beta1" in cli.help_page(train.argument_parser(), all_options=True)


def test_help_is_printed_without_importing_torch_or_transformers():
    completed = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; sys.argv = ['train.py', '--help']\n"
                               "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
                               "except SystemExit:\n    print('LOADED', 'torch' in sys.modules, "
                               "'transformers' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "--window_chars" in completed.stdout and completed.stdout.strip().endswith("LOADED False False")
