"""Steps per second on the CPU and with `--cuda`, same machine, same invocation: the README's GPU table.

    python benchmarks/cuda_speed.py --repeats 3 --out benchmarks/out/cuda_speed.md

Each case runs `--repeats` times in each mode, alternating (CPU, GPU, CPU, GPU, ...), one run at a
time, so both modes see the same machine. A run's SPS is its summary's: env steps over the training
wall time (torch's import and CUDA's start are before the clock starts). No evaluation episodes.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [  # (script, env, steps): the README's three, at budgets of a few seconds each on a CPU
    ("ppo.py", "CartPole-v1", 50_000),
    ("ppo_continuous.py", "Pendulum-v1", 30_000),
    ("ddpg.py", "Pendulum-v1", 4_000),  # 1,000 random steps (learning_starts), then one gradient step per env step
]


def one_run(script: str, env_id: str, steps: int, cuda: bool, seed: int) -> dict:
    flags = ["--env-id", env_id, "--total-timesteps", str(steps), "--seed", str(seed), "--eval-episodes", "0"]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [sys.executable, str(ROOT / script), *flags, "--cuda" if cuda else "--no-cuda"],
            cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
        if result.returncode != 0:
            sys.exit(f"{script} {' '.join(flags)} cuda={cuda} failed:\n{result.stderr[-2000:]}")
        (run_dir,) = Path(cwd, "runs").iterdir()
        return json.loads((run_dir / "summary.json").read_text())


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{gpu}; CPU {cpu}, {os.cpu_count()} cores; torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here, row by row")
    parser.add_argument("--only", nargs="+", default=None, help="these scripts only, in this order")
    args = parser.parse_args()
    cases = CASES if args.only is None else [c for name in args.only for c in CASES if c[0] == name]
    if args.only is not None and len(cases) != len(args.only):
        parser.error(f"--only takes scripts among {[c[0] for c in CASES]}")
    lines = [
        f"Machine: {machine()}.",
        "",
        "| script | env | steps | CPU SPS | `--cuda` SPS | GPU / CPU | runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for script, env_id, steps in cases:
        sps = {True: [], False: []}
        for k in range(args.repeats):
            for cuda in (False, True):
                sps[cuda].append(one_run(script, env_id, steps, cuda, seed=k + 1)["sps"])
                print(f"{script} {env_id} cuda={cuda} seed={k + 1}: {sps[cuda][-1]:.0f} SPS", flush=True)
        cpu, gpu = statistics.median(sps[False]), statistics.median(sps[True])
        lines.append(
            f"| {script} | {env_id} | {steps:,} | {cpu:,.0f} | {gpu:,.0f} | {gpu / cpu:.2f} | "
            f"median of {args.repeats}, seeds 1-{args.repeats} |"
        )
        print(lines[-1], flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
