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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import REACH_NOTE, ROOT, Entry, collect, jobs_for, run_jobs, summarize, table  # noqa: E402


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

    entry = Entry(args.script, args.env_id, args.threshold, args.window, args.peer, extra, args.peer_timesteps)
    out = ROOT / "benchmarks" / "out" / (args.tag or f"{entry.name}-{int(time.time())}")
    jobs = jobs_for(entry, args.seeds, out)
    print(f"{len(jobs)} runs, {args.jobs} at a time, in {out}", flush=True)
    codes = run_jobs([(cmd, cwd) for _, cmd, cwd in jobs], args.jobs)
    failed = [str(cwd) for (_, _, cwd), code in zip(jobs, codes) if code != 0]
    if failed:
        print("failed runs (see log.txt in each):\n  " + "\n  ".join(failed), file=sys.stderr)
    runs = collect(jobs)
    rows = [summarize(label, r, args.threshold, args.window) for label, r in runs.items() if r]
    report = f"`{command}`\n\n" + table(rows, args.env_id, args.threshold, args.window) + f"\n\n{REACH_NOTE}"
    print(report)
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
