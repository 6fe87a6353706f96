"""brat_ner/cli.py: JSON option files with command-line overrides, --help, and bad input ending the training
scripts with one line (`script: message`) instead of a traceback."""

import json
import shutil
import subprocess
import sys

import pytest
import transformers

import train
from brat_ner import cli
from conftest import REPO, SAMPLE, TINY_BERT, run_script, small_training

QUICKSTART = REPO / "configs" / "quickstart.json"


# ----- JSON option files and --help -----


def test_json_values_then_command_line_overrides():
    values = json.loads(QUICKSTART.read_text(encoding="utf-8"))
    model_args, data_args, _, training_args = cli.parse_arguments(
        train.argument_parser(),
        [str(QUICKSTART), "--output_dir", "other/", "--num_train_epochs", "5", "--use_lstm", "false"])
    assert training_args.output_dir == "other/" and training_args.num_train_epochs == 5  # overridden
    assert model_args.use_lstm is False
    assert data_args.window_chars == values["window_chars"] and data_args.data_dir == values["data_dir"]  # from JSON
    assert training_args.learning_rate == values["learning_rate"] and training_args.seed == values["seed"]
    assert model_args.head_learning_rate == values["head_learning_rate"]
    # Without overrides, the JSON values alone.
    _, _, _, training_args = cli.parse_arguments(train.argument_parser(), [str(QUICKSTART)])
    assert training_args.output_dir == values["output_dir"]


def test_a_bad_json_configuration_is_refused_naming_the_file(tmp_path, capsys):
    cases = {"unknown.json": ('{"window_chars": 62, "max_char": 10}', "unknown options max_char"),
             "broken.json": ('{\n  "window_chars": 62,\n}', "broken.json, line 3: not valid JSON"),
             "list.json": ("[1, 2]", "a JSON object of option names and values is expected"),
             "missing.json": (None, "missing.json: cannot read it")}
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(SystemExit):
            cli.parse_arguments(train.argument_parser(), [str(tmp_path / name)])
        assert message in capsys.readouterr().err


def test_help_lists_the_project_options_before_the_trainer_ones():
    help_text = train.argument_parser().format_help()
    positions = [help_text.index(option) for option in
                 ("--model_name_or_path", "--head_learning_rate", "--data_dir", "--rare_type_oversampling",
                  "--output_dir", "--adam_beta1")]
    assert positions == sorted(positions)
    assert help_text.index("(this project)") < help_text.index("TrainingArguments")


# ----- one-line errors -----


def test_training_scripts_end_bad_input_with_one_line(tmp_path):
    corpus = tmp_path / "three"
    corpus.mkdir()
    for name in ("01", "02", "03"):  # too few documents for the hash split to fill validation and test
        for suffix in (".txt", ".ann"):
            shutil.copy(SAMPLE / f"{name}{suffix}", corpus / f"{name}{suffix}")
    arguments = small_training(tmp_path / "model")
    arguments[arguments.index("data/sample")] = str(corpus)
    message = run_script(arguments, succeeds=False).stderr.strip().splitlines()[-1]
    assert message.startswith(f"train.py: {corpus}: the ") and "no text" in message
    assert not (tmp_path / "model").exists()  # the folder it created for its lock is gone with the lock

    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    with open(broken / "02.ann", "a", encoding="utf-8") as file:
        file.write("T99 Disease\n")
    completed = run_script(
        ["pretrain_mlm.py", "--data_dir", str(broken), "--encoder_config", str(TINY_BERT / "config.json"),
         "--tokenizer_name", str(TINY_BERT), "--output_dir", str(tmp_path / "mlm"), "--window_chars", "62",
         "--use_cpu", "true"], succeeds=False)
    assert completed.stderr.strip().splitlines()[-1].startswith(f"pretrain_mlm.py: {broken / '02.ann'}:")


def test_an_argument_that_training_arguments_refuse_is_one_line_with_status_2(monkeypatch, capsys):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py", "--save_strategy", "no", "--load_best_model_at_end", "true"])
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_arguments(train.argument_parser())
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1 and error[0].startswith("train.py: --load_best_model_at_end")


# ----- a user's mistake or a bug -----

INJECTED_BUG = """
import runpy, sys
from brat_ner import cross_validation

def read_results(output_dir, per_type=False):  # a programming error: zip(strict=True) over lists of different lengths
    return dict(zip(["folds", "mean"], [[]], strict=True))

cross_validation.read_results = read_results
sys.argv = ["compare_cv.py", "--runs", *sys.argv[1:]]
runpy.run_path("compare_cv.py", run_name="__main__")
"""


def test_a_programming_error_in_a_command_keeps_its_traceback(tmp_path):
    """A ValueError that is not a user's mistake (here one injected into compare_cv.py's reading of the runs) is a
    bug: the command ends with its traceback and Python's exit status, not with a one-line usage error."""
    completed = subprocess.run([sys.executable, "-c", INJECTED_BUG, str(tmp_path), str(tmp_path)], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "Traceback (most recent call last)" in completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith("ValueError: zip() argument 2 is shorter")


def test_a_users_mistake_in_a_command_is_one_line_with_status_2(tmp_path):
    completed = run_script(["compare_cv.py", "--runs", str(tmp_path / "one"), str(tmp_path / "two")],
                           succeeds=False)
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"compare_cv.py: {tmp_path / 'one'}: no cross_validation.json; run cross_validate.py --output_dir "
        f"{tmp_path / 'one'} (a stopped run goes on where it stopped)"]


def test_run_main_prints_a_usage_error_in_one_line_and_lets_any_other_exception_through(capsys):
    def mistaken():
        raise cli.UsageError("--runs: two folders\nare needed")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(mistaken, "compare_cv.py")
    assert exit_info.value.code == 2 and capsys.readouterr().err == "compare_cv.py: --runs: two folders are needed\n"

    def broken():
        raise ValueError("a bug, not a user's mistake")

    with pytest.raises(ValueError, match="a bug"):
        cli.run_main(broken, "compare_cv.py")


# ----- option files and help pages -----


def test_option_files_and_command_lines_with_the_former_window_name_still_read(tmp_path):
    old_options = tmp_path / "old.json"
    old_options.write_text(json.dumps({"max_chars": 62, "encoder_config": str(TINY_BERT)}), encoding="utf-8")
    _, data_args, _, _ = cli.parse_arguments(train.argument_parser(), [str(old_options)])
    assert data_args.window_chars == 62
    _, data_args, _, _ = cli.parse_arguments(train.argument_parser(), ["--max_chars", "30"])
    assert data_args.window_chars == 30


COMMANDS = ("train.py", "predict.py", "push_to_hub.py", "pretrain_mlm.py", "pretrain_embeddings.py",
            "cross_validate.py", "compare_cv.py", "ensemble.py", "convert_corpus.py", "labelstudio_backend.py")


@pytest.mark.parametrize("script", COMMANDS)
def test_each_commands_stored_help_page_is_what_its_parser_prints(script):
    """``--help`` prints a stored page before the command's slow imports; it must say what the parser says.
    ``UPDATE_HELP_PAGES=1 python -m pytest tests/test_cli.py -k help_page`` writes the pages anew."""
    import importlib
    import os

    page = cli.stored_help_page(importlib.import_module(script.removesuffix(".py")).argument_parser())
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


def test_a_stored_help_page_answers_only_under_the_transformers_it_was_made_with(monkeypatch, capsys):
    """The stored page names the transformers version it was made with: under that version ``--help`` prints it
    before any slow import; under another (Trainer's options may differ) the script goes on, and the live parser
    answers."""
    monkeypatch.setattr(sys, "argv", ["compare_cv.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        cli.exit_early_for_help("__main__", "compare_cv.py")
    made_with, _, page = cli.help_page_path("compare_cv.py").read_text(encoding="utf-8").partition("\n")
    assert exit_info.value.code == 0 and capsys.readouterr().out == page
    assert made_with == f"made with transformers {transformers.__version__}"
    monkeypatch.setattr(cli.importlib.metadata, "version", lambda name: "4.0.0")
    cli.exit_early_for_help("__main__", "compare_cv.py")  # returns: the script's parser will print its help
    assert capsys.readouterr().out == ""
