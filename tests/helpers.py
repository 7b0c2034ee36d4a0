"""Helpers shared by the tests: load a top-level script as a module, run its `train`
in a temporary directory, run its command line in a subprocess, read what a run wrote."""

import csv
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUMMARY_FIELDS = {
    "algo", "env_id", "seed", "global_step", "wall_time_s", "sps", "eval_mean_return",
    "eval_std_return", "eval_episodes", "train_last_mean_return",
}  # fmt: skip
PROGRESS_HEADER = ["global_step", "wall_time", "episodic_return", "episodic_length"]


def installed(*modules: str) -> bool:
    """Every one of `modules` importable (for `skipif`: the video and MuJoCo extras of the dev requirements)."""
    return all(importlib.util.find_spec(m) is not None for m in modules)


def load_script(name: str):
    """Import `ROOT/<name>` (e.g. "ppo.py") as a module, once per test session.

    Grading a student's file (tools/assignment.py does this): with `PG_GRADE_FILE=/path/to/<name>`
    the tests load that file instead of the reference; with `PG_GRADE_NAME=gae` (or `Agent.sample`,
    `train`) as well, they load the reference with only that definition taken from the file, so
    each function is graded on its own, whatever the file's other functions do.
    """
    mod_name = "script_" + name.removesuffix(".py")
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    path = ROOT / name
    graded = os.environ.get("PG_GRADE_FILE")
    if graded and Path(graded).name == name:
        path = Path(graded)
        if os.environ.get("PG_GRADE_NAME"):
            from tools.assignment import spliced_file

            path = spliced_file(ROOT / name, path, os.environ["PG_GRADE_NAME"])
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]  # a file that fails to import fails every test that loads it, not only the first
        raise
    return module


def make_args(module, **overrides):
    """The script's `Args` with `overrides`; unknown field names fail loudly."""
    fields = {f.name for f in dataclasses.fields(module.Args)}
    unknown = set(overrides) - fields
    assert not unknown, f"{module.__name__}.Args has no fields {unknown}"
    return module.Args(**overrides)


def train_in(tmp_path: Path, module, **overrides) -> tuple[dict, Path]:
    """Run `module.train` with cwd = tmp_path; return its summary and the run directory."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        summary = module.train(make_args(module, **overrides))
    finally:
        os.chdir(old)
    run_dirs = sorted((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return summary, run_dirs[-1]


def cli_flags(**overrides) -> list[str]:
    """{"total_timesteps": 64, "cuda": False} -> ["--total-timesteps", "64", "--no-cuda"]."""
    flags = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def run_cli(script: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 240):
    """Run `python ROOT/script args...` in cwd, with the repository root importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def read_progress(run_dir: Path) -> list[dict]:
    with open(run_dir / "progress.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == PROGRESS_HEADER
        return list(reader)


def runs_of_seeds(tmp_path: Path, module, seeds: list[int], **overrides) -> list[tuple[list, float]]:
    """Train once per seed (each in its own folder); per run, its (global_step, return) episodes and eval mean."""
    runs = []
    for i, seed in enumerate(seeds):
        (tmp_path / str(i)).mkdir()
        summary, run_dir = train_in(tmp_path / str(i), module, seed=seed, **overrides)
        episodes = [(r["global_step"], r["episodic_return"]) for r in read_progress(run_dir)]
        runs.append((episodes, summary["eval_mean_return"]))
    return runs


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def spy(monkeypatch, owner, name: str) -> list[tuple[tuple, dict, object]]:
    """Wrap `owner.name` (a module function or a class method) so every call is recorded.

    Returns the list that fills with `(args, kwargs, result)` as `train` runs. `train` looks its
    helpers up by name at call time, so this sees exactly what the loop feeds the math.
    """
    calls = []
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def main_in(tmp_path: Path, module, *argv: str) -> tuple[int, str, str]:
    """Run `module.main()` as the command line `argv` does, with cwd = tmp_path, in this process (no start-up
    cost); return its exit status, stdout and stderr."""
    import contextlib
    import io

    old_cwd, old_argv, out, err = os.getcwd(), sys.argv, io.StringIO(), io.StringIO()
    os.chdir(tmp_path)
    sys.argv = [module.__file__, *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            module.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue()
