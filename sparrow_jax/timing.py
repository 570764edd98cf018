"""Timing for benchmarks: medians after a warm-up (these machines are noisy; compare ratios measured side
by side in one run)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
