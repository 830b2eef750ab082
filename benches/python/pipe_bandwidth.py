"""CPython peer of `foundation` bench 3: one large bytes message through a Pipe.

Usage: python3 pipe_bandwidth.py SIZE_BYTES WARMUP ITERS
The parent `send_bytes` SIZE bytes; the child `recv_bytes` them and replies with the length
(8 bytes, little endian, also with send_bytes). Start method `fork`.
Prints `RESULT bandwidth <median_us> <min_us> <max_us>`: time per message.
"""

import multiprocessing
import statistics
import sys
import time


def sink(conn, parent_end):
    # A forked child inherits the parent's end too: close it, or EOF never comes.
    parent_end.close()
    while True:
        try:
            b = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(len(b).to_bytes(8, "little"))
        del b


def main():
    size, warmup, iters = (int(a) for a in sys.argv[1:4])
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=sink, args=(theirs, ours))
    p.start()
    theirs.close()
    data = b"\x5a" * size
    samples = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        ours.send_bytes(data)
        n = int.from_bytes(ours.recv_bytes(), "little")
        dt = time.perf_counter() - t0
        if n != size:
            raise SystemExit(f"child got {n} bytes, expected {size}")
        if i >= warmup:
            samples.append(dt * 1e6)
    ours.close()
    p.join()
    print(
        f"RESULT bandwidth {statistics.median(samples):.3f} {min(samples):.3f} {max(samples):.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
