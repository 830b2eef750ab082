"""CPython peers for benches/managers.rs. Prints one JSON object per line:
{"name": ..., "us": <median microseconds per call or per round trip>}.

- manager_dict_call: one call on a multiprocessing.Manager().dict() proxy (set+get pairs,
  divided by two).
- raw_roundtrip: an 8-byte ping-pong over a Unix socketpair with a forked echo process.
"""
import json
import multiprocessing as mp
import os
import socket
import time


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def dict_calls(d, pairs):
    t = time.perf_counter()
    for i in range(pairs):
        d[i] = i
        if d[i] != i:
            raise SystemExit("mismatch")
    return (time.perf_counter() - t) / (2 * pairs) * 1e6


def raw_roundtrip(n):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        while True:
            m = b.recv(8)
            if not m:
                os._exit(0)
            b.sendall(m)
    b.close()
    msg = b"12345678"
    for _ in range(1000):
        a.sendall(msg)
        a.recv(8)
    out = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            a.sendall(msg)
            a.recv(8)
        out.append((time.perf_counter() - t) / n * 1e6)
    a.close()
    os.waitpid(pid, 0)
    return median(out)


def main():
    with mp.Manager() as m:
        d = m.dict()
        dict_calls(d, 500)
        us = median([dict_calls(d, 2000) for _ in range(5)])
        print(json.dumps({"name": "manager_dict_call", "us": us}), flush=True)
    print(json.dumps({"name": "raw_roundtrip", "us": raw_roundtrip(20000)}), flush=True)


if __name__ == "__main__":
    main()
