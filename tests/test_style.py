"""The code follows the linter settings in pyproject.toml (ruff: pyflakes, pycodestyle, import order, pyupgrade;
lines of at most 120 characters)."""

import subprocess
import sys

from conftest import REPO


def test_the_code_passes_the_projects_ruff_settings():
    completed = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
