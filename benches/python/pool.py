"""CPython multiprocessing.Pool peers for benches/pool.rs. Prints one JSON object per line."""
import json
import multiprocessing as mp
import sys
import time


def square(x):
    return x * x


def spin(n):
    # About 1 ms of CPU, calibrated by the caller.
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def timed(f, runs):
    f()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return median(out)


def main():
    method = sys.argv[1] if len(sys.argv) > 1 else "fork"
    mp.set_start_method(method)
    # Calibrate spin to ~1 ms.
    n = 1000
    while True:
        t = time.perf_counter()
        spin(n)
        d = time.perf_counter() - t
        if d > 0.0005:
            break
        n *= 2
    spin_n = int(n * 0.001 / d)
    with mp.Pool(2) as pool:
        for size in (10**4, 10**5, 10**6):
            data = list(range(size))
            s = timed(lambda: pool.map(square, data), 5 if size < 10**6 else 3)
            print(json.dumps({"name": f"map_{size}", "seconds": s}), flush=True)
        def apply10k():
            rs = [pool.apply_async(square, (i,)) for i in range(10**4)]
            for r in rs:
                r.get()
        print(json.dumps({"name": "apply_async_10000", "seconds": timed(apply10k, 3)}), flush=True)
        s = timed(lambda: pool.map(spin, [spin_n] * 200), 3)
        serial = timed(lambda: [spin(spin_n) for _ in range(200)], 3)
        print(json.dumps({"name": "spin_200", "seconds": s, "serial": serial}), flush=True)

    def create_drop():
        p = mp.Pool(2)
        p.close()
        p.join()
    print(json.dumps({"name": "pool_create", "seconds": timed(create_drop, 5)}), flush=True)


if __name__ == "__main__":
    main()
