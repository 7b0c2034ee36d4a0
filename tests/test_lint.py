"""The habits of CONVENTIONS.md: `ruff check` and `ruff format` clean, scripts of lecture size."""

import shutil
import subprocess

import pytest

from tests.helpers import ROOT
from tests.scripts import SCRIPTS

ruff = shutil.which("ruff")


@pytest.mark.skipif(ruff is None, reason="ruff is not installed: pip install -r requirements-dev.txt")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    result = subprocess.run([ruff, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("spec", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_is_lecture_sized(spec):
    lines = (ROOT / spec.name).read_text().count("\n")
    # About 200-400 lines of lecture, plus ~100 of the contract's bookkeeping (W&B, video, save and
    # load, Ctrl-C, evaluation, summary) that every script carries on its own.
    assert lines <= 520, f"{spec.name} has {lines} lines; is all of it the lecture's?"
