"""What a new user meets in the run itself, past the first command: the exit status of a stopped or failed run,
what a run folder holds (the flags, the per-update metrics), evaluating a checkpoint with nothing else typed,
videos, a user's own env, whole-update default budgets and the relations between sizes.

Most of it lives in the bookkeeping tail, identical in all nine scripts (tests/test_skeleton.py), so it is
checked on two or three scripts; what each script decides for itself (its default budget, the relations its
loop needs) is checked on all nine, in this process.
"""

import csv
import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, cli_flags, installed, load_script, main_in, make_args, read_summary, spy, train_in
from tests.scripts import IDS, SCRIPTS

SPECS = dict(zip(IDS, SCRIPTS, strict=True))


def tiny(name: str, **overrides) -> dict:
    return {**SPECS[name].tiny, **overrides}


def the_run(tmp_path):
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ## A Ctrl-C in the evaluation is kept like one in training: summary written, exit 130
# (a Ctrl-C during training, sent as a real SIGINT, is tests/test_contract.py's)
def test_ctrl_c_in_the_evaluation_keeps_the_model_and_the_summary(tmp_path, monkeypatch):
    ppo = load_script("ppo.py")

    def interrupted(policy, run):
        raise KeyboardInterrupt

    monkeypatch.setattr(ppo, "evaluate", interrupted)
    code, out, err = main_in(tmp_path, ppo, *cli_flags(save_model=True, **tiny("ppo.py")))
    assert code == 130, err
    run_dir = the_run(tmp_path)
    summary = read_summary(run_dir)
    assert summary["interrupted"] is True and summary["eval_mean_return"] is None
    assert summary["global_step"] == SPECS["ppo.py"].tiny["total_timesteps"]
    assert list(run_dir.glob("*.pt")), "the model was not saved"


# ## `--track` without a W&B login: one line, exit 2, nothing written
WANDB_VARIABLES = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_CONFIG_DIR", "WANDB_DIR", "WANDB_BASE_URL", "NETRC",
                   "WANDB_IDENTITY_TOKEN_FILE")  # fmt: skip


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """A home without ~/.netrc or W&B settings, and no W&B variable set: as before a first `wandb login`."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in WANDB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def test_track_without_a_wandb_login_is_one_error_line(tmp_path, no_wandb_login):
    work = tmp_path / "work"
    work.mkdir()
    code, out, err = main_in(work, load_script("ppo.py"), *cli_flags(track=True, **tiny("ppo.py")))
    assert code == 2, err[-2000:]
    line = one_error_line(err)
    assert "wandb login" in line and "WANDB_MODE=offline" in line, line
    assert list(work.iterdir()) == [], "no login, yet something was written"


def test_a_wandb_login_or_an_offline_mode_is_enough(tmp_path, no_wandb_login, monkeypatch):
    ppo = load_script("ppo.py")
    assert ppo.wandb_needs_login()
    (no_wandb_login / ".netrc").write_text("machine api.example.com\n  login user\n  password 0123\n")
    assert ppo.wandb_needs_login(), "an entry for another host is no W&B login"
    (no_wandb_login / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123\n")
    assert not ppo.wandb_needs_login()  # what `wandb login` writes
    (no_wandb_login / ".netrc").unlink()
    settings = no_wandb_login / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nmode = offline\n")  # what `wandb offline` writes
    assert not ppo.wandb_needs_login()
    settings.unlink()
    for mode in ("offline", "disabled", "dryrun"):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert not ppo.wandb_needs_login(), mode
    monkeypatch.setenv("WANDB_MODE", "online")
    assert ppo.wandb_needs_login()
    monkeypatch.setenv("WANDB_API_KEY", "0123")
    assert not ppo.wandb_needs_login()


# ## `--model-path P --total-timesteps 0` with nothing else typed
# Each case: a script, and settings that shape its checkpoint (the networks, the observations they see).
CHECKPOINT_CASES = [
    ("ppo.py", "Pendulum-v1", {"hidden_size": 16}),
    ("ppo_continuous.py", "Pendulum-v1", {"norm_obs": False}),
    ("actor_critic.py", "Pendulum-v1", {"critic": "q"}),
]


@pytest.mark.parametrize("name,env_id,shaping", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_evaluating_a_checkpoint_needs_only_its_path(name, env_id, shaping, tmp_path):
    module = load_script(name)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained, run_dir = train_in(tmp_path / "a", module, env_id=env_id, save_model=True, **tiny(name), **shaping)
    (model,) = run_dir.glob("*.pt")
    code, out, err = main_in(tmp_path / "b", module, "--model-path", str(model), "--total-timesteps", "0",
                             "--eval-episodes", str(trained["eval_episodes"]))  # fmt: skip
    assert code == 0, err[-2000:]
    summary = read_summary(the_run(tmp_path / "b"))
    assert summary["env_id"] == env_id and summary["model_path"] == str(model)
    assert {key: summary["args"][key] for key in shaping} == shaping
    assert summary["eval_mean_return"] == trained["eval_mean_return"]


def test_a_flag_that_contradicts_the_checkpoint_is_one_line_naming_both_values(tmp_path):
    ppo = load_script("ppo.py")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, run_dir = train_in(tmp_path / "a", ppo, env_id="Pendulum-v1", save_model=True, hidden_size=16, **tiny("ppo.py"))
    (model,) = run_dir.glob("*.pt")
    code, out, err = main_in(tmp_path / "b", ppo, "--model-path", str(model), "--total-timesteps", "0",
                             "--hidden-size", "32")  # fmt: skip
    assert code == 2, err[-2000:]
    line = one_error_line(err)
    assert "--hidden-size 16" in line and "--hidden-size 32" in line, line
    assert list((tmp_path / "b").iterdir()) == []
    # From Python no flag was typed: the Args given are the run's, and a contradiction is the same error.
    args = make_args(ppo, env_id="Pendulum-v1", model_path=str(model), total_timesteps=0, hidden_size=32)
    with pytest.raises(ppo.ArgError, match="was saved with --hidden-size 16, this run has --hidden-size 32"):
        ppo.train(args)
    # A switch, the same way: `--no-norm-obs` against a checkpoint that normalizes observations.
    pc = load_script("ppo_continuous.py")
    (tmp_path / "c").mkdir()
    _, run_dir = train_in(tmp_path / "c", pc, env_id="Pendulum-v1", save_model=True, **tiny("ppo_continuous.py"))
    code, _, err = main_in(tmp_path / "b", pc, "--model-path", str(next(run_dir.glob("*.pt"))),
                           "--total-timesteps", "0", "--no-norm-obs")  # fmt: skip
    assert code == 2 and "was saved with --norm-obs, this run has --no-norm-obs" in one_error_line(err)


def test_a_checkpoint_without_its_args_that_does_not_fit_says_where_in_a_few_words(tmp_path):
    """A checkpoint that does not record its flags (written by hand, or by older code) still loads when it fits."""
    ppo = load_script("ppo.py")
    _, run_dir = train_in(tmp_path, ppo, env_id="Pendulum-v1", save_model=True, hidden_size=16, **tiny("ppo.py"))
    saved = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    del saved["meta"]["args"]
    torch.save(saved, tmp_path / "no_args.pt")
    evaluate = dict(tiny("ppo.py"), env_id="Pendulum-v1", model_path=str(tmp_path / "no_args.pt"), total_timesteps=0)
    summary, _ = train_in(tmp_path, ppo, hidden_size=16, **evaluate)
    assert summary["global_step"] == 0
    with pytest.raises(ppo.ArgError) as error:
        train_in(tmp_path, ppo, **evaluate)  # the default hidden size, 64
    message = str(error.value)
    assert message.endswith("its agent does not fit this network (actor.0.bias of shape (16,), expected (64,))")
    assert "size mis" not in message and "\n" not in message, message


# ## summary.json holds the flags; metrics.csv the per-update metrics
def test_summary_holds_the_runs_args(tmp_path):
    rb = load_script("reinforce_baseline.py")
    args = make_args(rb, env_id="CartPole-v1", baseline="mean", **tiny("reinforce_baseline.py"))
    summary, run_dir = train_in(tmp_path, rb, **dataclasses.asdict(args))
    assert summary["args"] == dataclasses.asdict(args)
    assert read_summary(run_dir)["args"] == dataclasses.asdict(args)


def read_metrics(run_dir) -> tuple[list[str], list[dict]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_metrics_csv_holds_what_goes_to_wandb(tmp_path, monkeypatch):
    ppo = load_script("ppo.py")
    calls = spy(monkeypatch, ppo.Run, "log")
    _, run_dir = train_in(tmp_path, ppo, env_id="CartPole-v1", **tiny("ppo.py"))
    header, rows = read_metrics(run_dir)
    sent = [metrics for (_, _, metrics), _, _ in calls]
    assert header == ["global_step", "wall_time", *sent[0], "charts/SPS"]
    assert len(rows) == len(calls) == 2
    for (args, _, _), row in zip(calls, rows, strict=True):
        _, global_step, metrics = args
        assert int(row["global_step"]) == global_step
        for key, value in metrics.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            assert float(row[key]) == pytest.approx(float(value), rel=1e-6), key
        assert float(row["wall_time"]) >= 0 and int(row["charts/SPS"]) > 0


def test_a_metric_that_starts_later_widens_metrics_csv(tmp_path):
    """ddpg logs every 100 steps; with the actor's first step delayed past the first log, its loss starts later."""
    ddpg = load_script("ddpg.py")
    overrides = dict(total_timesteps=300, learning_starts=95, batch_size=16, policy_frequency=10, eval_episodes=1)
    _, run_dir = train_in(tmp_path, ddpg, env_id="Pendulum-v1", **overrides)
    header, rows = read_metrics(run_dir)
    assert [row["global_step"] for row in rows] == ["100", "200", "300"]
    assert header[:2] == ["global_step", "wall_time"] and "losses/actor_loss" in header
    assert rows[0]["losses/actor_loss"] == "" and all(row["losses/actor_loss"] for row in rows[1:])
    assert all(row["losses/qf1_loss"] for row in rows)


# ## Videos: where they went, and no SDL complaint that reads like our own error lines
@pytest.mark.skipif(not installed("moviepy", "pygame"), reason="needs moviepy, pygame")
def test_videos_are_said_and_sdl_keeps_quiet(tmp_path):
    # A machine without a display, where XDG_RUNTIME_DIR is not set: SDL complains of that if asked to draw.
    flags = cli_flags(env_id="CartPole-v1", capture_video=True, **tiny("ppo.py", eval_episodes=1))
    env = {key: value for key, value in os.environ.items() if key not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, str(ROOT / "ppo.py"), *flags], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "XDG_RUNTIME_DIR" not in result.stderr and "error" not in result.stderr.lower(), result.stderr
    run_dir = the_run(tmp_path)
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == f"videos: videos/{run_dir.name}/" and lines[-1].startswith("eval: "), lines
    assert list((tmp_path / "videos" / run_dir.name).glob("*.mp4"))


# ## MuJoCo videos: drawn with no display, filmed by a camera that follows the walker
@pytest.mark.skipif(
    not installed("moviepy", "pygame", "mujoco")
    or sys.platform != "linux"
    or not __import__("ctypes.util").util.find_library("EGL"),
    reason="needs moviepy, pygame, mujoco, and Linux with libEGL",
)
def test_a_mujoco_run_is_filmed_on_a_machine_with_no_display(tmp_path):
    """A Linux machine with no display and MUJOCO_GL unset: GLFW (MuJoCo's default) cannot draw there, the scripts
    pick EGL themselves. (One short update: the untrained hopper falls within tens of steps, a short video.)"""
    flags = "--env-id Hopper-v5 --num-envs 1 --num-steps 64 --total-timesteps 64 --capture-video --eval-episodes 1"
    flags = flags.split()
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "MUJOCO_GL")}
    result = subprocess.run([sys.executable, str(ROOT / "trpo.py"), *flags], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (video,) = (tmp_path / "videos" / the_run(tmp_path).name).glob("*.mp4")
    assert video.stat().st_size > 1000


@pytest.mark.skipif(not installed("mujoco"), reason="needs mujoco")
def test_a_mujoco_video_is_filmed_by_the_models_track_camera_and_other_envs_as_they_are():
    import mujoco

    ppo = load_script("ppo_continuous.py")
    env = ppo.recording_env("Hopper-v5")
    try:
        model = env.unwrapped.model
        track = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
        assert track != -1 and env.unwrapped.mujoco_renderer.camera_id == track  # not -1: the free, fixed view
    finally:
        env.close()
    env = ppo.recording_env("Pendulum-v1")
    assert env.spec.kwargs.get("camera_name") is None and env.render_mode == "rgb_array"
    env.close()


# ## A user's own env, and an evaluation that fails
@pytest.mark.parametrize("name", ["ppo.py", "ddpg.py"])
def test_an_env_that_takes_no_render_mode_trains_and_evaluates(name, tmp_path):
    env_id = "tests.fake_envs:NoRenderMode" + ("Box" if name == "ddpg.py" else "") + "-v0"
    summary, _ = train_in(tmp_path, load_script(name), env_id=env_id, **tiny(name))
    assert summary["eval_mean_return"] == 5.0  # reward 1 for the 5 steps of the time limit


def test_a_failed_evaluation_keeps_what_training_produced(tmp_path, monkeypatch):
    ppo = load_script("ppo.py")

    def broken(policy, run):
        raise RuntimeError("the renderer broke\nand said more on a second line")

    monkeypatch.setattr(ppo, "evaluate", broken)
    code, out, err = main_in(tmp_path, ppo, *cli_flags(save_model=True, **tiny("ppo.py")))
    assert code == 1
    run_dir = the_run(tmp_path)
    assert one_error_line(err) == (
        f"error: the evaluation failed (RuntimeError: the renderer broke); what training produced is in runs/{run_dir.name}"
    )
    summary = read_summary(run_dir)
    assert summary["error"] == "RuntimeError: the renderer broke"
    assert summary["eval_mean_return"] is None and summary["eval_episodes"] == 0
    assert summary["global_step"] == SPECS["ppo.py"].tiny["total_timesteps"]
    assert list(run_dir.glob("*.pt")) and (run_dir / "progress.csv").stat().st_size > 0


# ## Run folders any file system takes
def test_the_run_folder_of_a_module_env_id_has_no_colon(tmp_path):
    env_id = "tests.fake_envs:ConstantReward-v0"
    summary, run_dir = train_in(tmp_path, load_script("ppo.py"), env_id=env_id, seed=2, **tiny("ppo.py"))
    assert run_dir.name.startswith("tests.fake_envs-ConstantReward-v0__ppo__2__"), run_dir.name
    assert summary["env_id"] == env_id and summary["run_name"] == run_dir.name


# ## Per script: the default budget is whole updates
class Started(Exception):
    """Raised in place of `Run.start`: the test needs only what `train` passes to it."""


# Only the scripts whose default update takes more than one step: the others (an episode or one step of each
# env a time: finite_diff, reinforce, reinforce_baseline; actor_critic and ddpg with one env) divide any budget.
ROLLOUTS = [spec for spec in SCRIPTS if spec.name in ("a2c.py", "trpo.py", "ppo.py", "ppo_continuous.py")]


@pytest.mark.parametrize("spec", ROLLOUTS, ids=[spec.name for spec in ROLLOUTS])
def test_the_default_budget_is_a_whole_number_of_updates(spec, tmp_path, monkeypatch):
    module = load_script(spec.name)
    seen = []

    def start(self, steps_per_iteration, **checkpoint):
        seen.append(steps_per_iteration)
        raise Started

    monkeypatch.setattr(module.Run, "start", start)
    monkeypatch.chdir(tmp_path)
    args = module.Args()
    with pytest.raises(Started):
        module.train(args)
    assert seen[0] > 1 and args.total_timesteps % seen[0] == 0, (
        f"{spec.name}: the default {args.total_timesteps} steps are not whole updates of {seen[0]}"
    )


# ## Per script: the relations between sizes that its loop needs
# (case id, script, overrides of its tiny run, a word the error names). Scripts without a case need none
# beyond positive sizes: finite_diff, reinforce and actor_critic take any.
RELATIONS = [
    ("buffer-below-a-batch", "ddpg.py", {"buffer_size": 10}, "--buffer-size 10"),
    ("buffer-below-one-step", "ddpg.py", {"buffer_size": 3, "num_envs": 4, "batch_size": 2}, "--buffer-size 3"),
    ("norm-adv-of-one-advantage", "a2c.py", {"num_envs": 1, "num_steps": 1}, "--norm-adv"),
    ("minibatches-that-do-not-divide", "ppo.py", {"num_minibatches": 3}, "--num-minibatches 3"),
    ("minibatches-that-do-not-divide", "ppo_continuous.py", {"num_minibatches": 3}, "--num-minibatches 3"),
    ("minibatches-that-do-not-divide", "trpo.py", {"num_minibatches": 3}, "--num-minibatches 3"),
    ("norm-adv-of-one-step-minibatches", "ppo.py", {"num_envs": 1, "num_steps": 4, "num_minibatches": 4}, "--norm-adv"),
    (
        "norm-adv-of-one-step-minibatches",
        "ppo_continuous.py",
        {"num_envs": 1, "num_steps": 4, "num_minibatches": 4},
        "--norm-adv",
    ),
    ("a-mean-baseline-of-one-episode", "reinforce_baseline.py", {"num_envs": 1, "baseline": "mean"}, "--num-envs"),
]


@pytest.mark.parametrize("case,name,overrides,mentions", RELATIONS, ids=[f"{c[1]}-{c[0]}" for c in RELATIONS])
def test_sizes_that_do_not_fit_together_are_refused(case, name, overrides, mentions):
    module = load_script(name)
    with pytest.raises(module.ArgError, match=mentions):
        module.check_args(make_args(module, **tiny(name, **overrides)))


def test_a_size_relation_on_the_command_line_is_one_line_and_nothing_written(tmp_path):
    ddpg = load_script("ddpg.py")
    code, out, err = main_in(tmp_path, ddpg, *cli_flags(**tiny("ddpg.py", buffer_size=10)))
    assert code == 2
    assert "--buffer-size 10 must hold a minibatch (--batch-size 32)" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not installed("moviepy", "pygame"), reason="needs moviepy, pygame")
def test_recording_an_env_that_cannot_render_fails_the_evaluation_only(tmp_path, monkeypatch):
    """It trains; the evaluation fails (no render_mode to record with), and SDL's driver setting is put back."""
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    ppo = load_script("ppo.py")
    with pytest.raises(ppo.EvaluationError, match="the evaluation failed \\(TypeError: "):
        train_in(tmp_path, ppo, env_id="tests.fake_envs:NoRenderMode-v0", capture_video=True, **tiny("ppo.py"))
    assert "SDL_VIDEODRIVER" not in os.environ
    summary = read_summary(the_run(tmp_path))
    assert summary["error"].startswith("TypeError: ") and summary["global_step"] > 0
