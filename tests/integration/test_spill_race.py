"""A reader whose segment was spilled between the node naming it and the read still gets it."""

from __future__ import annotations

import numpy as np

import rtml
from rtml._protocol._payload import SHM


def test_get_after_the_segment_moved_to_disk(runtime):
    rtml.init(num_cpus=1, object_store_memory=64 << 20)
    from rtml._api import _runtime as rt

    ref = rtml.put(np.arange(1 << 20, dtype=np.int64))  # 8 MB, in shared memory
    client = rt.client
    ((kind, path),) = client.get_payloads([ref], timeout=10)  # the node names the segment...
    assert kind == SHM
    rt.store.spill(ref.id)  # ...and the store moves it to disk before this reader maps it
    from rtml._runtime._payload import decode_value

    value = decode_value(kind, path)
    assert value[-1] == (1 << 20) - 1
    assert rtml.get(ref, timeout=10)[123] == 123  # the normal path restores it
