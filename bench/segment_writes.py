"""How fast can one 800 MB object be written into /dev/shm? (docs/decisions/0003)."""
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from rtml._object_store import _segments as S

arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
bufs=[]; data = pickle.dumps(arr, protocol=5, buffer_callback=bufs.append)
def w(path):
    t=time.perf_counter(); S.write_segment(path, data, bufs); t1=time.perf_counter(); os.unlink(path); return t1-t
for i in range(3): print("write_segment", round(800/1024/w(f"/dev/shm/rtml_sx_{i:x}"),2), "GB/s")
orig = S._reserve_space
S._reserve_space = lambda fd, size: os.ftruncate(fd, size)
for i in range(3): print("ftruncate only", round(800/1024/w(f"/dev/shm/rtml_sx_{i:x}"),2), "GB/s")
def pwrite(path):
    t=time.perf_counter()
    fd=os.open(path, os.O_CREAT|os.O_EXCL|os.O_RDWR, 0o600)
    mv = memoryview(arr).cast("B")
    n=0
    while n < mv.nbytes: n += os.pwrite(fd, mv[n:n+(64<<20)], n)
    os.close(fd); t1=time.perf_counter(); os.unlink(path); return t1-t
for i in range(3): print("pwrite", round(800/1024/pwrite(f"/dev/shm/rtml_sx_{i:x}"),2), "GB/s")
t=time.perf_counter(); b=arr.copy(); print("memcpy fresh", round(800/1024/(time.perf_counter()-t),2))
t=time.perf_counter(); b[:]=arr; print("memcpy warm", round(800/1024/(time.perf_counter()-t),2))
