"""CPython peers for benches/queue.rs: multiprocessing.Queue and SimpleQueue, one process to
another. Prints one JSON object per line: {"name": ..., "seconds": median per run}.
(Not named queue.py: that would shadow the stdlib module multiprocessing imports.)

Usage: python3 queue.py SMALL_COUNT BIG_BYTES
"""
import json
import multiprocessing as mp
import sys
import time


def sink(q, done):
    # Each run: a count, then that many messages; answers with the count received.
    while True:
        n = q.get()
        if n is None:
            return
        got = 0
        for _ in range(n):
            q.get()
            got += 1
        done.put(got)


def big_sink(q, done):
    while True:
        b = q.get()
        if b is None:
            return
        done.put(len(b))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def small(ctx, make, count, runs):
    q, done = make(), make()
    p = ctx.Process(target=sink, args=(q, done))
    p.start()
    samples = []
    for i in range(runs + 1):
        t = time.perf_counter()
        q.put(count)
        for k in range(count):
            q.put(k)
        assert done.get() == count
        if i > 0:
            samples.append(time.perf_counter() - t)
    q.put(None)
    p.join()
    return median(samples)


def big(ctx, size, runs):
    q, done = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=big_sink, args=(q, done))
    p.start()
    data = b"\x5a" * size
    samples = []
    for i in range(runs + 1):
        t = time.perf_counter()
        q.put(data)
        assert done.get() == size
        if i > 0:
            samples.append(time.perf_counter() - t)
    q.put(None)
    p.join()
    return median(samples)


def main():
    count, size = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("fork")
    for name, make in (("queue_small", ctx.Queue), ("simplequeue_small", ctx.SimpleQueue)):
        print(json.dumps({"name": name, "seconds": small(ctx, make, count, 3)}), flush=True)
    print(json.dumps({"name": "queue_big", "seconds": big(ctx, size, 5)}), flush=True)


if __name__ == "__main__":
    main()
