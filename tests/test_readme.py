"""What the README promises: its Python examples run as written, and the output folders it names are git-ignored."""

import re
import subprocess
import sys

import pytest

from conftest import REPO, SCRIPT_ENVIRONMENT, run_script


def test_readme_python_examples_run_as_written_from_any_folder(trained_model, tmp_path):
    model_dir, _ = trained_model
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use a trained model", 1)[1].split("\n## ", 1)[0]
    code = "".join(re.findall(r"```python\n(.*?)```", section, re.S)).replace("outputs/quickstart", str(model_dir))
    # Outside the repository: the model's code comes from its folder, as transformers loads it, not from here.
    completed = run_script(["-c", code + "\nprint(len(tags), type(model).__name__)"], cwd=tmp_path)
    assert completed.stdout.split()[-2:] == [str(len("2 型糖尿病患者口服二甲双胍")),
                                             "BertBiLstmCrfForTokenClassification"]


def test_readme_python_examples_name_a_missing_folder_rather_than_ask_the_hub(tmp_path):
    """Run as written where there is no outputs/quickstart, the examples stop at once naming the folder; the
    relative path never becomes a Hub id (a 62-line OSError after the Hub client's retries)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use a trained model", 1)[1].split("\n## ", 1)[0]
    code = "".join(re.findall(r"```python\n(.*?)```", section, re.S))
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**SCRIPT_ENVIRONMENT,
                               "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    missing = tmp_path / "outputs" / "quickstart"
    assert completed.returncode == 1 and completed.stderr == f"{missing}: no such folder\n", completed.stderr[-2000:]


def test_output_folders_of_the_readme_are_git_ignored():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = "".join(re.findall(r"```bash\n(.*?)```", readme, re.S))
    folders = set(re.findall(r"--(?:output_dir|dry_run) (\S+)", commands))
    assert {"predicted/", "hub_folder/", "outputs/ruijin"} <= folders
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    completed = subprocess.run(["git", "check-ignore", "--no-index", *sorted(folders)], cwd=REPO,
                               capture_output=True, text=True)
    assert sorted(completed.stdout.split()) == sorted(folders), completed.stderr
