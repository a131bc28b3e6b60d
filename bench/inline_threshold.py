"""Latency of moving a value inline (through the channel) vs through shared memory.

Run twice, forcing each path:
    RTML_INLINE_THRESHOLD=1000000000 python bench/inline_threshold.py   # everything inline
    RTML_INLINE_THRESHOLD=1 python bench/inline_threshold.py            # everything in shm
"""
import os, sys, time, statistics
import numpy as np
import rtml
rtml.init(num_cpus=2)
@rtml.remote
def make(n): return np.ones(n, dtype=np.uint8)
@rtml.remote
def consume(a): return int(a[0])
res = {}
for n in [8<<10, 32<<10, 64<<10, 128<<10, 256<<10, 1<<20, 4<<20]:
    arr = np.ones(n, dtype=np.uint8)
    for _ in range(20): rtml.get(make.remote(n))
    ts=[]
    for _ in range(5):
        t=time.perf_counter()
        for _ in range(50): rtml.get(make.remote(n))
        ts.append((time.perf_counter()-t)/50*1e6)
    tp=[]
    for _ in range(5):
        t=time.perf_counter()
        for _ in range(50): rtml.get(rtml.put(arr))
        tp.append((time.perf_counter()-t)/50*1e6)
    ta=[]
    for _ in range(5):
        t=time.perf_counter()
        for _ in range(50): rtml.get(consume.remote(arr))
        ta.append((time.perf_counter()-t)/50*1e6)
    print(f"{n>>10:6d} KiB  task-result {statistics.median(ts):8.0f} us  put+get {statistics.median(tp):8.0f} us  arg-to-task {statistics.median(ta):8.0f} us")
rtml.shutdown()
