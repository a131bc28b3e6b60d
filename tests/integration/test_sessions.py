"""Several runtimes, one after another, in one driver process."""

from __future__ import annotations

import numpy as np

import rtml


def test_stale_ref_from_an_earlier_session_does_not_touch_the_current_one(runtime):
    rtml.init(num_cpus=1)
    stale = rtml.put(np.ones(1 << 18))
    rtml.shutdown()
    rtml.init(num_cpus=1)
    fresh = rtml.put(np.ones(1 << 18))
    assert stale != fresh  # ids are unique for the life of the process
    del stale  # its release must not free the new session's object
    assert rtml.get(fresh, timeout=30).sum() == 1 << 18
    assert rtml.get(rtml.put(None), timeout=30) is None  # the node has seen the release
    assert rtml.get(fresh, timeout=30).sum() == 1 << 18
