"""Latency of moving a value inline (through the channel) vs through shared memory.

Run twice, forcing each path:
    RTML_INLINE_THRESHOLD=1000000000 python bench/inline_threshold.py   # everything inline
    RTML_INLINE_THRESHOLD=1 python bench/inline_threshold.py            # everything in shm
"""

import statistics
import time

import numpy as np

import rtml

rtml.init(num_cpus=2)


@rtml.remote
def make(n):
    return np.ones(n, dtype=np.uint8)


@rtml.remote
def consume(a):
    return int(a[0])


def per_call_us(fn, calls=50, rounds=5):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t) / calls * 1e6)
    return statistics.median(out)


for n in [8 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 4 << 20]:
    arr = np.ones(n, dtype=np.uint8)
    for _ in range(20):
        rtml.get(make.remote(n))
    ts = per_call_us(lambda n=n: rtml.get(make.remote(n)))
    tp = per_call_us(lambda arr=arr: rtml.get(rtml.put(arr)))
    ta = per_call_us(lambda arr=arr: rtml.get(consume.remote(arr)))
    print(
        f"{n >> 10:6d} KiB  task-result {ts:8.0f} us  put+get {tp:8.0f} us  "
        f"arg-to-task {ta:8.0f} us"
    )
rtml.shutdown()
