"""The shape of a script (CONTRIBUTING.md): the method first, then one bookkeeping tail, identical
byte for byte in all nine scripts, and nothing of the bookkeeping above it. The method reads beside
the slide: a note at least every 10 code lines of a function, code lines of at most 100 columns, and
`train` shows what it uses (seeds, device, spaces) instead of taking it from the tail's `Run`."""

import ast
import difflib
import io
import re
import sys
import tokenize

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
SHORT_SCRIPTS = {"finite_diff.py": 220, "reinforce.py": 220}
MAX_COLUMNS = 100
MAX_CODE_RUN = 10
# What `Run` knows of the env and the machine: `train` finds it out itself, where a student sees it.
RUN_ATTRIBUTES = {"obs_dim", "action_dim", "discrete", "action_low", "action_high", "device"}
SEEDING = {"random.seed", "np.random.seed", "torch.manual_seed", "torch.set_num_threads"}


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


def note_lines(text: str) -> set[int]:
    """Line numbers (from 1) that hold a note: a whole-line `#` comment, or a docstring."""
    notes = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and not token.line[: token.start[1]].strip():
            notes.add(token.start[0])
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None:
            docstring = node.body[0]
            notes.update(range(docstring.lineno, docstring.end_lineno + 1))
    return notes


def code_lines(lines: list[str], notes: set[int]) -> list[int]:
    """The line numbers of `lines` (the first is 1) that hold code: neither blank nor a note."""
    return [n for n, line in enumerate(lines, 1) if line.strip() and n not in notes]


def train_of(text: str) -> ast.FunctionDef:
    (train,) = [node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef) and node.name == "train"]
    return train


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_the_method_is_lecture_sized(spec):
    """The method part counted in code lines (its notes are free); `train`, the loop read beside the slide's
    algorithm box, also whole: at most 120 lines with its notes and blank lines."""
    text = (ROOT / spec.name).read_text()
    method, _ = parts(spec.name)
    notes = note_lines(text)
    code = len(code_lines(method, notes))
    limit = SHORT_SCRIPTS.get(spec.name, 360)
    assert code <= limit, f"{spec.name}: {code} code lines above the tail, at most {limit}"
    train = train_of(text)
    in_train = [n for n in code_lines(method, notes) if train.lineno <= n <= train.end_lineno]
    assert len(in_train) <= 120, f"{spec.name}: train has {len(in_train)} code lines, at most 120"
    whole = train.end_lineno - train.lineno + 1
    assert whole <= 120, f"{spec.name}: train is {whole} lines long with its notes, at most 120"
    assert len(method) > train.end_lineno, f"{spec.name}: train must stand above the tail"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_every_function_has_a_note_at_least_every_ten_code_lines(spec):
    """Reading only the notes of `train` (and of every other function) follows the slide's algorithm box."""
    text = (ROOT / spec.name).read_text()
    method, _ = parts(spec.name)
    lines = text.splitlines()
    notes = note_lines(text)
    functions = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.FunctionDef)]
    for function in functions:
        if function.lineno > len(method):
            continue
        run, first = 0, None
        for n in range(function.lineno + 1, function.end_lineno + 1):
            if n in notes:
                run = 0
            elif lines[n - 1].strip() and n >= function.body[0].lineno:  # the signature's own lines do not count
                first = n if run == 0 else first
                run += 1
                assert run <= MAX_CODE_RUN, (
                    f"{spec.name}:{first}: {function.name} runs more than {MAX_CODE_RUN} code lines without a note"
                )


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_code_lines_above_the_tail_fit_in_100_columns(spec):
    """Notes may run longer (an equation is not broken); the module docstring is prose, also free."""
    text = (ROOT / spec.name).read_text()
    method, _ = parts(spec.name)
    for n in code_lines(method, note_lines(text)):
        width = len(method[n - 1].rstrip("\n"))
        assert width <= MAX_COLUMNS, f"{spec.name}:{n}: a code line of {width} columns, at most {MAX_COLUMNS}"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_the_method_takes_no_space_or_device_from_run(spec):
    """Sizes, action bounds, discrete or not, and the device come from the envs and `args`, in view."""
    method, _ = parts(spec.name)
    tree = ast.parse((ROOT / spec.name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in RUN_ATTRIBUTES and node.lineno <= len(method):
            if isinstance(node.value, ast.Name) and node.value.id == "run":
                raise AssertionError(f"{spec.name}:{node.lineno}: run.{node.attr} above the tail")


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_train_seeds_itself_and_reads_the_spaces_and_device(spec):
    """`Run` checks the env; `train` seeds, picks the device and sizes its networks where a student reads it."""
    train = train_of((ROOT / spec.name).read_text())
    calls = {ast.unparse(node.func) for node in ast.walk(train) if isinstance(node, ast.Call)}
    missing = SEEDING - calls
    assert not missing, f"{spec.name}: train does not call {sorted(missing)}"
    targets = {ast.unparse(t) for node in ast.walk(train) if isinstance(node, ast.Assign) for t in node.targets}
    assert "torch.backends.cudnn.deterministic" in targets, f"{spec.name}: train does not set cudnn.deterministic"
    assert "torch.device" in calls, f"{spec.name}: train does not pick its device"
    attributes = {node.attr for node in ast.walk(train) if isinstance(node, ast.Attribute)}
    for space in ("single_observation_space", "single_action_space"):
        assert space in attributes, f"{spec.name}: train does not read the envs' {space}"


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
    assert changed <= 220, f"diff ppo.py ppo_continuous.py: {changed} changed lines, at most 220"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_the_file_ends_with_main(spec):
    text = (ROOT / spec.name).read_text()
    assert text.rstrip().endswith('if __name__ == "__main__":\n    main()'), spec.name
