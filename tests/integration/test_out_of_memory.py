"""Out-of-memory protection: a task that allocates without bound is killed by the node's
memory monitor before the machine runs out (the threshold is set just above today's usage),
retried with back-off while it may be, then failed with OutOfMemoryError naming it and its
memory; the driver and the node go on. Without the monitor the hogs below would allocate up
to their cap and then sleep, and every get would time out."""

from __future__ import annotations

import os

import pytest

import rtml
from rtml._node import _memory

HEADROOM = 600 * 2**20  # the threshold sits this far above the memory used at the start
CAP = 6 * 2**30  # a hog never allocates more than this (a safety net if the monitor fails)


@pytest.fixture
def tight_memory(monkeypatch):
    used, total = _memory.system_memory()
    monkeypatch.setenv(_memory.THRESHOLD_ENV, str(min(0.99, (used + HEADROOM) / total)))
    monkeypatch.setenv(_memory.REFRESH_ENV, "50")
    rtml.init(num_cpus=1)
    try:
        yield
    finally:
        rtml.shutdown()


def _hog(marker: str) -> int:
    import time

    with open(marker, "a") as f:
        f.write("attempt\n")
    chunks = []
    while len(chunks) * 32 * 2**20 < CAP:
        chunks.append(b"\x01" * (32 * 2**20))
        time.sleep(0.01)
    time.sleep(120)
    return len(chunks)


def test_a_non_retriable_hog_fails_with_out_of_memory(tight_memory, tmp_path):
    hog = rtml.remote(max_retries=0)(_hog).options(name="hog")
    marker = str(tmp_path / "attempts")
    with pytest.raises(rtml.exceptions.OutOfMemoryError) as info:
        rtml.get(hog.remote(marker), timeout=90)
    err = info.value
    assert "hog" in err.task_name
    assert err.rss > HEADROOM // 4
    assert "killed by the memory monitor" in str(err)
    assert rtml.get(rtml.remote(lambda: "still up").remote(), timeout=60) == "still up"


def test_a_retriable_hog_is_retried_then_fails(tight_memory, tmp_path):
    hog = rtml.remote(max_retries=1)(_hog)
    marker = str(tmp_path / "attempts")
    with pytest.raises(rtml.exceptions.OutOfMemoryError):
        rtml.get(hog.remote(marker), timeout=120)
    with open(marker) as f:
        assert f.read().count("attempt") == 2
    assert rtml.get(rtml.remote(os.getpid).remote(), timeout=60) != os.getpid()
