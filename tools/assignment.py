"""Hand a script out as a homework and grade it with the project's own tests.

    python tools/assignment.py list ppo.py
    python tools/assignment.py make ppo.py --blank gae clipped_policy_loss --out hw/
    python tools/assignment.py grade hw/ppo.py [gae ...] [--json results.json]

A gradable name is a top-level function or class method of a script's method part (above the
line `# ## Bookkeeping`), written `gae`, `Agent.sample` or `train`, that at least one test in
`tests/test_<script>.py` names in its marker `@pytest.mark.grades("gae", ...)`. Both lists are
read from the code at run time.

`make` writes the reference with each named body replaced by its comments, its docstring and a
`raise NotImplementedError`; every other line stays the reference's, byte for byte.

`grade` runs, for each name, the tests that grade it against a copy of the reference in which only
that definition is the student's (tests/helpers.py's `load_script` reads `PG_GRADE_FILE` and
`PG_GRADE_NAME`), so each name is graded on its own: a blank or wrong `gae` costs `gae`, not
`train`. Exit status 0 when every test passed, 1 otherwise, 2 on bad input.
"""

import argparse
import ast
import contextlib
import functools
import io
import json
import os
import re
import sys
import tempfile
import time
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAIL = "# ## Bookkeeping"

# Slides of the lecture (policy_gradient_methods.md) by the name a function has in the scripts, for
# the functions whose own comments cite none; anything else gets the slide its script's docstring cites.
SLIDES = {
    "categorical_log_prob_entropy": "Policy Gradient Methods",
    "gaussian_log_prob_entropy": "Policy Gradient Methods",
    "rewards_to_go": "The REINFORCE Algorithm",
    "reinforce_weights": "The REINFORCE Algorithm",
    "surrogate_loss": "Automatic Policy Differentiation",
    "mean_baseline": "REINFORCE with Baseline",
    "optimal_baseline": "REINFORCE with Baseline",
    "td_target": "Actor-Critic Methods",
    "critic_loss": "Actor-Critic Methods",
    "kl_divergence": "Trust Region Policy Optimization (TRPO)",
    "conjugate_gradient": "Trust Region Policy Optimization (TRPO)",
    "fisher_vector_product_fn": "Trust Region Policy Optimization (TRPO)",
    "clipped_policy_loss": "Proximal Policy Optimization (PPO)",
    "sample": "Policy Gradient Methods",
    "mode": "Policy Gradient Methods",
    "log_prob_entropy": "Policy Gradient Methods",
    "explore": "Deterministic Policies",
    "polyak_update": "Deterministic Policies",
}
SLIDE_CITED = re.compile(r'slides? "([^"]+)"')


class BadInput(Exception):
    """One line for the user; exit status 2."""


# ## Reading a script


def script_path(script: str) -> Path:
    """`ppo.py` (or `ppo`, or any path ending in ppo.py) -> the reference ROOT/ppo.py."""
    name = Path(script).name
    name = name if name.endswith(".py") else name + ".py"
    path = ROOT / name
    if not path.is_file() or TAIL not in path.read_text() or not test_file(path).is_file():
        known = ", ".join(p.name for p in scripts())
        raise BadInput(f"{script!r} is not one of the scripts ({known})")
    return path


def scripts() -> list[Path]:
    return [p for p in sorted(ROOT.glob("*.py")) if TAIL in p.read_text() and test_file(p).is_file()]


def test_file(path: Path) -> Path:
    return ROOT / "tests" / f"test_{path.stem}.py"


def definitions(text: str) -> dict[str, ast.FunctionDef]:
    """Top-level functions and class methods above the bookkeeping line, by name (`gae`, `Agent.sample`)."""
    tail = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(TAIL))
    defs = {}
    for node in parse(text).body:
        if node.lineno >= tail:
            break
        if isinstance(node, ast.FunctionDef):
            defs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            defs.update({f"{node.name}.{m.name}": m for m in node.body if isinstance(m, ast.FunctionDef)})
    return defs


@functools.lru_cache(maxsize=32)
def parse(text: str) -> ast.Module:
    return ast.parse(text)


def first_line(node: ast.FunctionDef) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def docstring_end(node: ast.FunctionDef) -> int:
    """Last line of the signature and docstring: the body proper starts below it."""
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno
    return first.lineno - 1


def comment_lines(text: str) -> set[int]:
    """Numbers of the lines that hold only a comment."""
    return {i for i, standalone in comments_of(text).items() if standalone is None}


def comments_of(text: str) -> dict[int, str | None]:
    """Line number -> None for a line that holds only a comment, the comment for one after code.

    Formatter and linter pragmas after code (`# fmt: skip`, `# noqa`) are no comments for a reader."""
    lines = text.splitlines()
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            before = lines[tok.start[0] - 1][: tok.start[1]]
            if not before.strip():
                found[tok.start[0]] = None
            elif not re.match(r"#\s*(fmt:|noqa|type:)", tok.string):
                found[tok.start[0]] = before[: len(before) - len(before.lstrip())] + tok.string + "\n"
    return found


def comments_above(lines: list[str], node: ast.FunctionDef) -> list[str]:
    """The `#` block right above a definition (its note), without the `#`."""
    i, block = first_line(node) - 2, []
    while i >= 0 and lines[i].strip().startswith("#"):
        block.insert(0, re.sub(r"^\s*# ?", "", lines[i]))
        i -= 1
    return block


def slide_of(text: str, name: str, node: ast.FunctionDef) -> str:
    """The slide a definition implements: cited in its own note or body, else SLIDES, else its script's."""
    lines = text.splitlines()
    own = "\n".join(comments_above(lines, node) + lines[first_line(node) - 1 : node.end_lineno])
    cited = SLIDE_CITED.search(own)
    if cited:
        return cited.group(1)
    if name.split(".")[-1] in SLIDES or name in SLIDES:
        return SLIDES.get(name, SLIDES.get(name.split(".")[-1]))
    cited = SLIDE_CITED.search(ast.get_docstring(parse(text)) or "")
    return cited.group(1) if cited else "the lecture"


# ## make: the starter


def blank(text: str, names: list[str]) -> str:
    """`text` with each named body replaced by its comments and a `raise NotImplementedError`."""
    defs, lines, comments = definitions(text), text.splitlines(keepends=True), comments_of(text)
    for name in sorted(names, key=lambda n: -defs[n].lineno):  # bottom up: line numbers above stay valid
        node = defs[name]
        start, end = docstring_end(node) + 1, node.end_lineno
        if start <= node.lineno:
            raise BadInput(f"{name} has its body on the line of its def; it cannot be blanked")
        rest = [s for s in node.body if s.lineno >= start]
        indent = " " * (rest or node.body)[0].col_offset
        # what stays of the body: its comments (one after code moves to a line of its own) and blank lines
        kept = [
            comments.get(i) or lines[i - 1] for i in range(start, end + 1) if i in comments or not lines[i - 1].strip()
        ]
        kept = [line for i, line in enumerate(kept) if line.strip() or (i and kept[i - 1].strip())]
        while kept and not kept[-1].strip():
            kept.pop()
        message = json.dumps(f"{name} (slide: {slide_of(text, name, node)})", ensure_ascii=False)
        lines[start - 1 : end] = kept + [f"{indent}raise NotImplementedError({message})\n"]
    return "".join(lines)


def student_readme(path: Path, text: str, names: list[str]) -> str:
    defs, lines = definitions(text), text.splitlines()
    doc = ast.get_docstring(parse(text)) or ""
    run = re.search(r"^Run: (.+)$", doc, re.M)
    out = [
        f"# Homework: {path.name}",
        "",
        f"`{path.name}`: {doc.splitlines()[0]}" if doc else "",
        "",
        "The file runs as it is except for the functions below: each raises `NotImplementedError` until you",
        "write its body. Its comments and docstring are the specification (the slide's equation); the rest",
        "of the file is the reference implementation, so read how `train` calls what you write.",
        "",
        "## What to implement",
        "",
    ]
    comments = comment_lines(text)
    for name in names:
        node = defs[name]
        out += [f'### `{name}` (slide "{slide_of(text, name, node)}")', ""]
        docstring = ast.get_docstring(node)
        inside = [
            re.sub(r"^\s*# ?", "", lines[i - 1]) for i in range(node.lineno, node.end_lineno + 1) if i in comments
        ]
        if len(inside) > 12:
            inside = ["The notes in its body walk through it block by block."]
        for part in (comments_above(lines, node), [docstring] if docstring else [], inside):
            # a note's own Markdown headings would break this page's; they become bold lines
            for line in part:
                out += [f"**{line.lstrip('#').strip()}**", ""] if re.match(r"#+ ", line) else [line]
            out += [""] if part else []
    graded = " ".join(names)
    out += [
        "## Check your work",
        "",
        "The grader is the project's own test suite. In a checkout of the project:",
        "",
        "```bash",
        f"python tools/assignment.py grade path/to/your/{path.name} {graded}",
        "```",
        "",
        "prints one line per function: passed, failed (with the first failing check) or not implemented.",
        "Each function is graded on its own, against the reference for everything else.",
        "",
        "## Run it",
        "",
        "Once everything is filled in, the script trains like the reference:",
        "",
        "```bash",
        f"pip install -r requirements.txt\n{run.group(1) if run else f'python {path.name}'}",
        "```",
        "",
        "It prints a status line while it trains and writes `runs/<run_name>/progress.csv` and `summary.json`.",
        "",
    ]
    return "\n".join(out)


# ## Running the tests in this process


def run_pytest(test: Path, env: dict[str, str], name: str | None, collect_only: bool = False) -> "Outcome":
    """Run (or only collect) `test`'s tests that grade `name` (all when None), with `env` set, quietly.

    The project's modules (`tests.*`, the scripts) are imported afresh for the run and put back
    afterwards, so one process can grade many files and names in turn."""
    import pytest

    outcome = Outcome(name)
    ours = [k for k in sys.modules if k == "tests" or k.startswith(("tests.", "script_"))]
    saved_modules = {k: sys.modules.pop(k) for k in ours}
    saved_env = {k: os.environ.pop(k, None) for k in ("PG_GRADE_FILE", "PG_GRADE_NAME", "PG_GRADE_TMP")}
    saved_path = list(sys.path)
    # The test modules register their fake envs with gymnasium when imported afresh: keep the registry as it was,
    # so a test of this process still finds the env classes its own modules hold.
    registry = sys.modules["gymnasium"].envs.registry if "gymnasium" in sys.modules else None
    saved_registry = dict(registry) if registry is not None else None
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    args = [str(test), "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-o", "addopts=", "-q"]
    args += ["--rootdir", str(ROOT)]
    args += ["-c", str(ROOT / "pyproject.toml"), "-W", "ignore", "--tb=short"]
    try:
        with contextlib.redirect_stdout(io.StringIO()) as log:
            code = pytest.main(args + (["--collect-only"] if collect_only else []), plugins=[outcome.plugin()])
        outcome.log = log.getvalue()
        outcome.exit_code = int(code)
    finally:
        for k in [k for k in sys.modules if k == "tests" or k.startswith(("tests.", "script_"))]:
            del sys.modules[k]
        sys.modules.update(saved_modules)
        for k, v in saved_env.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
        sys.path[:] = saved_path
        if registry is not None:
            registry.clear()
            registry.update(saved_registry)
    return outcome


class Outcome:
    """What one pytest session found: the markers of every test, the result of each test it ran."""

    def __init__(self, name: str | None):
        self.name = name
        self.grades: dict[str, list[str]] = {}  # name -> ids of the tests that grade it
        self.results: dict[str, tuple[str, str]] = {}  # test id -> (passed | failed | not implemented | skipped, why)
        self.errors: list[str] = []  # collection errors: the file does not import, for example
        self.log, self.exit_code = "", 0

    def plugin(self):
        import pytest

        outcome = self

        class Plugin:
            def pytest_collection_modifyitems(self, config, items):
                keep = []
                for item in items:
                    names = {n for mark in item.iter_markers("grades") for n in mark.args}
                    for n in names:
                        outcome.grades.setdefault(n, []).append(item.nodeid)
                    if outcome.name is None or outcome.name in names:
                        keep.append(item)
                config.hook.pytest_deselected(items=[i for i in items if i not in keep])
                items[:] = keep

            def pytest_collectreport(self, report):
                if report.failed:
                    outcome.errors.append(short(report))

            @pytest.hookimpl(hookwrapper=True)
            def pytest_runtest_makereport(self, item, call):
                report = (yield).get_result()
                if report.failed:
                    blanked = call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError)
                    status = "not implemented" if blanked else "failed"
                    outcome.results.setdefault(item.nodeid, (status, short(report)))
                elif report.skipped:
                    outcome.results.setdefault(item.nodeid, ("skipped", short(report)))
                elif report.when == "teardown":
                    outcome.results.setdefault(item.nodeid, ("passed", ""))

        return Plugin()


def short(report) -> str:
    """The first lines of what failed, the assertion or the exception, in one line of at most 200 characters."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = crash.message
    elif isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        text = report.longrepr[2]
    else:
        text = str(report.longrepr)
        errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
        text = errors[-1] if errors else text
    line = " ".join([line.strip() for line in text.splitlines() if line.strip()][:3])
    return line if len(line) <= 200 else line[:197] + "..."


def gradable(path: Path) -> dict[str, list[str]]:
    """name -> ids of the tests that grade it, for the names defined in the script's method part."""
    key = (path, path.read_text(), test_file(path).read_text())
    if key not in _GRADABLE:  # one collection per script and version of it, in a process that grades many files
        defs = definitions(path.read_text())
        found = run_pytest(test_file(path), {}, None, collect_only=True)
        if found.errors:
            raise RuntimeError(f"{test_file(path).name} does not collect: {found.errors[0]}")
        _GRADABLE[key] = {name: found.grades[name] for name in defs if name in found.grades}
    return _GRADABLE[key]


_GRADABLE: dict = {}


def spliced_file(reference: Path, student: Path, name: str) -> Path:
    """`spliced_text` written under the script's name to a temporary folder (`PG_GRADE_TMP` when set).

    tests/helpers.py's `load_script` loads it when grading one name."""
    folder = os.environ.get("PG_GRADE_TMP") or tempfile.mkdtemp(prefix="pg-grade-")
    out = Path(folder) / reference.name
    out.write_text(spliced_text(reference, student, name))
    return out


def spliced_text(reference: Path, student: Path, name: str) -> str:
    """`reference` with the definition `name` (and any top-level name the reference lacks) from `student`."""
    ref_text, stu_text = reference.read_text(), student.read_text()
    try:
        stu_tree = parse(stu_text)
    except SyntaxError as e:
        raise ImportError(f"{student.name} does not parse: {e.msg} (line {e.lineno})") from None
    ref_tree, stu_defs = parse(ref_text), definitions(stu_text)
    if name not in stu_defs:
        raise ImportError(f"{student.name} has no {name} above its '{TAIL}' line")
    lines, stu_lines = ref_text.splitlines(keepends=True), stu_text.splitlines(keepends=True)
    # Helpers (functions, classes, imports) the student added at the top level come along, above the tail.
    ref_bound = {n for node in ref_tree.body for n in bound_names(node)}
    added = []
    for node in stu_tree.body:
        new = bound_names(node) - ref_bound
        if new and isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign)):
            added += stu_lines[first_line(node) - 1 : node.end_lineno]
    tail = next(i for i, line in enumerate(lines) if line.startswith(TAIL))
    lines[tail:tail] = added + (["\n\n"] if added else [])
    ref_node, stu_node = definitions(ref_text)[name], stu_defs[name]
    shift = ref_node.col_offset - stu_node.col_offset
    body = stu_lines[first_line(stu_node) - 1 : stu_node.end_lineno]
    body = [(" " * shift + line if shift > 0 else line[-shift:]) if line.strip() else line for line in body]
    if body and not body[-1].endswith("\n"):
        body[-1] += "\n"
    lines[first_line(ref_node) - 1 : ref_node.end_lineno] = body
    return "".join(lines)


def bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, ast.Assign):
        return {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


# ## grade


def grade(file: Path, names: list[str] | None = None, memo: dict | None = None) -> list[dict]:
    """Grade each name of `file` (all gradable ones when None) on its own; one result dict per name.

    `memo`, kept by a caller that grades many files, maps a spliced file's text to its result: the
    same tests on the same text, run once (a starter's untouched functions are the reference's)."""
    if not file.is_file():
        raise BadInput(f"{file} is not a file")
    reference = script_path(file.name)
    tests = gradable(reference)
    names = names or list(tests)
    check_names(reference, tests, names)
    results = []
    with tempfile.TemporaryDirectory(prefix="pg-grade-") as folder:
        for name in names:
            results.append(grade_one(reference, file, name, folder, memo))
    return results


def grade_one(reference: Path, file: Path, name: str, folder: str, memo: dict | None) -> dict:
    """Run the tests that grade `name` on the reference with `file`'s `name` in it; their verdict."""
    started = time.perf_counter()
    key = None
    if memo is not None:
        with contextlib.suppress(ImportError):
            key = (name, spliced_text(reference, file, name))
        if key in memo:
            return dict(memo[key], seconds=0.0)
    env = {"PG_GRADE_FILE": str(file.resolve()), "PG_GRADE_NAME": name, "PG_GRADE_TMP": folder}
    outcome = run_pytest(test_file(reference), env, name)
    ran = {k: v for k, v in outcome.results.items() if v[0] != "skipped"}
    passed = sum(status == "passed" for status, _ in ran.values())
    missing = [v for v in ran.values() if v[0] == "not implemented"]
    failing = [(k, v) for k, v in ran.items() if v[0] != "passed"]
    if outcome.errors or not ran and outcome.exit_code not in (0, 5):  # the file does not even import
        why = (outcome.errors or outcome.log.strip().splitlines()[-1:] or ["no test ran"])[0]
        status = "not implemented" if why.startswith("NotImplementedError") else "failed"
    elif missing:
        status, why = "not implemented", missing[0][1]
    elif failing:
        test_id, (_, message) = failing[0]
        status, why = "failed", f"{test_id.split('::')[-1]}: {message}"
    else:
        status, why = "passed", ""
    result = {
        "name": name, "status": status, "passed": passed, "tests": len(ran), "why": why,
        "score": passed / len(ran) if ran else float(status == "passed"), "seconds": time.perf_counter() - started,
    }  # fmt: skip
    if key is not None:
        memo[key] = result
    return result


def check_names(reference: Path, tests: dict, names: list[str]) -> None:
    unknown = [n for n in names if n not in tests]
    if unknown:
        raise BadInput(
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not gradable in {reference.name}; "
            f"the gradable names are: {', '.join(tests)}"
        )


def report_line(r: dict) -> str:
    line = f"{r['name']}: {r['status']} ({r['passed']}/{r['tests']} tests)"
    return line + (f": {r['why']}" if r["status"] != "passed" and r["why"] else "")


def gradescope(results: list[dict], seconds: float) -> dict:
    """Gradescope's autograder results.json: one test per name, worth 1, scored by its share of tests passed."""
    tests = [
        {"name": r["name"], "score": round(r["score"], 4), "max_score": 1.0,
         "status": "passed" if r["status"] == "passed" else "failed", "output": report_line(r)}
        for r in results
    ]  # fmt: skip
    return {"score": round(sum(t["score"] for t in tests), 4), "execution_time": round(seconds), "tests": tests}


# ## The command line


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise BadInput(message)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="assignment.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    listing = commands.add_parser("list", help="the gradable names of a script and how many tests grade each")
    listing.add_argument("script")
    make = commands.add_parser("make", help="a starter file with the named bodies blanked, and a README")
    make.add_argument("script")
    make.add_argument("--blank", nargs="+", required=True, metavar="NAME")
    make.add_argument("--out", required=True, type=Path, metavar="DIR")
    grading = commands.add_parser("grade", help="grade a student's file, one line per name")
    grading.add_argument("file", type=Path)
    grading.add_argument("names", nargs="*", metavar="NAME")
    grading.add_argument("--json", type=Path, metavar="PATH", help="also write Gradescope's results.json there")
    try:
        args = parser.parse_args(argv)
        if args.command == "list":
            path = script_path(args.script)
            for name, ids in gradable(path).items():
                print(f"{name}  {len(ids)} test{'s' * (len(ids) != 1)}")
            return 0
        if args.command == "make":
            path = script_path(args.script)
            check_names(path, gradable(path), args.blank)
            if args.out.exists() and not args.out.is_dir():
                raise BadInput(f"--out {args.out} is not a folder")
            text = path.read_text()
            starter = blank(text, args.blank)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / path.name).write_text(starter)
            (args.out / "README.md").write_text(student_readme(path, text, args.blank))
            print(f"wrote {args.out / path.name} and {args.out / 'README.md'}")
            return 0
        started = time.perf_counter()
        if args.json is not None and not args.json.parent.is_dir():
            raise BadInput(f"--json {args.json}: no folder {args.json.parent}")
        results = grade(args.file, args.names)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(report_line(r))
    total = sum(r["score"] for r in results)
    print(f"score: {total:.2f}/{len(results)}")
    if args.json is not None:
        args.json.write_text(json.dumps(gradescope(results, time.perf_counter() - started), indent=2) + "\n")
    return 0 if all(r["status"] == "passed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
