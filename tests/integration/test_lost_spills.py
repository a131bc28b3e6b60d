"""A spilled object whose spill file is gone or damaged is lost like a copy on a dead node:
its owner rebuilds it from lineage when it is read (issue 19, item 5), on a cluster node."""

from __future__ import annotations

import glob
import os
import tempfile

import numpy as np
import pytest

import rtml
from conftest import wait_for
from rtml.testing import Cluster

MB = 1024 * 1024


@rtml.remote(max_retries=3)
def filled(value, log):
    with open(log, "a") as f:
        f.write(f"{value}\n")
    return np.full(20 * MB // 8, float(value))


@pytest.fixture
def small_store():
    c = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 64 * MB}
    )
    try:
        c.connect()
        yield c
    finally:
        c.shutdown()


def _spill_file(ref) -> str | None:
    name = format(int(ref.hex(), 16), "x")
    found = glob.glob(os.path.join(tempfile.gettempdir(), "rtml-*", "spill", f"rtml_*_{name}"))
    return found[0] if found else None


def test_missing_or_damaged_spill_files_are_rebuilt_from_lineage(small_store, tmp_path):
    log = str(tmp_path / "runs")
    refs = [filled.remote(i, log) for i in range(5)]  # 100 MB in a 64 MB store: some spill
    ready, _ = rtml.wait(refs, num_returns=5, timeout=120)
    assert len(ready) == 5
    wait_for(lambda: _spill_file(refs[0]) and _spill_file(refs[1]), timeout=60, what="spills")
    os.unlink(_spill_file(refs[0]))  # gone
    with open(_spill_file(refs[1]), "r+b") as f:  # damaged: cut short
        f.truncate(1000)
    for i in (0, 1):
        got = rtml.get(refs[i], timeout=120)
        assert got.shape == (20 * MB // 8,)
        assert got[0] == i
        assert got[-1] == i
        del got
    with open(log) as f:
        runs = f.read().split()
    assert runs.count("0") == 2, runs  # each re-run once
    assert runs.count("1") == 2, runs
    assert rtml.get(refs[4], timeout=120)[0] == 4
