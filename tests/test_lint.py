"""The habits of CONTRIBUTING.md: `ruff check` and `ruff format` clean (sizes: tests/test_skeleton.py)."""

import shutil
import subprocess

import pytest

from tests.helpers import ROOT

ruff = shutil.which("ruff")


@pytest.mark.skipif(ruff is None, reason="ruff is not installed: pip install -r requirements-dev.txt")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    result = subprocess.run([ruff, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
