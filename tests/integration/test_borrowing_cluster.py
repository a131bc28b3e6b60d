"""A ref borrowed on a third node after the value that carried it was let go of (issue 19,
item 3), on a real cluster of three nodes. Node C's borrow registrations are held back by the
test hook (``RTML_TEST_HOLD_BORROWS``) until the test opens the gate, so the registration is
late at the owner every time; the value C read must keep the ref alive until it is counted."""

from __future__ import annotations

import pytest

import rtml
from conftest import wait_for
from rtml._node._cluster._ownership import HOLD_ENV
from rtml.testing import Cluster
from rtml.util.state import list_objects


@pytest.fixture
def three(tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        b = c.add_node(num_cpus=1, resources={"b": 1})
        monkeypatch.setenv(HOLD_ENV, str(gate))  # (only node C inherits it)
        cn = c.add_node(num_cpus=1, resources={"c": 1})
        monkeypatch.delenv(HOLD_ENV)
        c.connect()
        yield c, b.node_id, cn.node_id, gate
    finally:
        gate.touch()
        c.shutdown()


@rtml.remote(resources={"b": 1})
def make():
    return [rtml.put("inner")]  # x: owned by node B, inside the result (owned by the driver's)


@rtml.remote(resources={"c": 1})
class Holder:
    def keep(self, v):
        self.x = v[0]  # unpickled on node C: C borrows x from B
        return True

    def read(self):
        return rtml.get(self.x, timeout=60)


def test_ref_read_on_a_third_node_survives_its_container_being_freed(three):
    c, b_id, c_id, gate = three
    a_id = c.head_node.node_id
    holder = Holder.remote()
    y = make.remote()
    assert rtml.get(holder.keep.remote(y), timeout=60) is True
    y_hex = y.hex()
    del y  # the driver lets go of the value: only C's read of it keeps it now
    rtml.get(rtml.put(0), timeout=60)  # (the driver's release goes with its next message)

    def settled() -> bool:
        rows = list_objects(limit=1000, detail=True)
        puts_on_b = [r for r in rows if r.node_id == b_id and not r.task_id]
        if not puts_on_b:
            return True  # x was freed at B (the race lost)
        on_c = [r for r in rows if r.node_id == c_id and r.object_id == y_hex]
        on_a = [r for r in rows if r.node_id == a_id and r.object_id == y_hex]
        return (
            bool(on_c)
            and on_c[0].holders == ["borrow registration"]
            and bool(on_a)
            and on_a[0].holders == [f"node {c_id}"]
        )

    wait_for(settled, timeout=60, what="x freed at B, or C keeping y until B counts its borrow")
    gate.touch()  # C's registration reaches B now
    assert rtml.get(holder.read.remote(), timeout=60) == "inner"
    rtml.kill(holder)
