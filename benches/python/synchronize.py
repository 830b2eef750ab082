"""CPython multiprocessing peers for benches/synchronize.rs. Prints one JSON object per line.

Usage: python3 synchronize.py PAIRS INCREMENTS
Rows: seconds per acquire+release pair of Lock, RLock and Semaphore (uncontended, bound
methods in a local loop: the fastest CPython allows), and 2 processes x INCREMENTS locked
increments of a Value, with process start and join ("counter_total") and without them
("counter_loop", between two passes of a Barrier). Start method `fork`, the fastest.
"""
import json
import multiprocessing
import sys
import time


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def pairs(prim, n, runs):
    acquire, release = prim.acquire, prim.release
    out = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        out.append((time.perf_counter() - t) / n)
    return median(out[1:])


def increment(value, n, barrier):
    if barrier is not None:
        barrier.wait()
    lock = value.get_lock()
    for _ in range(n):
        with lock:
            value.value += 1
    if barrier is not None:
        barrier.wait()


def counter(ctx, n, timed_loop):
    value = ctx.Value("q", 0)
    barrier = ctx.Barrier(3) if timed_loop else None
    t = time.perf_counter()
    ps = [ctx.Process(target=increment, args=(value, n, barrier)) for _ in range(2)]
    for p in ps:
        p.start()
    if timed_loop:
        barrier.wait()
        t = time.perf_counter()
        barrier.wait()
        loop = time.perf_counter() - t
    for p in ps:
        p.join()
    total = time.perf_counter() - t
    if value.value != 2 * n:
        raise SystemExit(f"lost updates: {value.value} != {2 * n}")
    return loop if timed_loop else total


def main():
    n, incs = int(sys.argv[1]), int(sys.argv[2])
    ctx = multiprocessing.get_context("fork")
    for name, prim in (("lock", ctx.Lock()), ("rlock", ctx.RLock()), ("semaphore", ctx.Semaphore(1))):
        print(json.dumps({"name": name, "seconds": pairs(prim, n, 5)}), flush=True)
    total = median([counter(ctx, incs, False) for _ in range(3)])
    print(json.dumps({"name": "counter_total", "seconds": total}), flush=True)
    loop = median([counter(ctx, incs, True) for _ in range(3)])
    print(json.dumps({"name": "counter_loop", "seconds": loop}), flush=True)


if __name__ == "__main__":
    main()
