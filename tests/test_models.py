"""The trained agents shipped under models/: each loads into its script and evaluates as models/README.md records,
and stays small; and how benchmarks/results.py picks and records them (the median seed's checkpoint, one row per
entry), on fake run folders and one tiny real run."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from benchmarks import results
from benchmarks.common import ROOT, Entry, model_eval_command, model_eval_return, read_model_rows, without_budget
from benchmarks.results import median_run, ship_models
from tests.test_benchmarks import write_run

MODELS = ROOT / "models"
SHIPPED = read_model_rows(MODELS / "README.md")
MAX_BYTES = 1_000_000


def tolerance(recorded: float) -> float:
    """Loading and evaluating a file reproduces its recorded return exactly on the CPU that recorded it. The margin
    (5% of it, plus 5) is for another CPU's float rounding; a checkpoint that did not load, or loaded into the wrong
    network, is far outside it (CartPole 500 against tens, Pendulum -150 against -1200)."""
    return 0.05 * abs(recorded) + 5.0


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_checkpoint_loads_into_its_script_and_evaluates_as_recorded(name, tmp_path):
    row = SHIPPED[name]
    model = MODELS / name
    assert model.stat().st_size < MAX_BYTES, f"{name}: {model.stat().st_size} bytes"
    cmd = model_eval_command(row["script"], model, row["env_id"], row["seed"], row["flags"])
    got = model_eval_return(cmd, tmp_path)
    assert abs(got - row["check"]) <= tolerance(row["check"]), (name, got, row["check"])


def test_every_shipped_checkpoint_has_its_row_and_every_row_its_checkpoint():
    files = {p.name for p in MODELS.glob("*.pt")}
    assert files == set(SHIPPED)
    assert all(p.stat().st_size < MAX_BYTES for p in MODELS.glob("*"))


# ## The median seed's checkpoint, picked and recorded by results.py
def runs_with(evals: dict[int, float | None]) -> list[dict]:
    return [{"seed": seed, "eval_mean_return": value} for seed, value in evals.items()]


@pytest.mark.parametrize(
    "evals, seed",
    [
        ({1: 300.0, 2: 100.0, 3: 500.0, 4: 200.0, 5: 400.0}, 1),  # 100 200 [300] 400 500
        ({1: 10.0, 2: 40.0, 3: 30.0, 4: 20.0}, 4),  # even: the lower middle, 20 of 20 and 30
        ({1: 5.0, 2: 5.0, 3: 5.0}, 2),  # a tie: by seed
        ({1: None, 2: 7.0, 3: 9.0, 4: 8.0}, 4),  # an interrupted run (no eval) is not a candidate
        ({1: -200.0, 2: -150.0}, 1),
        ({1: None}, None),
    ],
)
def test_median_run_is_the_seed_with_the_median_eval_the_lower_middle_of_an_even_count(evals, seed):
    picked = median_run(runs_with(evals))
    assert (picked and picked["seed"]) == seed


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One tiny real run of ppo.py on CartPole (one update, 3 eval episodes) with --save-model, as results.py runs a
    seed: in the seed's folder, seed 3."""
    cwd = tmp_path_factory.mktemp("real") / "seed3"
    cwd.mkdir()
    cmd = [sys.executable, str(ROOT / "ppo.py"), "--env-id", "CartPole-v1", "--seed", "3", "--total-timesteps", "1024",
           "--eval-episodes", "3", "--save-model"]  # fmt: skip
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    (run_dir,) = cwd.glob("runs/*")
    return run_dir


def test_ship_models_copies_the_median_seeds_checkpoint_and_rewrites_only_its_row(real_run, tmp_path):
    entry = next(e for e in results.SUITE if e.name == "ppo-CartPole-v1")
    out, models = tmp_path / "out", tmp_path / "models"
    real = json.loads((real_run / "summary.json").read_text())["eval_mean_return"]
    # seed 3 (real) is the median of three: seed 1 below it, seed 2 above; their checkpoints are not loadable
    for seed, value in ((1, real - 50), (2, real + 50)):
        write_run(out / entry.name / "ppo", seed, 1024, value)
        (next((out / entry.name / "ppo" / f"seed{seed}" / "runs").iterdir()) / "ppo.pt").write_bytes(b"not a model")
    shutil.copytree(real_run, out / entry.name / "ppo" / "seed3" / "runs" / real_run.name)
    write_run(out / entry.name / "sb3_ppo", 1, 1024, real + 10)  # the peer's: never shipped
    (next((out / entry.name / "sb3_ppo" / "seed1" / "runs").iterdir()) / "ppo.pt").write_bytes(b"peer")
    models.mkdir()
    other = "| trpo-CartPole-v1.pt | trpo.py | CartPole-v1 | defaults | 4 | 500.00 (10) | 500.00 | 20.1 |"
    stale = "| ppo-CartPole-v1.pt | ppo.py | CartPole-v1 | defaults | 9 | 1.00 (10) | 1.00 | 1.0 |"
    (models / "README.md").write_text(
        f"# old\n\n{results.MODEL_HEADER[0]}\n{results.MODEL_HEADER[1]}\n{stale}\n{other}\n"
    )

    ship_models(out, 3, models)

    shipped = models / "ppo-CartPole-v1.pt"
    assert shipped.read_bytes() == (real_run / "ppo.pt").read_bytes()
    assert sorted(p.name for p in models.iterdir()) == ["README.md", "ppo-CartPole-v1.pt"]
    rows = read_model_rows(models / "README.md")
    assert list(rows) == ["trpo-CartPole-v1.pt", "ppo-CartPole-v1.pt"]  # the suite's order: trpo first
    row = rows["ppo-CartPole-v1.pt"]
    assert [row[key] for key in ("script", "env_id", "flags", "seed", "eval_episodes")] == [
        "ppo.py",
        "CartPole-v1",
        [],
        3,
        3,
    ]
    # the run's own 3 eval episodes and the file's, loaded with --total-timesteps 0: the same episodes, the same return
    assert row["eval"] == row["check"] == round(real, 2)
    assert row["kb"] == round(shipped.stat().st_size / 1000, 1) and shipped.stat().st_size < MAX_BYTES
    assert other in (models / "README.md").read_text().splitlines()
    text = (models / "README.md").read_text()
    # below the table, the entries still without a file, each with the command that ships it
    assert "- `ppo-Pendulum-v1`: `python benchmarks/results.py --only ppo-Pendulum-v1 --keep-peers`" in text
    assert "- `trpo-Hopper-v5`: `python benchmarks/results.py --mujoco --only trpo-Hopper-v5`" in text
    assert "- `ppo-CartPole-v1`" not in text and "- `trpo-CartPole-v1`" not in text
    ship_models(out, 3, models)  # the same runs again (as --replot does): nothing to change
    assert (models / "README.md").read_text() == text


def test_model_seed_ships_its_one_seed_only_when_it_evaluates_as_the_recorded_median(real_run, tmp_path, capsys):
    """`--model-seed K`: seed K trained alone, the same command as in the entry's full run (so the same run, the
    real_run fixture's), and shipped only when its eval is the median results.md shows."""
    entry = Entry("ppo.py", "CartPole-v1", 475.0, extra=["--total-timesteps", "1024", "--eval-episodes", "3"])
    out, models = tmp_path / "out", tmp_path / "models"
    real = json.loads((real_run / "summary.json").read_text())["eval_mean_return"]

    assert results.ship_one_seed(entry, 3, out, models, f"{real + 1:.1f}") == 1  # another seed's median
    assert "not the median seed" in capsys.readouterr().out and not models.exists()

    assert results.ship_one_seed(entry, 3, out, models, f"{real:.1f}") == 0
    (run_dir,) = (out / entry.name / "ppo" / "seed3" / "runs").iterdir()  # the earlier try's run replaced
    assert (models / "ppo-CartPole-v1.pt").read_bytes() == (run_dir / "ppo.pt").read_bytes()
    row = read_model_rows(models / "README.md")["ppo-CartPole-v1.pt"]
    assert (row["seed"], row["eval_episodes"], row["flags"]) == (3, 3, ["--eval-episodes", "3"])
    assert row["eval"] == row["check"] == round(real, 2)


PAGE_WITH_HOPPER = """# Benchmark results

## ddpg.py on Hopper-v5

| Hopper-v5 | seeds | median eval | reached 1860 (last 10) | median steps to it | median s to it | median SPS | median wall s |
|---|---|---|---|---|---|---|---|
| ddpg | 3 | 1159.9 | 2 of 3 | 288,127* | 2683.9* | 108 | 2786.9 |

![ddpg-Hopper-v5-300k](curves/ddpg-Hopper-v5-300k.png)
"""


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--model-seed", "2"], "needs --only with one entry"),
        (["--model-seed", "2", "--mujoco", "--only", "ddpg.py"], "needs --only with one entry"),
        (["--model-seed", "2", "--only", "ddpg-Hopper-v5-300k"], "MuJoCo's entries need --mujoco"),
        (["--model-seed", "4", "--mujoco", "--only", "ddpg-Hopper-v5-300k"], "recorded runs are seeds 1 to 3"),
        (["--model-seed", "0", "--mujoco", "--only", "ddpg-Hopper-v5-300k"], "recorded runs are seeds 1 to 3"),
        (["--model-seed", "1", "--mujoco", "--only", "ddpg-Walker2d-v5-300k"], "records no runs of ddpg-Walker2d"),
        (["--model-seed", "1", "--mujoco", "--only", "ddpg-Hopper-v5-300k", "--keep-peers"], "drop --replot"),
    ],
)
def test_model_seed_refuses_what_it_cannot_check_in_one_line(argv, says, monkeypatch, tmp_path, capsys):
    page = tmp_path / "results.md"
    page.write_text(PAGE_WITH_HOPPER)
    monkeypatch.setattr(results, "PAGE", page)
    monkeypatch.setattr(results, "run_jobs", None)  # training anything would fail
    with pytest.raises(SystemExit) as stop:
        results.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and err.count("\n") == 1, err


def test_models_readme_names_every_entry_without_a_checkpoint_and_no_other():
    text = (MODELS / "README.md").read_text()
    rows = read_model_rows(MODELS / "README.md")
    assert sorted(rows) == sorted(p.name for p in MODELS.glob("*.pt"))
    assert text.endswith(results.not_shipped(results.SUITE + results.MUJOCO, rows))
    named = set(re.findall(r"^- `([\w.-]+)`: ", text, flags=re.M))
    assert named == {e.name for e in results.SUITE + results.MUJOCO} - {name[:-3] for name in rows}


def test_results_runs_save_our_models_and_never_the_peers(tmp_path):
    from benchmarks.common import jobs_for

    entry = next(e for e in results.SUITE if e.name == "ppo-CartPole-v1")
    cmds = {label: cmd for label, cmd, _ in jobs_for(entry, 1, tmp_path, save_model=True)}
    assert "--save-model" in cmds["ppo"] and "--save-model" not in cmds["sb3_ppo"]
    assert all("--save-model" not in cmd for _, cmd, _ in jobs_for(entry, 1, tmp_path))


def test_without_budget_drops_only_the_budget():
    assert without_budget(["--gamma", "0.9", "--total-timesteps", "1000000", "--num-envs", "8"]) == [
        "--gamma", "0.9", "--num-envs", "8"
    ]  # fmt: skip
    assert without_budget([]) == []


def test_a_median_checkpoint_that_does_not_evaluate_ships_nothing_and_stops_nothing(tmp_path, capsys):
    """After hours of runs, one unloadable file must not end results.py with a traceback: a line, models/ as it was."""
    out, models = tmp_path / "out", tmp_path / "models"
    write_run(out / "ppo-CartPole-v1" / "ppo", 1, 1024, 20.0)
    (next((out / "ppo-CartPole-v1" / "ppo" / "seed1" / "runs").iterdir()) / "ppo.pt").write_bytes(b"not a model")
    ship_models(out, 1, models)
    assert "ppo-CartPole-v1: its checkpoint did not evaluate, models/ unchanged" in capsys.readouterr().out
    assert not models.exists()


# ## What the pages promise: every checkpoint a page names is shipped, every docs page shows one
def test_every_checkpoint_a_page_names_is_shipped():
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*.py"))]
    named = {(page.name, name) for page in pages for name in re.findall(r"models/([\w.-]+\.pt)", page.read_text())}
    assert named, "no page names a checkpoint"
    assert [pair for pair in sorted(named) if pair[1] not in SHIPPED] == []


def test_every_script_page_shows_a_strip_of_a_shipped_agent():
    import re

    for page in sorted((ROOT / "docs").glob("*.md")):
        if not (ROOT / f"{page.stem}.py").exists():
            continue  # not a script's page
        strips = re.findall(r"\]\(figures/([\w.-]+)\.png\)", page.read_text())
        shown = [name for name in strips if f"{name}.pt" in SHIPPED and name.startswith(f"{page.stem}-")]
        assert shown and (ROOT / "docs" / "figures" / f"{shown[0]}.png").is_file(), page.name


# ## tools/filmstrip.py: which frames of the episode its strip draws
@pytest.mark.parametrize(
    "length, count, picked",
    [
        (500, 6, [0, 100, 200, 299, 399, 499]),  # evenly spaced, the first and the last among them
        (11, 6, [0, 2, 4, 6, 8, 10]),
        (7, 6, [0, 1, 2, 4, 5, 6]),  # rounding never repeats an index here
        (6, 6, [0, 1, 2, 3, 4, 5]),  # as many frames as the strip holds: all of them
        (3, 6, [0, 1, 2]),  # a shorter episode: every frame it has
        (2, 2, [0, 1]),
    ],
)
def test_filmstrip_frame_indices_are_evenly_spaced_from_the_first_to_the_last(length, count, picked):
    from tools.filmstrip import frame_indices

    assert frame_indices(length, count) == picked
    assert all(b - a >= (length - 1) // (count - 1) for a, b in zip(picked, picked[1:]))  # never bunched


def test_filmstrip_refuses_a_strip_of_fewer_than_two_frames_and_an_unshipped_file(tmp_path, capsys):
    from tools.filmstrip import main

    for argv, said in [
        (["models/ppo-CartPole-v1.pt", "--frames", "1"], "--frames must be at least 2"),
        ([str(tmp_path / "ppo-CartPole-v1.pt")], "not a checkpoint with a row in"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert said in capsys.readouterr().err
