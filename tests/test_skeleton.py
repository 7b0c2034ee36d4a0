"""The shape of a script (CONTRIBUTING.md): the method first, then one bookkeeping tail,
identical byte for byte in all nine scripts, and nothing of the bookkeeping above it."""

import ast
import difflib
import re
import sys

import pytest

from tests.helpers import ROOT
from tests.scripts import IDS, SCRIPTS

sys.path.insert(0, str(ROOT / "docs"))
from build import split_sections  # noqa: E402

MARK = "# ## Bookkeeping"
BOOKKEEPING = [
    r"\bwandb\.",
    r"\bjson\.",
    r"\bcsv\.",
    r"KeyboardInterrupt",
    r"torch\.save\(",
    r"torch\.load\(",
    r"RecordVideo",
]
SHORT_SCRIPTS = {"finite_diff.py": 200, "reinforce.py": 200}


def parts(name: str) -> tuple[list[str], str]:
    """(the lines above the tail, the tail's text from its `# ## Bookkeeping` line to the end)."""
    lines = (ROOT / name).read_text().splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.startswith(MARK)]
    assert len(marks) == 1, f"{name}: {len(marks)} lines start with {MARK!r}, expected one"
    return lines[: marks[0]], "".join(lines[marks[0] :])


def test_the_tail_is_the_same_in_every_script():
    tails = {spec.name: parts(spec.name)[1] for spec in SCRIPTS}
    reference = tails["ppo.py"]
    for name, tail in tails.items():
        diff = "".join(difflib.unified_diff(reference.splitlines(True), tail.splitlines(True), "ppo.py", name, n=1))
        assert tail == reference, f"{name}'s tail differs from ppo.py's:\n{diff[:3000]}"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_no_bookkeeping_above_the_tail(spec):
    method, _ = parts(spec.name)
    code = [line for line in method if line.strip() and not line.lstrip().startswith("#")]
    for pattern in BOOKKEEPING:
        hits = [line.strip() for line in code if re.search(pattern, line)]
        assert not hits, f"{spec.name}: bookkeeping above the tail: {hits[0]!r}"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_the_method_is_lecture_sized(spec):
    method, _ = parts(spec.name)
    non_blank = sum(1 for line in method if line.strip())
    limit = SHORT_SCRIPTS.get(spec.name, 300)
    assert non_blank <= limit, f"{spec.name}: {non_blank} non-blank lines above the tail, at most {limit}"
    tree = ast.parse((ROOT / spec.name).read_text())
    (train,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train"]
    length = train.end_lineno - train.lineno + 1
    assert length <= 120, f"{spec.name}: train is {length} lines, at most 120"
    assert len(method) > train.end_lineno, f"{spec.name}: train must stand above the tail"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_no_long_code_block_beside_one_note(spec):
    """On the annotated pages a reader keeps the note and its code in view together."""
    method, _ = parts(spec.name)
    for section in split_sections((ROOT / spec.name).read_text()):
        code = [n for n in section.code_lines if n <= len(method)]
        assert len(code) <= 45, f"{spec.name}:{code[0]}: {len(code)} lines of code beside one note, at most 45"


def test_ppo_and_ppo_continuous_stay_siblings():
    a = (ROOT / "ppo.py").read_text().splitlines()
    b = (ROOT / "ppo_continuous.py").read_text().splitlines()
    changed = sum(1 for line in difflib.unified_diff(a, b, n=0, lineterm="") if line[:1] in "+-")
    changed -= 2  # the ---/+++ header lines
    assert changed <= 160, f"diff ppo.py ppo_continuous.py: {changed} changed lines, at most 160"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_the_file_ends_with_main(spec):
    text = (ROOT / spec.name).read_text()
    assert text.rstrip().endswith('if __name__ == "__main__":\n    main()'), spec.name
