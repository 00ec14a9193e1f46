"""The code style the project follows (pyproject.toml [tool.ruff]) holds on the whole tree."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_entry_scripts_pass_shellcheck():
    import shutil

    import pytest

    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    result = subprocess.run(["shellcheck", str(ROOT / "dev"), str(ROOT / ".ci" / "run")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
