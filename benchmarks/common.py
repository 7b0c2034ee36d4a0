"""Shared by run.py and results.py: launching seeds in parallel and reading what the runs wrote
(progress.csv and summary.json, the same for our scripts and for sb3_peer.py)."""

import csv
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Entry:
    """One benchmark: a script on an env over seeds, optionally beside an SB3 peer."""

    script: str
    env_id: str
    threshold: float
    window: int = 20
    peer: str | None = None
    extra: list[str] = field(default_factory=list)
    peer_timesteps: int | None = None
    tag: str = ""  # tells apart two entries of one script on one env (e.g. actor_critic's Q and V critics)
    seeds: int | None = None  # this many seeds whatever --seeds says (MuJoCo's 1M-step runs: 3)
    peer_seeds: int | None = None  # the peer on seeds 1 to this only (where one peer run takes over an hour)
    published: dict[str, float] = field(default_factory=dict)  # figures from elsewhere, shown beside ours

    @property
    def name(self) -> str:
        return f"{self.script[:-3]}-{self.env_id}" + (f"-{self.tag}" if self.tag else "")


def jobs_for(entry: Entry, seeds: int, out: Path, save_model: bool = False) -> list[tuple[str, list[str], Path]]:
    """(label, command, working directory) per run; ours and the peer interleaved seed by seed. `save_model`: our
    runs (never the peer's) keep their final weights, runs/<run_name>/<exp_name>.pt."""
    jobs = []
    for seed in range(1, (entry.seeds or seeds) + 1):
        cmd = [sys.executable, str(ROOT / entry.script), "--env-id", entry.env_id, "--seed", str(seed), *entry.extra]
        cmd += ["--save-model"] if save_model else []
        jobs.append((entry.script[:-3], cmd, out / entry.script[:-3] / f"seed{seed}"))
        if entry.peer and seed <= (entry.peer_seeds or seed):
            cmd = [sys.executable, str(ROOT / "benchmarks" / "sb3_peer.py"), "--algo", entry.peer,
                   "--env-id", entry.env_id, "--seed", str(seed)]  # fmt: skip
            if entry.peer_timesteps:
                cmd += ["--total-timesteps", str(entry.peer_timesteps)]
            jobs.append((f"sb3_{entry.peer}", cmd, out / f"sb3_{entry.peer}" / f"seed{seed}"))
    return jobs


def run_jobs(jobs: list[tuple[list[str], Path]], parallel: int) -> list[int]:
    """Run (command, cwd) pairs, `parallel` at a time, output to cwd/log.txt; return exit codes."""
    running, codes, queue = {}, [None] * len(jobs), list(enumerate(jobs))
    while queue or running:
        while queue and len(running) < parallel:
            i, (cmd, cwd) = queue.pop(0)
            cwd.mkdir(parents=True, exist_ok=True)
            log = open(cwd / "log.txt", "w")
            running[i] = (subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT), log)
        for i, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                codes[i] = proc.returncode
                log.close()
                del running[i]
        time.sleep(0.05)
    return codes


def shell_line(cmd: list[str], cwd: Path) -> str:
    """One (command, cwd) job as one shell command line, for a scheduler to run on any machine that sees this
    checkout and `cwd` at the same paths: what run_jobs does with it (the folder made, the output to log.txt there),
    after removing the runs an earlier try of the same line left in it, so a task run again replaces its run."""
    where = shlex.quote(str(cwd))
    return f"mkdir -p {where} && cd {where} && rm -rf runs && {shlex.join(cmd)} > log.txt 2>&1"


# ## A Slurm job array of those lines, from a template in the style of CleanRL's benchmark utility
SLURM_ARRAY, SLURM_COMMANDS = "{{array}}", "{{commands}}"  # a template must hold both


def slurm_script(template: str, lines: list[str], out: Path) -> str:
    """`template` with {{array}} as 0-(N-1) (one array task per line), {{commands}} as the N lines (one quoted
    bash word each, for a bash array that SLURM_ARRAY_TASK_ID indexes), {{len_commands}} as N and {{out}} as the
    folder the runs write to."""
    words = "\n".join(shlex.quote(line) for line in lines)
    text = template.replace(SLURM_ARRAY, f"0-{len(lines) - 1}").replace("{{len_commands}}", str(len(lines)))
    return text.replace("{{out}}", str(out)).replace(SLURM_COMMANDS, words)


def read_run(run_dir: Path) -> dict:
    """The summary of one run plus its episodes as lists (steps, wall times, returns)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    summary["steps"] = [int(r["global_step"]) for r in rows]
    summary["walls"] = [float(r["wall_time"]) for r in rows]
    summary["returns"] = [float(r["episodic_return"]) for r in rows]
    summary["run_dir"] = str(run_dir)
    return summary


def first_reach(steps, walls, returns, threshold: float, window: int) -> tuple[int, float] | None:
    """(global_step, wall_time) at the first episode where the mean of the last `window`
    training episodes is >= threshold; None if it never is."""
    total = 0.0
    for i, ret in enumerate(returns):
        total += ret
        if i >= window:
            total -= returns[i - window]
        if i >= window - 1 and total / window >= threshold - 1e-9:
            return steps[i], walls[i]
    return None


def median(values) -> float:
    """Median where None counts as never (+inf), so unreached seeds pull it up honestly."""
    vals = [math.inf if v is None else v for v in values]
    return statistics.median(vals) if vals else math.nan


def summarize(label: str, runs: list[dict], threshold: float, window: int) -> dict:
    reach = [first_reach(r["steps"], r["walls"], r["returns"], threshold, window) for r in runs]
    return {
        "label": label,
        "n": len(runs),
        "reached": sum(x is not None for x in reach),
        "eval_mean_return": median([r["eval_mean_return"] for r in runs]),
        "steps_to_threshold": median([x and x[0] for x in reach]),
        "seconds_to_threshold": median([x and x[1] for x in reach]),
        "sps": median([r["sps"] for r in runs]),
        "wall_time_s": median([r["wall_time_s"] for r in runs]),
        "train_last": median([sum(r["returns"][-window:]) / len(r["returns"][-window:]) for r in runs if r["returns"]]),
        "per_seed": [
            {"seed": r["seed"], "eval": r["eval_mean_return"], "reach": x, "sps": r["sps"], "wall": r["wall_time_s"]}
            for r, x in zip(runs, reach)
        ],
    }


def collect(jobs) -> dict[str, list[dict]]:
    """label -> the runs of `jobs` that finished (wrote summary.json), read back."""
    runs: dict[str, list[dict]] = {}
    for label, _, cwd in jobs:
        runs.setdefault(label, [])
        runs[label] += [read_run(s.parent) for s in sorted(cwd.glob("runs/*/summary.json"))]
    return runs


REACH_NOTE = (
    "A seed that never reached the threshold ranks after every seed that did, so a median to it is: a number "
    "when all seeds reached it; a number marked * (the middle seed's) when some did not; 'not defined' when "
    "half of the seeds or more did not; 'never' when none did."
)


def reach_cells(reached: int, n: int, steps: float, seconds: float) -> tuple[str, str, str]:
    """The 'reached', 'median steps to it' and 'median s to it' cells, in words (see REACH_NOTE): e.g.
    ("5 of 5", "36,013", "2.1"), ("3 of 5", "36,013*", "2.1*"), ("2 of 5", "not defined", ...), ("0 of 5", "never", ...)."""
    if reached == 0:
        return f"0 of {n}", "never", "never"
    if not math.isfinite(steps):
        return f"{reached} of {n}", "not defined", "not defined"
    mark = "*" if reached < n else ""
    return f"{reached} of {n}", f"{steps:,.0f}{mark}", f"{seconds:.1f}{mark}"


def table(rows: list[dict], env_id: str, threshold: float, window: int) -> str:
    lines = [
        f"| {env_id} | seeds | median eval | reached {threshold:g} (last {window}) | median steps to it "
        "| median s to it | median SPS | median wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reached, steps, seconds = reach_cells(r["reached"], r["n"], r["steps_to_threshold"], r["seconds_to_threshold"])
        lines.append(
            f"| {r['label']} | {r['n']} | {r['eval_mean_return']:.1f} | {reached} | {steps} | {seconds} "
            f"| {r['sps']:,.0f} | {r['wall_time_s']:.1f} |"
        )
    return "\n".join(lines)


# ## Shipped checkpoints: models/<entry>.pt and the table of models/README.md
MODEL_EVAL_EPISODES = 3  # the evaluation of a shipped checkpoint that models/README.md records and its test repeats
MODEL_HEADER = (
    "| file | script | env | flags | seed | eval return (episodes) | eval of the file, 3 episodes | size (kB) |",
    "|---|---|---|---|---|---|---|---|",
)


def without_budget(flags: list[str]) -> list[str]:
    """An entry's flags less `--total-timesteps N`: what evaluating its checkpoint needs (the env, the networks)."""
    cut = [i for i, flag in enumerate(flags) if flag == "--total-timesteps"]
    return [flag for i, flag in enumerate(flags) if i not in cut and i - 1 not in cut]


def model_eval_command(script: str, model: Path, env_id: str, seed: int, flags: list[str]) -> list[str]:
    """Load `model` into `script` and only evaluate it: the first MODEL_EVAL_EPISODES of the evaluation episodes
    that a run with `seed` ends with (the scripts seed episode k of it with seed + 10000 + k)."""
    return [sys.executable, str(ROOT / script), "--model-path", str(Path(model).resolve()), "--total-timesteps", "0",
            "--env-id", env_id, "--seed", str(seed), "--eval-episodes", str(MODEL_EVAL_EPISODES), *flags]  # fmt: skip


def model_eval_return(cmd: list[str], cwd: Path) -> float:
    """Run `model_eval_command`'s `cmd` in `cwd` (its run folder lands there) and return its eval_mean_return."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    (summary,) = Path(cwd).glob("runs/*/summary.json")
    return json.loads(summary.read_text())["eval_mean_return"]


def model_row(row: dict) -> str:
    flags = f"`{' '.join(row['flags'])}`" if row["flags"] else "defaults"
    return (
        f"| {row['file']} | {row['script']} | {row['env_id']} | {flags} | {row['seed']} | {row['eval']:.2f} "
        f"({row['eval_episodes']}) | {row['check']:.2f} | {row['kb']:.1f} |"
    )


def read_model_rows(readme: Path) -> dict[str, dict]:
    """file name -> its row of models/README.md's table (nothing when there is no such file yet)."""
    rows = {}
    for line in readme.read_text().splitlines() if readme.exists() else []:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != len(MODEL_HEADER[1].split("|")) - 2 or not cells[0].endswith(".pt"):
            continue
        name, script, env_id, flags, seed, evaluation, check, kb = cells
        eval_return, episodes = evaluation.rstrip(")").split(" (")
        rows[name] = {
            "file": name, "script": script, "env_id": env_id, "flags": flags.strip("`").split() if flags != "defaults"
            else [], "seed": int(seed), "eval": float(eval_return), "eval_episodes": int(episodes),
            "check": float(check), "kb": float(kb),
        }  # fmt: skip
    return rows
