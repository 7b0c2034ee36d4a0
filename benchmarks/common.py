"""Reading runs: progress.csv and summary.json as written by every script and by sb3_peer.py."""

import csv
import json
import math
import statistics
from pathlib import Path


def read_run(run_dir: Path) -> dict:
    """The summary of one run plus its episodes as lists (steps, wall times, returns)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    summary["steps"] = [int(r["global_step"]) for r in rows]
    summary["walls"] = [float(r["wall_time"]) for r in rows]
    summary["returns"] = [float(r["episodic_return"]) for r in rows]
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
