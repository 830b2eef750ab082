"""CPython peer of `foundation` bench 1: Process start+join latency of an empty target.

Usage: python3 spawn_join.py METHOD:WARMUP:ITERS [METHOD:WARMUP:ITERS ...]
Prints one line per start method: `RESULT <method> <median_us> <min_us> <max_us>`.
"""

import multiprocessing
import statistics
import sys
import time


def noop():
    pass


def measure(method, warmup, iters):
    ctx = multiprocessing.get_context(method)
    samples = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        dt = time.perf_counter() - t0
        if p.exitcode != 0:
            raise SystemExit(f"{method}: child exited with {p.exitcode}")
        if i >= warmup:
            samples.append(dt * 1e6)
    return statistics.median(samples), min(samples), max(samples)


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        method, warmup, iters = spec.split(":")
        med, lo, hi = measure(method, int(warmup), int(iters))
        print(f"RESULT {method} {med:.3f} {lo:.3f} {hi:.3f}", flush=True)
