"""Benchmark a script over several seeds beside a Stable-Baselines3 peer, in one invocation.

    python benchmarks/run.py ppo.py CartPole-v1 --seeds 5 --threshold 475 --peer ppo
    python benchmarks/run.py ppo.py Pendulum-v1 --threshold -200 -- --total-timesteps 150000

Everything after `--` goes to the script. Runs go to benchmarks/out/<tag>/<label>/seed<k>/ (each
its own working directory), at most `--jobs` processes at a time (default: the number of cores),
ours and the peer interleaved so both see the same load. Prints, and writes to report.md and
results.json there: per label the median eval return, median steps and seconds until the mean
of the last `--window` training episodes first reaches the threshold, and the median SPS.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import first_reach, median, read_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_jobs(jobs: list[tuple[list[str], Path]], parallel: int) -> list[int]:
    """Run (command, cwd) pairs, `parallel` at a time; return their exit codes in order."""
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


def summarize(label: str, run_dirs: list[Path], threshold: float, window: int) -> dict:
    runs = [read_run(d) for d in run_dirs]
    reach = [first_reach(r["steps"], r["walls"], r["returns"], threshold, window) for r in runs]
    return {
        "label": label,
        "seeds": [r["seed"] for r in runs],
        "n": len(runs),
        "reached": sum(x is not None for x in reach),
        "eval_mean_return": median([r["eval_mean_return"] for r in runs]),
        "steps_to_threshold": median([x and x[0] for x in reach]),
        "seconds_to_threshold": median([x and x[1] for x in reach]),
        "sps": median([r["sps"] for r in runs]),
        "wall_time_s": median([r["wall_time_s"] for r in runs]),
        "per_seed": [
            {"seed": r["seed"], "eval": r["eval_mean_return"], "reach": x, "sps": r["sps"], "wall": r["wall_time_s"]}
            for r, x in zip(runs, reach)
        ],
    }


def table(rows: list[dict], env_id: str, threshold: float, window: int) -> str:
    lines = [
        f"| {env_id} | seeds | median eval | reached {threshold:g} (last {window}) | median steps to it "
        "| median s to it | median SPS | median wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['n']} | {r['eval_mean_return']:.1f} | {r['reached']}/{r['n']} "
            f"| {r['steps_to_threshold']:,.0f} | {r['seconds_to_threshold']:.1f} | {r['sps']:,.0f} "
            f"| {r['wall_time_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/run.py " + " ".join(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="a top-level script, e.g. ppo.py")
    parser.add_argument("env_id")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--window", type=int, default=20, help="training episodes averaged for the threshold")
    parser.add_argument("--peer", help="sb3_peer.py --algo for the peer run beside ours (ppo, a2c, trpo, ddpg)")
    parser.add_argument("--peer-timesteps", type=int, help="override the peer's rl-zoo n_timesteps")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tag", default=None, help="output folder name (default: script-env-time)")
    args = parser.parse_args(argv)
    if not (ROOT / args.script).is_file():
        parser.exit(2, f"error: no script {args.script} at {ROOT}\n")

    tag = args.tag or f"{args.script[:-3]}-{args.env_id}-{int(time.time())}"
    out = ROOT / "benchmarks" / "out" / tag
    ours, peer = args.script[:-3], f"sb3_{args.peer}"
    jobs, labels = [], []
    for seed in range(1, args.seeds + 1):
        cmd = [sys.executable, str(ROOT / args.script), "--env-id", args.env_id, "--seed", str(seed), *extra]
        jobs.append((cmd, out / ours / f"seed{seed}"))
        labels.append(ours)
        if args.peer:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "sb3_peer.py"), "--algo", args.peer,
                   "--env-id", args.env_id, "--seed", str(seed)]  # fmt: skip
            if args.peer_timesteps:
                cmd += ["--total-timesteps", str(args.peer_timesteps)]
            jobs.append((cmd, out / peer / f"seed{seed}"))
            labels.append(peer)
    print(f"{len(jobs)} runs, {args.jobs} at a time, in {out}", flush=True)
    codes = run_jobs(jobs, args.jobs)
    failed = [str(cwd) for (cmd, cwd), code in zip(jobs, codes) if code != 0]
    if failed:
        print("failed runs (see log.txt in each):\n  " + "\n  ".join(failed), file=sys.stderr)

    rows = []
    for label in dict.fromkeys(labels):
        dirs = [d for (cmd, cwd), code, lab in zip(jobs, codes, labels) if lab == label and code == 0
                for d in (cwd / "runs").iterdir()]  # fmt: skip
        if dirs:
            rows.append(summarize(label, dirs, args.threshold, args.window))
    report = f"`{command}`\n\n" + table(rows, args.env_id, args.threshold, args.window)
    print(report)
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
