"""The placement-group reservation state machine, without processes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtml._scheduler._bundles import (
    CREATED,
    PENDING,
    REMOVED,
    RESCHEDULING,
    STRATEGIES,
    PlacementTable,
    commit_on,
    group_of,
    release_on,
    task_resources,
)
from rtml._scheduler._resources import ResourcePool


def table(*nodes: dict[str, float]) -> PlacementTable:
    t = PlacementTable()
    for i, n in enumerate(nodes):
        t.add_node(f"n{i}", n)
    return t


def test_all_or_nothing_then_a_joining_node_fits_it() -> None:
    t = table({"CPU": 2}, {"CPU": 2})
    changes = t.create("g", [{"CPU": 2}] * 3, "SPREAD")
    assert changes == []
    assert t.groups["g"].state == PENDING
    assert all(r.reserved == {} for r in t.nodes.values())  # nothing half-reserved
    t.validate()
    changes = t.add_node("n2", {"CPU": 2})
    assert {c.node for c in changes} == {"n0", "n1", "n2"}
    assert t.groups["g"].state == CREATED
    t.validate()


def test_strict_pack_needs_one_node_and_strict_spread_distinct_nodes() -> None:
    t = table({"CPU": 2}, {"CPU": 2})
    t.create("p", [{"CPU": 1}] * 3, "STRICT_PACK")
    assert t.groups["p"].state == PENDING  # fits the cluster, not one node
    t.create("s", [{"CPU": 1}] * 2, "STRICT_SPREAD")
    assert t.groups["s"].state == CREATED
    assert set(t.groups["s"].nodes) == {"n0", "n1"}
    t.create("s3", [{"CPU": 0.5}] * 3, "STRICT_SPREAD")
    assert t.groups["s3"].state == PENDING  # room for all, but only two nodes
    t.validate()


def test_pack_prefers_one_node_spread_spreads() -> None:
    t = table({"CPU": 8}, {"CPU": 8})
    t.create("p", [{"CPU": 1}] * 3, "PACK")
    assert len(set(t.groups["p"].nodes)) == 1
    t.create("s", [{"CPU": 1}] * 2, "SPREAD")
    assert len(set(t.groups["s"].nodes)) == 2  # n0: 4 free, n1: 7 free
    t.create("big", [{"CPU": 1}] * 6, "PACK")
    assert set(t.groups["big"].nodes) == {"n1"}  # the one node that fits it all
    t.create("over", [{"CPU": 1}] * 5, "PACK")  # fits no one node: spills over
    assert t.groups["over"].state == CREATED
    assert len(set(t.groups["over"].nodes)) == 2
    t.validate()


def test_strict_spread_matching_finds_the_assignment_greedy_would_miss() -> None:
    t = table({"CPU": 1, "GPU": 1}, {"CPU": 1})
    t.create("g", [{"CPU": 1}, {"GPU": 1}], "STRICT_SPREAD")
    assert t.groups["g"].nodes == ["n1", "n0"]


def test_remove_returns_the_reservation_and_lets_a_pending_group_in() -> None:
    t = table({"CPU": 2})
    t.create("a", [{"CPU": 2}], "PACK")
    t.create("b", [{"CPU": 1}], "PACK")
    assert t.groups["b"].state == PENDING
    changes = t.remove("a")
    assert [c.op for c in changes] == ["release", "commit"]
    assert t.groups["a"].state == REMOVED
    assert t.groups["b"].state == CREATED
    assert t.remove("a") == []  # idempotent
    t.validate()


def test_node_death_reschedules_the_lost_bundles_only() -> None:
    t = table({"CPU": 1}, {"CPU": 1}, {"CPU": 1})
    t.create("g", [{"CPU": 1}] * 2, "STRICT_SPREAD")
    lost = t.groups["g"].nodes[0]
    kept = t.groups["g"].nodes[1]
    changes = t.remove_node(str(lost))
    assert t.groups["g"].state == CREATED
    assert t.groups["g"].nodes[1] == kept
    assert [c.op for c in changes] == ["commit"]
    assert changes[0].node == "n2"
    t.remove_node("n2")
    assert t.groups["g"].state == RESCHEDULING  # no third node left: waits
    t.validate()
    t.add_node("n9", {"CPU": 1})
    assert t.groups["g"].state == CREATED
    t.validate()


def test_names_and_bad_input() -> None:
    t = table({"CPU": 2})
    t.create("a", [{"CPU": 1}], "PACK", name="x")
    with pytest.raises(ValueError, match="named 'x'"):
        t.create("b", [{"CPU": 1}], "PACK", name="x")
    with pytest.raises(ValueError, match="no resources"):
        t.create("c", [{"CPU": 0}], "PACK")
    with pytest.raises(ValueError, match="strategy"):
        t.create("c", [{"CPU": 1}], "TIGHT")
    with pytest.raises(ValueError, match="non-empty"):
        t.create("c", [], "PACK")
    t.remove("a")
    t.create("b", [{"CPU": 1}], "PACK", name="x")  # a removed group's name is free again
    assert t.by_name("x") is t.groups["b"]


def test_job_end_removes_its_groups_but_detached() -> None:
    t = table({"CPU": 4})
    t.create("a", [{"CPU": 1}], "PACK", owner="j1")
    t.create("d", [{"CPU": 1}], "PACK", owner="j1", lifetime="detached")
    t.remove_owned_by("j1")
    assert t.groups["a"].state == REMOVED
    assert t.groups["d"].state == CREATED


def test_task_resources_check_index_and_size() -> None:
    b = [{"CPU": 2}, {"CPU": 1, "GPU": 1}]
    r = task_resources("ab", 1, {"CPU": 1}, b)
    assert r["CPU_group_1_ab"] == 1
    assert r["CPU_group_ab"] == 1
    assert "bundle_group_ab" in r
    assert group_of(r) == "ab"
    assert "CPU_group_0_ab" not in task_resources("ab", -1, {"CPU": 2}, b)
    with pytest.raises(ValueError, match="out of range"):
        task_resources("ab", 2, {"CPU": 1}, b)
    with pytest.raises(ValueError, match="more than bundle 1"):
        task_resources("ab", 1, {"CPU": 2}, b)
    with pytest.raises(ValueError, match="more than any bundle"):
        task_resources("ab", -1, {"CPU": 3}, b)


def test_a_node_pool_holds_and_gives_back_a_bundle() -> None:
    pool = ResourcePool({"CPU": 4})
    commit_on(pool, "ab", 0, {"CPU": 2})
    req = task_resources("ab", 0, {"CPU": 1}, [{"CPU": 2}])
    assert pool.fits(req)
    assert pool.availability()["CPU"] == 2
    a = pool.acquire(req)
    assert a is not None
    assert pool.acquire(req) is not None
    assert pool.acquire(req) is None
    release_on(pool, "ab", 0, {"CPU": 2})  # removed while two tasks hold it
    assert pool.availability()["CPU"] == 4
    assert not pool.feasible(req)
    pool.release(a)
    pool.validate()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("create"),
                st.lists(st.integers(1, 4), min_size=1, max_size=4),
                st.sampled_from(STRATEGIES),
            ),
            st.tuples(st.just("remove"), st.integers(0, 20)),
            st.tuples(st.just("join"), st.integers(1, 6)),
            st.tuples(st.just("die"), st.integers(0, 20)),
        ),
        max_size=40,
    )
)
def test_random_sequences_keep_the_invariants(ops: list[tuple]) -> None:
    t = PlacementTable()
    made = 0
    joined = 0
    for op in ops:
        if op[0] == "create":
            t.create(f"g{made}", [{"CPU": c} for c in op[1]], op[2])
            made += 1
        elif op[0] == "remove" and made:
            t.remove(f"g{op[1] % made}")
        elif op[0] == "join":
            t.add_node(f"n{joined}", {"CPU": op[1]})
            joined += 1
        elif op[0] == "die" and t.nodes:
            t.remove_node(sorted(t.nodes)[op[1] % len(t.nodes)])
        t.validate()
        # No group waits that would fit on the nodes as they are now (decisions are eager).
        for g in t.groups.values():
            if g.state in (PENDING, RESCHEDULING):
                assert t._plan(g) is None
