"""CPython peer of `foundation` bench 2: multiprocessing.Pipe ping-pong of a small int.

Usage: python3 pipe_roundtrip.py ROUND_TRIPS BATCHES WARMUP_ROUND_TRIPS
The child echoes every object it receives (start method `fork`, the Linux default in 3.11).
Prints `RESULT roundtrip <median_us> <min_us> <max_us>`: per round trip, over the batches.
"""

import multiprocessing
import statistics
import sys
import time


def echo(conn, parent_end):
    # A forked child inherits the parent's end too: close it, or EOF never comes.
    parent_end.close()
    while True:
        try:
            x = conn.recv()
        except EOFError:
            return
        conn.send(x)


def main():
    rts, batches, warmup = (int(a) for a in sys.argv[1:4])
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=echo, args=(theirs, ours))
    p.start()
    theirs.close()
    send, recv = ours.send, ours.recv
    for i in range(warmup):
        send(i)
        recv()
    per_rt = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for i in range(rts):
            send(i)
            if recv() != i:
                raise SystemExit("echo mismatch")
        per_rt.append((time.perf_counter() - t0) / rts * 1e6)
    ours.close()
    p.join()
    print(
        f"RESULT roundtrip {statistics.median(per_rt):.4f} {min(per_rt):.4f} {max(per_rt):.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
