"""The benchmark runner's arithmetic, against naive recomputation."""

import math
import random

from benchmarks.common import first_reach, median


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
