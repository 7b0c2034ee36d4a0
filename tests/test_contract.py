"""The contract of CONTRIBUTING.md, checked for every script in scripts.SCRIPTS."""

import math
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import (
    PROGRESS_HEADER,
    ROOT,
    SUMMARY_FIELDS,
    cli_flags,
    installed,
    load_script,
    read_progress,
    read_summary,
    run_cli,
    runs_of_seeds,
    train_in,
)
from tests.scripts import IDS, SCRIPTS

COMMON_FLAGS = [
    "--exp-name", "--seed", "--torch-deterministic", "--cuda", "--track", "--wandb-project-name",
    "--wandb-entity", "--capture-video", "--save-model", "--model-path", "--env-id",
    "--total-timesteps", "--eval-episodes",
]  # fmt: skip
EVAL_LINE = re.compile(r"^eval: mean_return=(\S+) std_return=(\S+) episodes=(\d+)$")

ENV_CASES = [(s, env) for s in SCRIPTS for env in s.envs]
ENV_IDS = [f"{s.name}-{env}" for s, env in ENV_CASES]


def assert_one_line_error(result: subprocess.CompletedProcess, *, mentions: str = ""):
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert mentions.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_help_lists_the_common_fields(spec, tmp_path):
    result = run_cli(spec.name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in COMMON_FLAGS:
        assert flag in result.stdout, f"{spec.name} --help lacks {flag}"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_import_has_no_side_effects(spec, tmp_path):
    code = (
        "import importlib.util, sys\n"
        f"s = importlib.util.spec_from_file_location('m', {str(ROOT / spec.name)!r})\n"
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
        "assert callable(m.train) and hasattr(m, 'Args')\n"
        "print('wandb' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "importing the script imported wandb"
    assert list(tmp_path.iterdir()) == [], "importing the script wrote files"


@pytest.mark.parametrize("spec,env_id", ENV_CASES, ids=ENV_IDS)
def test_tiny_run_writes_progress_and_summary(spec, env_id, tmp_path):
    module = load_script(spec.name)
    summary, run_dir = train_in(tmp_path, module, env_id=env_id, seed=3, **spec.tiny)
    assert run_dir.name.startswith(f"{env_id}__{spec.name[:-3]}__3__")
    assert SUMMARY_FIELDS <= set(summary), SUMMARY_FIELDS - set(summary)
    assert read_summary(run_dir) == summary
    assert summary["env_id"] == env_id and summary["seed"] == 3
    assert summary["global_step"] <= spec.tiny["total_timesteps"] and summary["global_step"] > 0
    assert summary["eval_episodes"] == spec.tiny["eval_episodes"]
    assert math.isfinite(summary["eval_mean_return"]) and summary["eval_std_return"] >= 0
    assert summary["sps"] > 0 and summary["wall_time_s"] > 0
    rows = read_progress(run_dir)
    assert rows, "no finished episode in progress.csv"
    steps = [int(r["global_step"]) for r in rows]
    walls = [float(r["wall_time"]) for r in rows]
    assert steps == sorted(steps) and walls == sorted(walls) and steps[-1] <= summary["global_step"]
    assert all(int(r["episodic_length"]) > 0 and math.isfinite(float(r["episodic_return"])) for r in rows)
    last20 = [float(r["episodic_return"]) for r in rows[-20:]]
    assert summary["train_last_mean_return"] == pytest.approx(sum(last20) / len(last20), rel=1e-4)


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_same_seed_same_returns(spec, tmp_path):
    runs = runs_of_seeds(tmp_path, load_script(spec.name), [5, 5, 6], env_id=spec.envs[0], **spec.tiny)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2], "a different seed gave the same run: is the seed used?"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_cli_run_with_offline_tracking(spec, tmp_path):
    """The command line a user types, with --track under WANDB_MODE=offline."""
    flags = cli_flags(env_id=spec.envs[0], seed=2, track=True, **spec.tiny)
    result = run_cli(spec.name, *flags, cwd=tmp_path, env={"WANDB_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    match = EVAL_LINE.match(lines[-1])
    assert match, f"last line is not the eval line: {lines[-1]!r}"
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert lines[0] == f"run folder: runs/{run_dir.name}", "the run folder is not the first thing said"
    summary = read_summary(run_dir)
    # Rounded for a person to read, to 2 decimals.
    assert (
        match.group(1) == f"{summary['eval_mean_return']:.2f}" and match.group(2) == f"{summary['eval_std_return']:.2f}"
    )
    assert int(match.group(3)) == summary["eval_episodes"]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run was written"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_save_then_evaluate_only(spec, tmp_path):
    module = load_script(spec.name)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained, run_dir = train_in(tmp_path / "a", module, env_id=spec.envs[0], seed=4, save_model=True, **spec.tiny)
    (model,) = run_dir.glob("*.pt")
    overrides = {**spec.tiny, "total_timesteps": 0}
    evaluated, _ = train_in(tmp_path / "b", module, env_id=spec.envs[0], seed=4, model_path=str(model), **overrides)
    assert evaluated["global_step"] == 0
    assert evaluated["eval_mean_return"] == trained["eval_mean_return"]
    # The same weights in an env of another shape: one error line, exit 2.
    if len(spec.envs) > 1:
        flags = cli_flags(env_id=spec.envs[1], model_path=str(model), **overrides)
        result = run_cli(spec.name, *flags, cwd=tmp_path)
        assert_one_line_error(
            result,
            mentions="saved for 4 observations, 2 discrete actions (CartPole-v1); Pendulum-v1 has 3, 1 continuous",
        )


def bad_inputs(spec):
    """(case id, overrides, a word the error line must contain)."""
    tiny = dict(spec.tiny, env_id=spec.envs[0])
    return [
        ("unknown-env", dict(tiny, env_id="NoSuchEnv-v0"), "NoSuchEnv"),
        ("unsupported-action-space", dict(tiny, env_id=spec.unsupported_env), "action space"),
        ("image-observation", dict(tiny, env_id="tests.fake_envs:ImageObservation-v0"), "observation"),
        ("zero-size", dict(tiny, **{spec.size_field: 0}), spec.size_field.replace("_", "-")),
        ("negative-size", dict(tiny, **{spec.size_field: -3}), spec.size_field.replace("_", "-")),
        ("budget-below-one-update", dict(tiny, total_timesteps=spec.small_budget), "is less than one update ("),
        ("negative-budget", dict(tiny, total_timesteps=-5), "error: --total-timesteps must be >= 0, got -5"),
        ("zero-budget-without-model", dict(tiny, total_timesteps=0), "model-path"),
        ("missing-model-path", dict(tiny, model_path="no/such/model.pt"), "model-path"),
        (
            "model-path-not-a-model",
            dict(tiny, model_path=str(ROOT / "README.md"), total_timesteps=0),
            f"README.md is not a checkpoint saved by {spec.name}",
        ),
        ("negative-seed", dict(tiny, seed=-5), "seed"),
    ]


BAD_CASES = [(s, *case) for s in SCRIPTS for case in bad_inputs(s)]


@pytest.mark.parametrize("spec,case,overrides,mentions", BAD_CASES, ids=[f"{c[0].name}-{c[1]}" for c in BAD_CASES])
def test_bad_input_is_one_error_line_and_exit_2(spec, case, overrides, mentions, tmp_path):
    result = run_cli(spec.name, *cli_flags(**overrides), cwd=tmp_path)
    assert_one_line_error(result, mentions=mentions)
    assert list(tmp_path.iterdir()) == [], "bad input, yet something was written"


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_ctrl_c_keeps_what_was_reached(spec, tmp_path):
    flags = cli_flags(env_id=spec.envs[0], seed=1, total_timesteps=10_000_000, save_model=True)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / spec.name), *flags], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("runs/*/progress.csv")):
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]  # 130 after SIGINT: a shell loop over seeds stops too
    assert "Traceback" not in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = read_summary(run_dir)
    assert summary["interrupted"] is True and 0 < summary["global_step"] < 10_000_000
    assert summary["eval_episodes"] == 0 and summary["eval_mean_return"] is None  # an interrupted run skips it
    assert list(run_dir.glob("*.pt")), "--save-model was asked for but no model was saved"
    assert (run_dir / "progress.csv").read_text().startswith(",".join(PROGRESS_HEADER))


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_float64_observations_are_accepted(spec, tmp_path):
    """MuJoCo gives float64 observations; the float32 networks must take them."""
    box_only = "CartPole-v1" not in spec.envs
    env_id = "tests.fake_envs:Float64Observation" + ("Box" if box_only else "") + "-v0"
    summary, _ = train_in(tmp_path, load_script(spec.name), env_id=env_id, seed=1, **spec.tiny)
    assert summary["eval_mean_return"] == 5.0  # reward 1 for the 5 steps of the time limit


@pytest.mark.skipif(not installed("moviepy", "pygame"), reason="needs the video extras: pip install moviepy pygame")
@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_capture_video_writes_videos(spec, tmp_path):
    overrides = {**spec.tiny, "eval_episodes": 1}
    _, run_dir = train_in(tmp_path, load_script(spec.name), env_id=spec.envs[0], capture_video=True, **overrides)
    videos = list((tmp_path / "videos" / run_dir.name).glob("*.mp4"))
    assert videos and all(v.stat().st_size > 1000 for v in videos), videos


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_capture_video_without_extras_is_one_error_line(spec, tmp_path):
    """Hide moviepy (as if not installed): one line naming what to install, exit 2."""
    flags = cli_flags(env_id=spec.envs[0], capture_video=True, **spec.tiny)
    code = (
        "import runpy, sys\n"
        "sys.modules['moviepy'] = None\n"
        f"sys.argv = [{spec.name!r}, *{flags!r}]\n"
        f"runpy.run_path({str(ROOT / spec.name)!r}, run_name='__main__')\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert_one_line_error(result, mentions="--capture-video needs moviepy and pygame: pip install moviepy pygame")


# ## What a new user hit in the first hour (issue 14)
def frozen_clock_code(spec, seed: int) -> str:
    """Python that runs `spec` tiny as `__main__` with `time.time` frozen: every run starts in the same second."""
    flags = cli_flags(env_id=spec.envs[0], seed=seed, **spec.tiny)
    return (
        "import runpy, sys, time\n"
        "time.time = lambda: 1_800_000_000.0\n"
        f"sys.argv = [{spec.name!r}, *{flags!r}]\n"
        f"runpy.run_path({str(ROOT / spec.name)!r}, run_name='__main__')\n"
    )


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_two_runs_in_the_same_second_get_two_folders(spec, tmp_path, monkeypatch):
    module = load_script(spec.name)
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    names = set()
    for _ in range(2):
        summary, _ = train_in(tmp_path, module, env_id=spec.envs[0], seed=7, **spec.tiny)
        names.add(summary["run_name"])
    assert len(names) == 2 and len(list((tmp_path / "runs").iterdir())) == 2
    for name in names:
        assert read_summary(tmp_path / "runs" / name)["run_name"] == name


def test_many_processes_started_together_never_share_a_folder(tmp_path):
    """Six processes, one frozen second: six folders, each with its own complete files."""
    spec = SCRIPTS[IDS.index("ppo.py")]
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", frozen_clock_code(spec, seed=1)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(6)
    ]
    for proc in procs:
        assert proc.wait(timeout=240) == 0, proc.stderr.read()[-2000:]
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 6, [d.name for d in run_dirs]
    for run_dir in run_dirs:
        assert read_summary(run_dir)["run_name"] == run_dir.name
        assert read_progress(run_dir)


def test_a_budget_that_is_not_whole_updates_is_said_once(tmp_path):
    spec = SCRIPTS[IDS.index("ppo.py")]
    overrides = {**spec.tiny, "total_timesteps": spec.tiny["total_timesteps"] + 100}
    result = run_cli(spec.name, *cli_flags(env_id=spec.envs[0], **overrides), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stdout.splitlines() if line.startswith("training ")]
    trained = spec.tiny["total_timesteps"]
    assert said == [f"training {trained} of the {trained + 100} steps asked: 2 whole updates of 256 steps"], said


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU fallback")
def test_cuda_without_a_gpu_says_so(tmp_path):
    spec = SCRIPTS[IDS.index("ppo.py")]
    result = run_cli(spec.name, *cli_flags(env_id=spec.envs[0], cuda=True, **spec.tiny), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: --cuda given but no GPU is available: running on the CPU" in result.stderr.splitlines()


@pytest.mark.parametrize("spec", SCRIPTS, ids=IDS)
def test_pasted_into_a_notebook_cell(spec, tmp_path):
    """A cell holds the whole file (with a smaller budget typed in): no `__file__`, Jupyter's argv."""
    source = (ROOT / spec.name).read_text()
    source, n = re.subn(r"(?m)^(    total_timesteps: int = )\S+$", rf"\g<1>{spec.tiny['total_timesteps']}", source)
    assert n == 1, "no `total_timesteps: int = ...` default to edit"
    for field, value in spec.tiny.items():
        source = re.sub(rf"(?m)^(    {field}: int = )\S+$", rf"\g<1>{value}", source)
    code = (
        "import sys\n"
        "sys.argv = ['/usr/lib/python3/site-packages/ipykernel_launcher.py', '-f', '/tmp/kernel-1234.json']\n"
        f"exec(compile({source!r}, '<cell>', 'exec'), {{'__name__': '__main__'}})\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert EVAL_LINE.match(result.stdout.strip().splitlines()[-1])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith(f"{spec.envs[0]}__{spec.name[:-3]}__1__")  # the defaults' env and seed


def test_imported_from_a_notebook(tmp_path):
    """The README's import route: `import ppo; ppo.train(ppo.Args(...))` returns the summary."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import ppo\n"
        "summary = ppo.train(ppo.Args(total_timesteps=512, num_envs=2, num_steps=128, eval_episodes=2))\n"
        "print(sorted(summary))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'eval_mean_return'" in result.stdout.splitlines()[-1]
