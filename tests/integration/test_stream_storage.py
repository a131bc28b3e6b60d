"""Where a dataflow's state comes from and goes: join tables from CSV and DuckDB, checkpoint
stores in a directory (atomic by rename) and Redis (one MULTI/EXEC), read back whole, with only
the newest few kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rtml.stream._checkpoint import KEEP, open_store
from rtml.stream._errors import ConnectorError


@pytest.mark.parametrize("kind", ["dir", "redis"])
def test_a_store_returns_the_newest_checkpoint_whole(kind, tmp_path, redis_address):
    where = str(tmp_path / "ckpt") if kind == "dir" else f"redis://{redis_address}/t"
    store = open_store(where, "flow")
    try:
        assert store.latest() is None
        for n in range(1, 6):
            store.write(n, {"parts": {"s": [{"n": n, "blob": b"x" * 1000}]}})
        n, data = store.latest()
        assert n == 5
        assert data["parts"]["s"][0]["n"] == 5
        if kind == "dir":
            kept = sorted(d for d in os.listdir(where) if d.startswith("ckpt-"))
            assert len(kept) == KEEP
            # A write that died half-way leaves a .tmp directory that nothing reads.
            os.makedirs(os.path.join(where, "ckpt-000000006.tmp"))
            assert store.latest()[0] == 5
        # A new store on the same place (a restarted driver) finds it.
        again = open_store(where, "flow")
        assert again.latest()[0] == 5
        getattr(again, "close", lambda: None)()
    finally:
        getattr(store, "close", lambda: None)()


def test_an_unreachable_redis_store_fails_at_once_naming_it():
    with pytest.raises(ConnectorError, match=r"redis://127\.0\.0\.1:1"):
        open_store("redis://127.0.0.1:1", "flow")


def test_tables_load_from_csv_and_duckdb(tmp_path):
    # In a child process: pyarrow's CSV reader starts a thread pool (with a pipe) for good.
    pytest.importorskip("duckdb")
    path = tmp_path / "users.csv"
    path.write_text("user,t,tier\nu1,0,free\nu1,30,pro\nu2,0,gold\n")
    code = f"""
import warnings
warnings.simplefilter("error")
from rtml.stream import Table
from rtml.stream._join import AsOfIndex
for table in (Table.from_csv({str(path)!r}, key="user", time="t"),
              Table.from_duckdb("SELECT * FROM read_csv_auto('{path}')", key="user", time="t")):
    idx = AsOfIndex(timed=True)
    idx.replace(table.load())
    print(idx.lookup("u1", 10)["tier"], idx.lookup("u1", 31)["tier"], idx.lookup("u2", 1)["tier"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["free pro gold", "free pro gold"]
