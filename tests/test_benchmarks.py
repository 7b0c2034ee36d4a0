"""The benchmark runner's arithmetic, against naive recomputation; the words of its tables; the
curves and results page rebuilt from kept runs (`results.py --replot`) without training anything; and the grid
handed to a scheduler (`--print-commands`, `--slurm`) and collected back (`--collect`)."""

import json
import math
import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import results
from benchmarks.common import ROOT, Entry, first_reach, jobs_for, median, reach_cells, read_model_rows, shell_line
from benchmarks.results import SUITE, figure, steps_tick


@pytest.fixture(autouse=True)
def scratch_models(monkeypatch, tmp_path):
    """What results.main ships (models/<entry>.pt, models/README.md) and the docs pages' tables it writes go to
    tmp_path, never to the project's models/ and docs/."""
    monkeypatch.setattr(results, "MODELS", tmp_path / "models")
    monkeypatch.setattr(results, "DOCS", tmp_path / "docs")


def naive_first_reach(steps, walls, returns, threshold, window):
    for i in range(window - 1, len(returns)):
        if sum(returns[i - window + 1 : i + 1]) / window >= threshold:
            return steps[i], walls[i]
    return None


def test_first_reach_matches_a_naive_rolling_mean():
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randint(0, 60)
        returns = [rng.choice([0.0, 10.0, 20.0, rng.uniform(0, 20)]) for _ in range(n)]
        steps = sorted(rng.sample(range(10_000), n))
        walls = [s / 1000 for s in steps]
        window, threshold = rng.randint(1, 10), rng.uniform(5, 20)
        assert first_reach(steps, walls, returns, threshold, window) == naive_first_reach(
            steps, walls, returns, threshold, window
        ), trial


def test_first_reach_needs_a_full_window():
    assert first_reach([1, 2], [0.1, 0.2], [500.0, 500.0], 475, 3) is None
    assert first_reach([1, 2, 3], [0.1, 0.2, 0.3], [500.0, 500.0, 500.0], 475, 3) == (3, 0.3)


def test_median_counts_never_as_infinite():
    assert median([1.0, None, 3.0]) == 3.0
    assert median([None, None, 2.0]) == math.inf
    assert median([2.0, 4.0]) == 3.0


@pytest.mark.parametrize(
    "seconds_to_it, cells",
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], ("5 of 5", "3,000", "3.0")),
        ([1.0, 2.0, 3.0, None, None], ("3 of 5", "3,000*", "3.0*")),
        ([1.0, 2.0, None, None, None], ("2 of 5", "not defined", "not defined")),
        ([1.0, 2.0, None, None], ("2 of 4", "not defined", "not defined")),
        ([None] * 5, ("0 of 5", "never", "never")),
    ],
)
def test_reach_cells_say_in_words_how_many_seeds_reached_and_whether_the_median_exists(seconds_to_it, cells):
    steps_to_it = [s and s * 1000 for s in seconds_to_it]
    reached = sum(s is not None for s in seconds_to_it)
    assert reach_cells(reached, len(seconds_to_it), median(steps_to_it), median(seconds_to_it)) == cells


@pytest.mark.parametrize("x, label", [(0, "0"), (999, "999"), (12_500, "12.5k"), (50_000, "50k"), (1_500_000, "1.5M")])
def test_steps_tick_is_short(x, label):
    assert steps_tick(x) == label


# ## Kept runs, as results.py leaves them, and what --replot makes of them
PPO_CARTPOLE = next(e for e in SUITE if e.name == "ppo-CartPole-v1")


def write_run(folder: Path, seed: int, budget: int, final_return: float) -> None:
    """One run's progress.csv (episodes of 500 steps, returns rising to `final_return`) and summary.json."""
    run = folder / f"seed{seed}" / "runs" / f"CartPole-v1__test__{seed}__0"
    run.mkdir(parents=True)
    steps = range(500, budget + 1, 500)
    returns = [final_return * min(1.0, 2 * s / budget) for s in steps]
    rows = "".join(f"{s},{s / 1e4},{r},500\n" for s, r in zip(steps, returns))
    (run / "progress.csv").write_text("global_step,wall_time,episodic_return,episodic_length\n" + rows)
    summary = {"seed": seed, "global_step": budget, "eval_mean_return": final_return, "sps": 1e4, "wall_time_s": 1.0}
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def kept_runs(tmp_path) -> Path:
    """ppo on CartPole: all 5 seeds reach 475 in 200k steps; its SB3 peer, 100k steps, reaches it in 2 of 5."""
    out = tmp_path / "out"
    for seed in range(1, 6):
        write_run(out / PPO_CARTPOLE.name / "ppo", seed, 200_000, 500.0)
        write_run(out / PPO_CARTPOLE.name / "sb3_ppo", seed, 100_000, 500.0 if seed <= 2 else 300.0)
    return out


def replot(monkeypatch, tmp_path, kept: Path, readme: Path | None = None) -> str:
    """`results.py --replot` on the runs kept in `kept`, writing the page and curves under tmp_path; the page."""
    monkeypatch.setattr(results, "OUT", kept)
    monkeypatch.setattr(results, "PAGE", tmp_path / "results.md")
    monkeypatch.setattr(results, "CURVES", tmp_path / "curves")
    if readme is None:
        readme = tmp_path / "README.md"
        readme.write_text(f"# Title\n\n{results.TABLE_START}\nold table\n{results.TABLE_END}\n\n## Next\n")
    monkeypatch.setattr(results, "README", readme)
    monkeypatch.setattr(results, "run_jobs", None)  # training anything would fail
    results.main(["--replot"])
    return results.PAGE.read_text()


def test_replot_rebuilds_the_results_page_from_kept_runs(monkeypatch, kept_runs, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    (kept_runs / "meta.json").write_text(json.dumps({"generated": "Generated by a test."}))
    text = replot(monkeypatch, tmp_path, kept_runs)
    assert text.startswith("# Benchmark results\n\nGenerated by a test. Tables and curves rebuilt from those runs")
    assert "| ppo | 5 | 500.0 | 5 of 5 | 100,000 |" in text
    assert "| sb3_ppo | 5 | 300.0 | 2 of 5 | not defined | not defined |" in text
    assert "'not defined' when half of the seeds or more did not" in text
    assert f"![{PPO_CARTPOLE.name}](curves/{PPO_CARTPOLE.name}.png)" in text
    assert (tmp_path / "curves" / f"{PPO_CARTPOLE.name}.png").stat().st_size > 10_000
    assert [p.name for p in (tmp_path / "curves").iterdir()] == [f"{PPO_CARTPOLE.name}.png"]
    assert [r["reached"] for r in json.loads((kept_runs / "results.json").read_text())[PPO_CARTPOLE.name]] == [5, 2]
    assert (tmp_path / "README.md").read_text().splitlines()[2:9] == [
        results.TABLE_START,
        "| script | env (flags) | ours: eval / seeds that reached it / median steps to it / median s to it / SPS "
        "| SB3 peer: the same |",
        "|---|---|---|---|",
        "| ppo.py | CartPole-v1 | 500 / 5 of 5 / 100k / 10.0 / 10,000 | sb3_ppo: 300 / 2 of 5 / not defined / not defined"
        " / 10,000 |",
        "",
        f"![{PPO_CARTPOLE.name}](benchmarks/curves/{PPO_CARTPOLE.name}.png)",
        results.TABLE_END,
    ]


def test_replot_without_kept_runs_is_one_error_line(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        replot(monkeypatch, tmp_path, tmp_path / "nothing kept")
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("error: no runs kept in")
    assert not (tmp_path / "results.md").exists()


@pytest.mark.parametrize("flags", [["--only", "ppo.py"], ["--keep-peers"], ["--only"]])
def test_replot_with_flags_that_choose_what_to_train_is_one_error_line(monkeypatch, kept_runs, tmp_path, capsys, flags):
    for name, value in (("OUT", kept_runs), ("PAGE", tmp_path / "results.md"), ("CURVES", tmp_path / "c")):
        monkeypatch.setattr(results, name, value)
    monkeypatch.setattr(results, "README", tmp_path / "README.md")  # not the project's, should the check let it by
    with pytest.raises(SystemExit) as stop:
        results.main(["--replot", *flags])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: --replot trains nothing") and err.count("\n") == 1
    assert not (tmp_path / "results.md").exists()


@pytest.mark.parametrize("where", ["the invocation's record", "an entry's record"])
@pytest.mark.parametrize("text", ['{"ran": "cut sho', "[1, 2]", "{}", '{"ran": 1, "generated": 1}', "\udcff"])
@pytest.mark.parametrize("argv", [["--replot"], ["--only", "ppo-Pendulum-v1"], ["--only", PPO_CARTPOLE.name]])
def test_a_kept_record_damaged_by_hand_is_one_error_line_before_anything_trains(
    monkeypatch, kept_runs, tmp_path, capsys, where, text, argv
):
    meta = (
        kept_runs / "meta.json" if where == "the invocation's record" else kept_runs / PPO_CARTPOLE.name / "meta.json"
    )
    meta.write_text(text, errors="surrogateescape")  # the last: a byte that is not UTF-8
    if where == "an entry's record":  # what the other record holds
        (kept_runs / "meta.json").write_text(json.dumps({"generated": "Generated by a test."}))
    else:
        (kept_runs / PPO_CARTPOLE.name / "meta.json").write_text(json.dumps({"ran": "2026-11-26, `a command`"}))
    for name, value in (("OUT", kept_runs), ("PAGE", tmp_path / "results.md"), ("CURVES", tmp_path / "c")):
        monkeypatch.setattr(results, name, value)
    monkeypatch.setattr(results, "README", tmp_path / "README.md")  # not the project's, should the check let it by
    monkeypatch.setattr(results, "run_jobs", None)  # training anything would fail
    with pytest.raises(SystemExit) as stop:
        results.main(argv + ["--keep-peers"] * (argv[-1] == PPO_CARTPOLE.name))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {meta} is not the record") and err.count("\n") == 1
    assert not (tmp_path / "results.md").exists()


def test_curves_have_short_ticks_a_labelled_threshold_and_each_budget(kept_runs):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    import matplotlib.pyplot as plt

    from benchmarks.common import collect, jobs_for

    fig = figure(PPO_CARTPOLE, collect(jobs_for(PPO_CARTPOLE, 5, kept_runs / PPO_CARTPOLE.name)))
    fig.canvas.draw()
    steps_axis = fig.axes[0]
    ticks = [t.get_text() for t in steps_axis.get_xticklabels() if t.get_text()]
    assert "100k" in ticks and all(re.fullmatch(r"-?[\d.]+[kM]?", t) and len(t) <= 5 for t in ticks), ticks
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["ppo: 5 seeds, 200k steps", "sb3_ppo: 5 seeds, 100k steps (rl-zoo budget)", "threshold 475"]
    plt.close(fig)


def test_only_with_a_name_not_in_the_suite_is_one_error_line(monkeypatch, tmp_path, capsys):
    """A typo in --only must not run nothing and rewrite the page: one error line, exit 2, nothing deleted."""
    monkeypatch.setattr(results, "OUT", tmp_path / "out")
    monkeypatch.setattr(results, "run_jobs", None)  # training anything would fail
    with pytest.raises(SystemExit) as stop:
        results.main(["--only", "ppo.py", "ppo-LunarLander-v2"])
    assert stop.value.code == 2
    err = "error: --only ppo-LunarLander-v2: no such script or entry in SUITE (MuJoCo's entries need --mujoco)\n"
    assert capsys.readouterr().err == err
    assert not (tmp_path / "out").exists()


def test_an_entry_can_run_its_peer_on_fewer_seeds_than_its_own(tmp_path):
    """ddpg on LunarLanderContinuous: SB3 DDPG takes 80 min a seed on one core here, so it runs fewer seeds than ours."""
    from benchmarks.common import Entry, jobs_for

    entry = Entry("ddpg.py", "LunarLanderContinuous-v3", 200.0, peer="ddpg", peer_seeds=3)
    runs = [(label, cwd.name) for label, _, cwd in jobs_for(entry, 5, tmp_path)]
    assert runs == [("ddpg", "seed1"), ("sb3_ddpg", "seed1"), ("ddpg", "seed2"), ("sb3_ddpg", "seed2"),
                    ("ddpg", "seed3"), ("sb3_ddpg", "seed3"), ("ddpg", "seed4"), ("ddpg", "seed5")]  # fmt: skip
    entry.peer_seeds = None
    assert [cwd.name for label, _, cwd in jobs_for(entry, 5, tmp_path) if label == "sb3_ddpg"] == [
        f"seed{k}" for k in range(1, 6)
    ]
    assert results.curve_label(entry, "sb3_ddpg", [{"global_step": 300_000}]) == (
        "sb3_ddpg: 1 seed, 300k steps (rl-zoo budget)"
    )


# ## The MuJoCo suite: its own seeds, its own section of results.md and its own README table
HOPPER = next(e for e in results.MUJOCO if e.name == "ppo_continuous-Hopper-v5")


def test_mujoco_entries_run_their_own_seeds_and_need_mujoco_to_run(monkeypatch, tmp_path, capsys):
    from benchmarks.common import jobs_for

    assert [cwd.name for _, _, cwd in jobs_for(HOPPER, 5, tmp_path)] == ["seed1", "seed2", "seed3"]
    assert {"--total-timesteps", "1000000"} <= set(HOPPER.extra)
    monkeypatch.setattr(results, "OUT", tmp_path / "out")
    monkeypatch.setattr(results, "run_jobs", None)  # training anything would fail
    with pytest.raises(SystemExit) as stop:
        results.main(["--only", HOPPER.name])  # without --mujoco: not an entry of the main suite
    assert stop.value.code == 2 and "need --mujoco" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        results.main(["--mujoco", "--only", "ppo-CartPole-v1"])
    assert stop.value.code == 2 and "no such script or entry in MUJOCO" in capsys.readouterr().err


def test_replot_gives_mujoco_its_section_and_its_readme_table(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    out = tmp_path / "out"
    for seed in range(1, 4):
        write_run(out / HOPPER.name / "ppo_continuous", seed, 1_000_000, 2000.0 + 100 * seed)
    write_run(out / PPO_CARTPOLE.name / "ppo", 1, 200_000, 500.0)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\n{results.TABLE_START}\nold\n{results.TABLE_END}\n\n## MuJoCo\n\n"
        f"{results.MUJOCO_START}\nold\n{results.MUJOCO_END}\n\n## Next\n"
    )
    text = replot(monkeypatch, tmp_path, out, readme)
    main, mujoco = text.split("# MuJoCo, one million steps\n")
    assert "ppo.py on CartPole-v1" in main and "Hopper" not in main
    assert f"## ppo_continuous.py on Hopper-v5 ({' '.join(HOPPER.extra)})" in mujoco
    assert "Published, not measured here: SB3 PPO (rl-zoo) 2,410." in mujoco
    assert (
        "| ppo_continuous | 3 | 2200.0 | 0 of 3 | never |" in mujoco
    )  # median eval; the ramp tops out at 2,300 < 2,410
    lines = readme.read_text().splitlines()
    start = lines.index(results.MUJOCO_START)
    assert lines[start + 3 : start + 5] == [
        "| ppo_continuous.py | Hopper-v5 (1,000,000 steps) | 3 | 2,200 | 2,200 | 10,000 | SB3 PPO (rl-zoo) 2,410 |",
        results.MUJOCO_END,
    ]
    assert lines[-1] == "## Next" and "| ppo.py | CartPole-v1 |" in readme.read_text()


def test_entries_without_kept_runs_keep_their_section_and_readme_rows(monkeypatch, tmp_path):
    """A fresh checkout has no benchmarks/out: rerunning one entry rewrites that entry's section, table rows and
    curve and keeps every other entry's as the page and the README had them (in the suite's order)."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    out = tmp_path / "out"
    write_run(out / PPO_CARTPOLE.name / "ppo", 1, 200_000, 500.0)
    a2c = next(e for e in SUITE if e.name == "a2c-CartPole-v1")
    trpo_hopper = next(e for e in results.MUJOCO if e.name == "trpo-Hopper-v5")
    old_a2c = (
        f"## a2c.py on CartPole-v1 (old flags)\n\nRuns: long ago\n\n| a2c | 5 | 321.0 |\n\n![{a2c.name}](curves/x.png)"
    )
    old_hopper = f"## trpo.py on Hopper-v5 (its flags)\n\n| trpo | 3 | 1745.3 |\n\n![{trpo_hopper.name}](curves/h.png)"
    old_ppo = f"## ppo.py on CartPole-v1 (defaults)\n\n| ppo | 5 | 1.0 |\n\n![{PPO_CARTPOLE.name}](curves/p.png)"
    (tmp_path / "results.md").write_text(
        f"# Benchmark results\n\nold intro\n\n{old_ppo}\n\n{old_a2c}\n\n# MuJoCo, one million steps\n\nnote\n\n"
        f"{old_hopper}\n"
    )
    flags = " ".join(a2c.extra)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\n{results.TABLE_START}\n| script | env (flags) | ours | peer |\n|---|---|---|---|\n"
        f"| ppo.py | CartPole-v1 | 1 / old | |\n| a2c.py | CartPole-v1 ({flags}) | 321 / kept | sb3_a2c: 177 |\n"
        f"\n![a](benchmarks/curves/a.png)\n{results.TABLE_END}\n\n"
        f"{results.MUJOCO_START}\n| script | env (budget) | seeds |\n|---|---|---|\n"
        f"| trpo.py | Hopper-v5 (1,000,000 steps) | 3 | 1,745 kept |\n{results.MUJOCO_END}\n\n## Next\n"
    )
    text = replot(monkeypatch, tmp_path, out, readme)
    main, mujoco = text.split("# MuJoCo, one million steps\n")
    assert old_a2c in main and old_ppo not in main and "| ppo | 1 | 500.0 |" in main
    assert main.index("## a2c.py") < main.index("## ppo.py")  # the suite's order, not the old page's
    assert old_hopper in mujoco and mujoco.index(results.MUJOCO_NOTE) < mujoco.index(old_hopper)
    page = readme.read_text()
    assert f"| a2c.py | CartPole-v1 ({flags}) | 321 / kept | sb3_a2c: 177 |" in page
    assert "1 / old" not in page and "| ppo.py | CartPole-v1 | 500 /" in page
    assert f"![{a2c.name}](benchmarks/curves/{a2c.name}.png)" in page
    assert "| trpo.py | Hopper-v5 (1,000,000 steps) | 3 | 1,745 kept |" in page


@pytest.mark.parametrize(
    "args, ran",
    [  # a MuJoCo entry: its 3 seeds, not the invocation's --seeds it ignores
        (
            ["--mujoco", "--only", HOPPER.name],
            f"results.py --jobs 2 --mujoco --only {HOPPER.name}` (3 seeds, the entry's own)",
        ),
        # ddpg's one HalfCheetah run at 1M steps: one seed, said in the singular
        (
            ["--mujoco", "--only", "ddpg-HalfCheetah-v5-1M"],
            "results.py --jobs 2 --mujoco --only ddpg-HalfCheetah-v5-1M` (1 seed, the entry's own)",
        ),
        # ddpg on LunarLanderContinuous: its SB3 peer (80 min a run) on seed 1 beside our 5
        (
            ["--only", "ddpg-LunarLanderContinuous-v3"],
            "results.py --seeds 5 --jobs 2 --only ddpg-LunarLanderContinuous-v3` (the peer on seed 1 only)",
        ),
    ],
)
def test_an_entrys_runs_line_says_how_many_seeds_ran(monkeypatch, tmp_path, args, ran):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")

    def fake_run_jobs(jobs, parallel):  # each job's folder gets a finished run instead of training
        for _, cwd in jobs:
            write_run(cwd.parent, int(cwd.name.removeprefix("seed")), 1_000_000, 2000.0)

    for name, value in (("OUT", tmp_path / "out"), ("PAGE", tmp_path / "results.md"), ("CURVES", tmp_path / "c")):
        monkeypatch.setattr(results, name, value)
    monkeypatch.setattr(results, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text("# Title\n")
    monkeypatch.setattr(results, "run_jobs", fake_run_jobs)
    results.main(["--seeds", "5", "--jobs", "2", *args])
    assert ran in results.PAGE.read_text()


def test_keep_peers_reruns_our_seeds_and_keeps_the_peers_runs_and_says_from_when(monkeypatch, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    entry = next(e for e in SUITE if e.name == "ddpg-LunarLanderContinuous-v3")
    out, asked = tmp_path / "out", []

    def fake_run_jobs(jobs, parallel):  # each job's folder gets a finished run instead of training
        asked.extend(cwd for _, cwd in jobs)
        for _, cwd in jobs:
            write_run(cwd.parent, int(cwd.name.removeprefix("seed")), 300_000, 200.0)

    for name, value in (("OUT", out), ("PAGE", tmp_path / "results.md"), ("CURVES", tmp_path / "c")):
        monkeypatch.setattr(results, name, value)
    monkeypatch.setattr(results, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text("# Title\n")
    monkeypatch.setattr(results, "run_jobs", fake_run_jobs)
    meta = out / entry.name / "meta.json"
    for kept in (
        "nothing",
        "a record of an invocation but no peer runs",
        "peer runs but no record of their invocation",
    ):
        if kept == "a record of an invocation but no peer runs":
            meta.parent.mkdir(parents=True)
            meta.write_text(json.dumps({"ran": "2026-11-26, `old command` (the peer on seed 1)"}))
        if kept == "peer runs but no record of their invocation":
            meta.unlink()
            write_run(out / entry.name / "ddpg", 1, 300_000, -50.0)  # the last invocation's runs: ours, the peer's
            write_run(out / entry.name / "sb3_ddpg", 1, 300_000, 101.0)
        with pytest.raises(SystemExit) as exit:
            results.main(["--only", entry.name, "--keep-peers"])
        assert exit.value.code == 2 and capsys.readouterr().err.count("\n") == 1, kept
    meta.write_text(json.dumps({"ran": "2026-11-26, `old command` (the peer on seed 1)"}))
    for _ in range(2):  # kept twice: still from the invocation that ran them
        asked.clear()
        results.main(["--seeds", "3", "--only", entry.name, "--keep-peers"])
        assert sorted(p.relative_to(out).as_posix() for p in asked) == [f"{entry.name}/ddpg/seed{s}" for s in (1, 2, 3)]
    page = results.PAGE.read_text()
    assert f"--only {entry.name} --keep-peers`; the peer's runs kept from: 2026-11-26, `old command`" in page
    assert page.count("the peer's runs kept from") == 1
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    assert any("sb3_ddpg" in r and "101" in r for r in rows) and any(
        r.startswith("| ddpg ") and "200" in r for r in rows
    )


def test_keep_peers_without_kept_peer_runs_keeps_the_pages_peer_row(monkeypatch, tmp_path):
    """A fresh checkout (no benchmarks/out): `--keep-peers` reruns our seeds and keeps the peer's row of results.md
    and of the README, saying from which runs; the peer is not run."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    entry = next(e for e in SUITE if e.name == "ppo-LunarLander-v3")
    flags, asked = " ".join(entry.extra), []

    def fake_run_jobs(jobs, parallel):  # each job's folder gets a finished run instead of training
        asked.extend(cwd for _, cwd in jobs)
        for _, cwd in jobs:
            write_run(cwd.parent, int(cwd.name.removeprefix("seed")), 1_000_000, 250.0)

    for name, value in (("OUT", tmp_path / "out"), ("PAGE", tmp_path / "results.md"), ("CURVES", tmp_path / "c")):
        monkeypatch.setattr(results, name, value)
    peer_row = "| sb3_ppo | 5 | 258.7 | 1 of 5 | not defined | not defined | 1,202 | 845.4 |"
    results.PAGE.write_text(
        f"# Benchmark results\n\nintro\n\n## ppo.py on LunarLander-v3 ({flags})\n\nRuns: 2026-11-20, `old command`"
        f"\n\n| LunarLander-v3 | seeds |\n|---|---|\n| ppo | 5 | 1.0 |\n{peer_row}\n\n![{entry.name}](curves/x.png)\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        f"{results.TABLE_START}\n| script | env (flags) | ours | peer |\n|---|---|---|---|\n"
        f"| ppo.py | LunarLander-v3 ({flags}) | 1 / old | sb3_ppo: 259 / 1 of 5 / kept |\n{results.TABLE_END}\n"
    )
    monkeypatch.setattr(results, "README", readme)
    monkeypatch.setattr(results, "run_jobs", fake_run_jobs)
    results.main(["--seeds", "2", "--only", entry.name, "--keep-peers"])
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in asked) == [
        f"{entry.name}/ppo/seed{s}" for s in (1, 2)
    ]
    page = results.PAGE.read_text()
    assert "the peer's runs kept from: 2026-11-20, `old command`" in page
    assert "| ppo | 2 | 250.0 |" in page and peer_row in page and "| ppo | 5 | 1.0 |" not in page
    assert "its curve is not drawn here" in page
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| ppo.py"))
    assert row.startswith(f"| ppo.py | LunarLander-v3 ({flags}) | 250 / ") and row.endswith(
        "| sb3_ppo: 259 / 1 of 5 / kept |"
    )


# ## The grid handed to a scheduler: --print-commands and --slurm write the runs to DIR, --collect builds from them
# A tiny entry: ppo.py for 1024 steps on seeds 1 and 2 and its SB3 peer for 512 steps on seed 1 (a few seconds each).
TINY = Entry("ppo.py", "CartPole-v1", 25.0, window=5, peer="ppo", peer_seeds=1, peer_timesteps=512,
             extra="--total-timesteps 1024 --eval-episodes 2".split())  # fmt: skip
WALL_CLOCK = {"median s to it", "median SPS", "median wall s"}  # columns of results.md's tables that wall time sets


def point_results_at(monkeypatch, where: Path) -> None:
    """Everything results.main writes (its runs, results.md, curves, the README's tables, models/) under `where`."""
    where.mkdir(parents=True)
    for name, value in (("OUT", where / "out"), ("PAGE", where / "results.md"), ("CURVES", where / "curves"),
                        ("README", where / "README.md"), ("MODELS", where / "models")):  # fmt: skip
        monkeypatch.setattr(results, name, value)
    (where / "README.md").write_text(f"# Title\n\n{results.TABLE_START}\nold\n{results.TABLE_END}\n")


def report(where: Path) -> dict:
    """What results.main made under `where`, less what wall time sets: each entry's title and table with the columns
    WALL_CLOCK dropped; the README's results table with each cell's 'median s to it' and SPS dropped; the curves'
    names; models/README.md's rows (every cell) and the shipped checkpoints' bytes."""
    page, tables, cut = (where / "results.md").read_text().splitlines(), [], []
    for line in page:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("## "):
            tables.append([line])
        elif line.startswith("| ") and "median eval" in line:
            cut = [i for i, cell in enumerate(cells) if cell in WALL_CLOCK]
        if line.startswith("|"):
            tables[-1].append([cell for i, cell in enumerate(cells) if i not in cut])
    readme = (where / "README.md").read_text()
    rows = readme[readme.index(results.TABLE_START) : readme.index(results.TABLE_END)].splitlines()[3:]
    rows = [re.sub(r" / ([\d.*]+|never|not defined) / ([\d,]+)( \||$)", r"\3", row) for row in rows]
    models = where / "models"
    return {
        "tables": tables, "readme": rows, "curves": sorted(p.name for p in (where / "curves").iterdir()),
        "models": read_model_rows(models / "README.md"), "checkpoints": {p.name: p.read_bytes() for p in models.glob("*.pt")},
    }  # fmt: skip


def test_the_printed_commands_run_by_a_plain_loop_and_collected_give_the_report_of_running_the_entry_here(
    monkeypatch, tmp_path, capsys
):
    """A scheduler's part played by a loop over the printed lines: the same tables (their wall-clock columns
    aside), README rows, curves and shipped checkpoint as results.py's own pool gives."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -r requirements-dev.txt")
    monkeypatch.setattr(results, "SUITE", [TINY])
    monkeypatch.setattr(results, "MUJOCO", [])
    point_results_at(monkeypatch, tmp_path / "here")
    results.main(["--seeds", "2", "--jobs", "2"])
    here = report(tmp_path / "here")

    point_results_at(monkeypatch, tmp_path / "there")
    monkeypatch.setattr(results, "run_jobs", None)  # training anything in results.py itself would fail
    grid = tmp_path / "grid"
    capsys.readouterr()
    results.main(["--print-commands", "--out", str(grid), "--seeds", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # ours on seeds 1 and 2, the peer on seed 1
    for line in lines:
        subprocess.run(line, shell=True, check=True, cwd=tmp_path)
    assert not (tmp_path / "there" / "results.md").exists()
    results.main(["--collect", str(grid)])
    there = report(tmp_path / "there")

    assert there == here
    assert [row[0] for row in here["tables"][0][3:]] == ["ppo", "sb3_ppo"] and here["models"] and here["checkpoints"]
    assert sorted(p.relative_to(grid).as_posix() for p in grid.glob("*/*/seed*")) == [
        f"{TINY.name}/ppo/seed1", f"{TINY.name}/ppo/seed2", f"{TINY.name}/sb3_ppo/seed1"
    ]  # fmt: skip
    page = (tmp_path / "there" / "results.md").read_text()
    assert "`python benchmarks/results.py --print-commands --out DIR --seeds 2`" in page
    assert "built from those runs with `--collect`" in page
    assert not (tmp_path / "there" / "out").exists()


def test_the_slurm_script_from_the_shipped_template_runs_one_printed_command_per_array_task(
    monkeypatch, tmp_path, capsys
):
    """ppo on CartPole over 3 seeds beside its peer: an array of 6 tasks, task i running the i-th printed line (bash
    runs the script with a stand-in for srun that records what it was given)."""
    point_results_at(monkeypatch, tmp_path / "results")
    entry, grid = next(e for e in SUITE if e.name == "ppo-CartPole-v1"), tmp_path / "grid"
    results.main(["--print-commands", "--out", str(grid), "--seeds", "3", "--only", entry.name])
    printed = capsys.readouterr().out.splitlines()
    jobs = jobs_for(entry, 3, grid / entry.name, save_model=True)  # what results.py's own pool would run
    assert printed == [shell_line(cmd, cwd) for _, cmd, cwd in jobs] and len(printed) == 6
    template = ROOT / "benchmarks" / "slurm_template.sh"
    results.main(["--slurm", str(template), "--out", str(grid), "--seeds", "3", "--only", entry.name])
    script = grid / "results.slurm"
    assert f"sbatch {script}" in capsys.readouterr().out
    text = script.read_text()
    assert re.findall(r"^#SBATCH --array=(.*)$", text, re.M) == ["0-5"] and "{{array}}" not in text
    (tmp_path / "bin").mkdir()
    srun = tmp_path / "bin" / "srun"
    srun.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_GOT"\n')
    srun.chmod(0o755)
    for task, line in enumerate(printed):
        got = tmp_path / f"task{task}"
        env = {**os.environ, "PATH": f"{srun.parent}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": str(task),
               "SRUN_GOT": str(got)}  # fmt: skip
        subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True)
        assert got.read_text() == f"bash\n-c\n{line}\n", task
    assert not (tmp_path / "results" / "results.md").exists() and not list(grid.glob("*/*/seed*"))


@pytest.mark.parametrize(
    "argv, err",
    [
        (["--print-commands"], "error: --print-commands and --slurm need --out DIR"),
        (["--slurm", "TEMPLATE"], "error: --print-commands and --slurm need --out DIR"),
        (["--out", "GRID"], "error: --out DIR is where --print-commands' or --slurm's runs go"),
        (["--slurm", "NO_PLACEHOLDER", "--out", "GRID"], "error: --slurm {tmp}/template.sh: the template has no {{{{"),
        (["--slurm", "{tmp}/missing.sh", "--out", "GRID"], "error: --slurm {tmp}/missing.sh: cannot read"),
        (["--collect", "GRID"], "error: no runs under {tmp}/grid to collect"),
        (["--collect", "GRID", "--only", "ppo.py"], "error: --collect trains nothing"),
        (["--collect", "GRID", "--replot"], "error: --replot rebuilds from benchmarks/out/results, --collect from"),
        (["--print-commands", "--out", "GRID", "--keep-peers"], "error: --keep-peers keeps runs here"),
        (["--print-commands", "--out", "GRID", "--replot"], "error: --replot trains nothing"),
    ],
)
def test_bad_input_to_the_scheduler_flags_is_one_error_line_and_nothing_written(
    monkeypatch, tmp_path, capsys, argv, err
):
    point_results_at(monkeypatch, tmp_path / "results")
    monkeypatch.setattr(results, "run_jobs", None)  # training anything would fail
    template = tmp_path / "template.sh"
    template.write_text("#!/bin/bash\n#SBATCH --array=0-1\nsrun python ppo.py --seed $SLURM_ARRAY_TASK_ID\n")
    (tmp_path / "grid").mkdir()  # an empty folder: nothing to collect
    subs = {"GRID": str(tmp_path / "grid"), "TEMPLATE": str(template), "NO_PLACEHOLDER": str(template)}
    with pytest.raises(SystemExit) as stop:
        results.main([subs.get(a, a.format(tmp=tmp_path)) for a in argv])
    got = capsys.readouterr().err
    assert stop.value.code == 2 and got.startswith(err.format(tmp=tmp_path)) and got.count("\n") == 1, got
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["README.md", "grid", "results", "template.sh"]


# ## The docs pages' results tables: written by results.py from the README's rows, so the two never disagree
def test_the_docs_pages_results_tables_are_the_readmes_rows(tmp_path):
    """Every entry's block on its docs page is what results.py writes from the README's row (and, for MuJoCo, the
    flags of its section in results.md): the docs pages never disagree with the tables."""
    import shutil

    readme = (ROOT / "README.md").read_text()
    cells = results.entry_cells({}, readme.split(results.TABLE_START, 1)[1].split(results.TABLE_END, 1)[0])
    assert set(cells) == {e.name for e in SUITE}
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    results.rewrite_docs(tmp_path / "docs", cells, results.kept_sections(ROOT / "benchmarks" / "results.md"), readme)
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (tmp_path / "docs" / page.name).read_text() == page.read_text(), page.name
    entries = SUITE + results.MUJOCO
    pages = {e.name: (ROOT / "docs" / f"{e.script[:-3]}.md").read_text() for e in entries}
    assert {e.name for e in entries if results.DOCS_START.format(e.name) in pages[e.name]} == {e.name for e in entries}


def test_rewrite_docs_writes_the_marked_blocks_of_each_entry(tmp_path):
    start = results.DOCS_START.format(PPO_CARTPOLE.name)
    hopper = results.DOCS_START.format("trpo-Hopper-v5")
    (tmp_path / "ppo.md").write_text(f"# ppo\n\n{start}\n| old |\n{results.DOCS_END}\n\nafter\n")
    (tmp_path / "trpo.md").write_text(f"# trpo\n\n{hopper}\nold\n{results.DOCS_END}\n")
    (tmp_path / "a2c.md").write_text("# a2c, unmarked\n")
    sections = {"trpo-Hopper-v5": "## trpo.py on Hopper-v5 (--norm-obs --total-timesteps 1000000)\n\n| trpo | 3 |"}
    row = "| trpo.py | Hopper-v5 (1,000,000 steps) | 3 | 1,745 | 1,415 | 1,759 | sb3-contrib TRPO (rl-zoo) 3,618 |"
    readme = f"{results.MUJOCO_START}\n| script | env (budget) |\n|---|---|\n{row}\n{results.MUJOCO_END}\n"
    cells = {PPO_CARTPOLE.name: ["500 / 5 of 5 / 24k / 2.1 / 11,051", "sb3_ppo: 500 / 4 of 5 / 70k* / 20.3* / 3,240"]}
    results.rewrite_docs(tmp_path, cells, sections, readme)
    assert (tmp_path / "ppo.md").read_text() == (
        f"# ppo\n\n{start}\n| | eval | seeds reaching the threshold | median steps to it | median seconds to it | SPS |\n"
        "|---|---|---|---|---|---|\n| ours | 500 | 5 of 5 | 24k | 2.1 | 11,051 |\n"
        f"| SB3 PPO | 500 | 4 of 5 | 70k* | 20.3* | 3,240 |\n{results.DOCS_END}\n\nafter\n"
    )
    assert (tmp_path / "trpo.md").read_text() == (
        f"# trpo\n\n{hopper}\n```bash\npython trpo.py --env-id Hopper-v5 --norm-obs --total-timesteps 1000000\n```\n\n"
        "| seeds | median eval | median last training mean | SPS | published (not measured here) |\n|---|---|---|---|---|\n"
        f"| 3 | 1,745 | 1,415 | 1,759 | sb3-contrib TRPO (rl-zoo) 3,618 |\n{results.DOCS_END}\n"
    )
    assert (tmp_path / "a2c.md").read_text() == "# a2c, unmarked\n"
