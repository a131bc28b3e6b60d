"""The control plane's tables, pub/sub and dispatch, driven through ``ControlPlane.handle``
without processes or sockets; the same suite runs over memory, Redis and sharded Redis.

Every test ends with ``validate()`` (memory agrees with storage, indexes with rows), and the
restart tests build a second plane over the same storage, as a restarted GCS would.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_control_storage import backend  # noqa: F401 - the backend fixture

from rtml._control import ControlPlane, MemoryStorage, TaskEntry, object_channel
from rtml._control._pubsub import actor_channel

TIMEOUT = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def plane(backend, clock):  # noqa: F811
    backend.plane = ControlPlane(backend.open(), heartbeat_timeout=TIMEOUT, clock=clock)
    yield backend.plane
    backend.plane.validate()  # the latest one: a restart replaces it


def restart(backend, clock):  # noqa: F811
    """A new plane on the same storage, as after a GCS restart (the old one is gone)."""
    backend.plane = ControlPlane(backend.open(), heartbeat_timeout=TIMEOUT, clock=clock)
    backend.plane.validate()
    return backend.plane


def call(plane, op, *args, sub="s"):
    return plane.handle(sub, op, args)[0]


def node_info(port=1, **extra):
    return {
        "address": f"10.0.0.1:{port}",
        "resources": {"CPU": 4, "GPU": 1},
        "labels": {"zone": "a"},
        **extra,
    }


# ---------------------------------------------------------------------------- dispatch
def test_unknown_ops_and_wrong_arguments_are_the_callers_fault(plane):
    with pytest.raises(ValueError, match="unknown control-plane operation"):
        plane.handle("s", "no_such_op", ())
    with pytest.raises(ValueError, match="unknown"):
        plane.handle("s", 42, ())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="takes 2 arguments, got 1"):
        plane.handle("s", "register_node", ("n1",))
    with pytest.raises(ValueError, match="takes 0 to 1 arguments"):
        plane.handle("s", "list_nodes", (1, 2, 3))
    with pytest.raises(ValueError):
        plane.handle("s", "ping", "not a tuple")  # type: ignore[arg-type]
    assert call(plane, "ping") == "pong"
    assert "register_node" in plane.ops
    assert "handle" not in plane.ops
    assert call(plane, "info")["durable"] == plane.durable


# ---------------------------------------------------------------------------- nodes
def test_nodes_register_heartbeat_and_time_out(plane, clock):
    call(plane, "subscribe", "nodes", sub="watcher")
    rec, pubs = plane.handle("s", "register_node", ("n1", node_info(pid=7)))
    assert (rec.index, rec.state, rec.address, rec.extra) == (1, "ALIVE", "10.0.0.1:1", {"pid": 7})
    assert rec.resources == {"CPU": 4.0, "GPU": 1.0} == rec.available
    assert pubs == [("watcher", "nodes", ("node_added", rec))]
    n2 = call(plane, "register_node", "n2", node_info(2))
    assert n2.index == 2

    clock.now += 6
    assert call(plane, "heartbeat", "n1", {"CPU": 1}, {"queued": 3, "by_fn": {"f": 1}})
    assert call(plane, "get_node", "n1").available == {"CPU": 1.0}
    assert call(plane, "get_node", "n1").load["queued"] == 3
    assert plane.tick() == []
    clock.now += 6  # n2 silent for 12 s, n1 for 6 s
    pubs = plane.tick()
    dead = call(plane, "get_node", "n2")
    assert dead.state == "DEAD"
    assert "no heartbeat" in dead.death_cause
    assert pubs == [("watcher", "nodes", ("node_dead", dead))]
    assert not call(plane, "heartbeat", "n2", {}, {}), "a dead node must register again"
    assert not call(plane, "heartbeat", "nobody", {}, {})
    assert [n.node_id for n in call(plane, "list_nodes", True)] == ["n1"]
    assert plane.tick() == [], "a node dies once"


def test_a_live_node_reregistering_keeps_its_index(plane):
    first = call(plane, "register_node", "n1", node_info(1))
    again, pubs = plane.handle("s", "register_node", ("n1", node_info(9)))
    assert again.index == first.index
    assert again.address == "10.0.0.1:9"
    assert len(call(plane, "list_nodes")) == 1


def test_a_dead_node_comes_back_as_a_new_node(plane, backend, clock):  # noqa: F811
    first = call(plane, "register_node", "n1", node_info())
    assert call(plane, "node_dead", "n1", "drained").death_cause == "drained"
    assert call(plane, "node_dead", "n1") is None, "already dead"
    back = call(plane, "register_node", "n1", node_info())
    assert back.index == first.index + 1
    assert back.alive
    nodes = call(plane, "list_nodes")
    assert [(n.index, n.state) for n in nodes] == [(1, "DEAD"), (2, "ALIVE")]
    # Indexes are never reused, even by a plane rebuilt on the same storage.
    call(plane, "node_dead", "n1")
    again = restart(backend, clock)
    assert call(again, "register_node", "n3", node_info()).index == 3


def test_a_node_declared_dead_is_fenced(plane, clock):
    """Writes from the connection of a dead incarnation are refused (a paused node that comes
    back must not write locations, lineage or actor states); it may still read, learn what
    happened and join again; other connections are not affected."""
    zombie = call(plane, "register_node", "z", node_info(1), sub="zc")
    call(plane, "register_node", "ok", node_info(2), sub="okc")
    call(plane, "add_location", 7, "z", 10, sub="zc")  # alive: accepted
    clock.now += TIMEOUT + 1
    call(plane, "heartbeat", "ok", {}, {}, sub="okc")
    plane.tick()  # "z" missed its heartbeats: dead
    for op, args in (
        ("add_location", (8, "z", 10)),
        ("add_tasks", ([(1, b"spec", None)],)),
        ("update_actor", (5, "ALIVE")),
        ("kv_put", ("ns", "k", b"v")),
        ("node_dead", ("ok", "a zombie says so")),
    ):
        with pytest.raises(ValueError, match="fenced: node z"):
            call(plane, op, *args, sub="zc")
    assert call(plane, "get_node", "ok", sub="zc").alive, "the zombie declared nobody dead"
    # What it may still do: learn it is dead, then join again as a new incarnation.
    assert not call(plane, "heartbeat", "z", {}, {}, sub="zc")
    assert not call(plane, "get_node", "z", sub="zc").alive
    again = call(plane, "register_node", "z", node_info(1), sub="zc")
    assert again.index != zombie.index
    assert again.alive
    call(plane, "add_location", 8, "z", 10, sub="zc")  # the new incarnation speaks again
    # A reconnected connection binds itself to an incarnation: the dead one stays fenced.
    assert call(plane, "bind_node", "z", zombie.index, sub="old") is False
    with pytest.raises(ValueError, match="fenced"):
        call(plane, "kv_put", "ns", "k", b"v", sub="old")
    with pytest.raises(ValueError, match="no node"):
        call(plane, "bind_node", "z", 99, sub="old")
    # Others are not affected, and a closed connection is forgotten.
    assert call(plane, "kv_put", "ns", "k", b"v", sub="driver")
    plane.drop_subscriber("old")
    assert call(plane, "kv_put", "ns", "k2", b"v", sub="old")


def test_bad_node_registrations_are_refused(plane):
    for info in (
        {"resources": {}},
        {"address": "a:1", "resources": {"CPU": "x"}},
        {"address": "a:1", "labels": {"k": 1}},
        "not a dict",
    ):
        with pytest.raises(ValueError):
            call(plane, "register_node", "n1", info)
    with pytest.raises(ValueError):
        call(plane, "register_node", "", node_info())
    call(plane, "register_node", "n1", node_info())
    with pytest.raises(ValueError):
        call(plane, "heartbeat", "n1", {"CPU": None}, {})
    assert call(plane, "list_nodes")
    assert call(plane, "get_node", "n1").available["CPU"] == 4


def test_nodes_recovered_after_a_restart_get_a_full_grace_period(plane, backend, clock):  # noqa: F811
    call(plane, "register_node", "n1", node_info(), sub=f"conn-{'n1'}")
    call(plane, "register_node", "n2", node_info(2), sub=f"conn-{'n2'}")
    call(plane, "node_dead", "n2")
    clock.now += 3 * TIMEOUT  # the control plane was down for a while
    again = restart(backend, clock)
    n1 = call(again, "get_node", "n1")
    assert n1.alive
    assert n1.last_heartbeat is None
    assert n1.available == {}
    assert call(again, "get_node", "n2").state == "DEAD"
    assert again.tick() == [], "recovered nodes are not declared dead at once"
    clock.now += TIMEOUT / 2
    assert call(again, "heartbeat", "n1", {"CPU": 2}, {})
    clock.now += TIMEOUT * 0.9
    assert again.tick() == []
    clock.now += TIMEOUT
    again.tick()
    assert call(again, "get_node", "n1").state == "DEAD"


# ---------------------------------------------------------------------------- jobs
def test_jobs(plane, backend, clock):  # noqa: F811
    call(plane, "subscribe", "jobs", sub="w")
    j1, j2 = call(plane, "next_job_id"), call(plane, "next_job_id")
    assert (j1, j2) == (1, 2)
    rec, pubs = plane.handle(
        "s", "add_job", (j1, {"driver_pid": 5, "namespace": "ns", "start_time": 1.5, "node": "n1"})
    )
    assert (rec.namespace, rec.driver_pid, rec.state, rec.extra) == (
        "ns",
        5,
        "RUNNING",
        {"node": "n1"},
    )
    assert pubs == [("w", "jobs", ("job_added", rec))]
    with pytest.raises(ValueError, match="already"):
        call(plane, "add_job", j1, {"namespace": "ns"})
    with pytest.raises(ValueError, match="next_job_id"):
        call(plane, "add_job", 99, {"namespace": "ns"})
    with pytest.raises(ValueError, match="namespace"):
        call(plane, "add_job", j2, {})
    done, pubs = plane.handle("s", "finish_job", (j1,))
    assert done.state == "FINISHED"
    assert done.end_time is not None
    assert len(pubs) == 1
    assert plane.handle("s", "finish_job", (j1,))[1] == [], "finishing twice publishes once"
    with pytest.raises(ValueError):
        call(plane, "finish_job", 12345)
    again = restart(backend, clock)
    assert call(again, "next_job_id") == 3, "job ids are never reused"
    assert [j.job_id for j in call(again, "list_jobs")] == [1]
    assert call(again, "get_job", 1).state == "FINISHED"


# ---------------------------------------------------------------------------- functions, kv
def test_functions(plane):
    assert call(plane, "get_function", "f1") is None
    call(plane, "put_function", "f1", b"pickled f1")
    call(plane, "put_function", "f1", bytearray(b"pickled f1"))  # idempotent
    assert call(plane, "get_function", "f1") == b"pickled f1"
    with pytest.raises(ValueError):
        call(plane, "put_function", "f2", "not bytes")


def test_kv(plane):
    assert call(plane, "kv_put", "ns", "a/1", b"x")
    assert not call(plane, "kv_put", "ns", "a/1", b"y"), "not new"
    assert call(plane, "kv_get", "ns", "a/1") == b"y"
    assert not call(plane, "kv_put", "ns", "a/1", b"z", False)
    assert call(plane, "kv_get", "ns", "a/1") == b"y", "overwrite=False keeps the value"
    call(plane, "kv_put", "ns", "a/2", b"2")
    call(plane, "kv_put", "ns", "b", b"3")
    call(plane, "kv_put", "other", "a/3", b"4")
    call(plane, "kv_put", "", "a/4", b"5")
    assert call(plane, "kv_keys", "ns") == ["a/1", "a/2", "b"]
    assert call(plane, "kv_keys", "ns", "a/") == ["a/1", "a/2"]
    assert call(plane, "kv_keys", "") == ["a/4"]
    assert call(plane, "kv_get", "other", "a/1") is None
    assert call(plane, "kv_delete", "ns", "a/1")
    assert not call(plane, "kv_delete", "ns", "a/1")
    assert call(plane, "kv_get", "ns", "a/1") is None
    with pytest.raises(ValueError):
        call(plane, "kv_put", "bad\0ns", "k", b"v")
    with pytest.raises(ValueError):
        call(plane, "kv_put", "ns", "k", 5)


# ---------------------------------------------------------------------------- actors
def test_actor_lifecycle_and_publications(plane):
    call(plane, "subscribe", "actors", sub="all")
    call(plane, "subscribe", actor_channel(7), sub="one")
    rec, pubs = plane.handle(
        "s",
        "register_actor",
        (
            7,
            {
                "namespace": "ns",
                "name": "counter",
                "class_name": "Counter",
                "max_restarts": 2,
                "spec": b"creation spec",
            },
        ),
    )
    assert (rec.state, rec.name, rec.extra) == ("PENDING", "counter", {"spec": b"creation spec"})
    assert pubs == [
        ("all", "actors", ("actor_state", rec)),
        ("one", "actor:7", ("actor_state", rec)),
    ]
    alive = call(
        plane, "update_actor", 7, "ALIVE", {"node_id": "n1", "pid": 42, "address": "10.0.0.1:5"}
    )
    assert (alive.state, alive.node_id, alive.pid) == ("ALIVE", "n1", 42)
    assert call(plane, "actors_on_node", "n1") == [alive]
    restarting = call(plane, "update_actor", 7, "RESTARTING", {"death_cause": "node died"})
    assert restarting.num_restarts == 1
    assert restarting.node_id == "n1"
    assert call(plane, "update_actor", 7, "RESTARTING").num_restarts == 1, "counted once"
    adopted = call(plane, "update_actor", 7, "ALIVE", {"node_id": "n2", "owner": "n3"})
    assert adopted.extra == {"spec": b"creation spec", "owner": "n3"}  # (restarted by n3)
    assert call(plane, "lookup_actor", "ns", "counter").actor_id == 7
    dead = call(plane, "update_actor", 7, "DEAD", {"death_cause": "killed"})
    assert dead.death_cause == "killed"
    assert call(plane, "lookup_actor", "ns", "counter") is None, "the name is free again"
    with pytest.raises(ValueError, match="cannot go from DEAD"):
        call(plane, "update_actor", 7, "ALIVE")
    assert call(plane, "get_actor", 7).state == "DEAD"


def test_actor_names_are_unique_per_namespace(plane):
    call(plane, "register_actor", 1, {"namespace": "ns", "name": "x"})
    with pytest.raises(ValueError, match="already exists"):
        call(plane, "register_actor", 2, {"namespace": "ns", "name": "x"})
    assert call(plane, "get_actor", 2) is None, "a refused actor leaves no trace"
    call(plane, "register_actor", 2, {"namespace": "other", "name": "x"})
    call(plane, "register_actor", 3, {"namespace": "ns"})
    call(plane, "register_actor", "str-id", {"namespace": "ns", "detached": True})
    with pytest.raises(ValueError, match="already registered"):
        call(plane, "register_actor", 3, {"namespace": "ns"})
    assert sorted(map(str, (a.actor_id for a in call(plane, "list_actors", "ns")))) == [
        "1",
        "3",
        "str-id",
    ]
    assert len(call(plane, "list_actors")) == 4
    assert call(plane, "remove_actor", 1)
    assert not call(plane, "remove_actor", 1)
    call(plane, "register_actor", 4, {"namespace": "ns", "name": "x"})  # freed by remove
    for bad in (("ALIVE", {"colour": "red"}), ("SLEEPING", None)):
        with pytest.raises(ValueError):
            call(plane, "update_actor", 4, *bad)
    with pytest.raises(ValueError, match="no actor"):
        call(plane, "update_actor", 99, "ALIVE")
    with pytest.raises(ValueError):
        call(plane, "register_actor", 5.5, {"namespace": "ns"})


# ---------------------------------------------------------------------------- lineage
def test_task_lineage(plane):
    n = call(
        plane,
        "add_tasks",
        [(i, f"spec{i}".encode(), "owner-a" if i % 2 else "owner-b") for i in range(1, 101)],
    )
    assert n == 100
    assert call(plane, "get_task", 5) == TaskEntry(5, b"spec5", "owner-a")
    assert call(plane, "remove_tasks", [1, 2, 3, 999]) == 4
    assert call(plane, "get_task", 2) is None
    assert call(plane, "remove_owner_tasks", "owner-a") == 48
    assert call(plane, "get_task", 5) is None
    assert call(plane, "get_task", 4) is not None
    with pytest.raises(ValueError):
        call(plane, "add_tasks", [(1, b"ok", None), (2, "not bytes", None)])
    assert call(plane, "get_task", 1) is None, "a refused batch writes nothing"
    with pytest.raises(ValueError):
        call(plane, "add_tasks", [(1, b"spec")])


# ---------------------------------------------------------------------------- objects
def test_object_directory_and_its_channels(plane):
    for n in ("n1", "n2"):
        call(plane, "register_node", n, node_info(), sub=f"conn-{n}")
    call(plane, "subscribe", object_channel(10), sub="reader")
    entry, pubs = plane.handle("s", "add_location", (10, "n1", 1 << 20, "owner"))
    assert (entry.size, entry.nodes, entry.owner) == (1 << 20, ("n1",), "owner")
    assert pubs == [("reader", object_channel(10), ("location_added", entry))]
    assert plane.handle("s", "add_location", (10, "n1", 1 << 20))[0] is None, "known already"
    assert (
        call(
            plane,
            "add_locations",
            [(10, "n2", 1 << 20), (11, "n1", 5), (11, "n2", 5), (12, "n2", 0, "o2")],
        )
        == 3
    )
    assert call(plane, "get_locations", 10) == (1 << 20, ("n1", "n2"))
    assert call(plane, "get_locations", 11) == (5, ("n1", "n2"))
    assert call(plane, "get_locations", 404) is None
    removed, pubs = plane.handle("s", "remove_location", (10, "n1"))
    assert removed.nodes == ("n2",)
    assert pubs[0][2] == ("location_removed", removed)
    assert call(plane, "remove_location", 10, "n1") is None

    # n2 dies: its copies go, 10 and 12 are lost (known, no location), 11 survives on n1.
    call(plane, "subscribe", "nodes", sub="reader")
    dead, pubs = plane.handle("s", "node_dead", ("n2",))
    assert [p[2][0] for p in pubs] == ["node_dead", "location_removed"]
    assert call(plane, "get_locations", 10) == (1 << 20, ())
    assert call(plane, "get_locations", 11) == (5, ("n1",))
    assert call(plane, "get_locations", 12) == (0, ())
    # A late report from the dead node is stale: ignored. An unknown node is an error.
    assert call(plane, "add_location", 13, "n2", 1) is None
    assert call(plane, "get_locations", 13) is None
    with pytest.raises(ValueError, match="unknown node"):
        call(plane, "add_location", 13, "n9", 1)
    with pytest.raises(ValueError):
        call(plane, "add_locations", [(14, "n1", 1), (15, "n1", -1)])
    assert call(plane, "get_locations", 14) is None, "a refused batch changes nothing"

    gone, pubs = plane.handle("s", "remove_objects", ([10, 11, 404],))
    assert gone == 2
    assert pubs == [("reader", object_channel(10), ("object_removed", 10))]
    assert call(plane, "get_object", 11) is None
    assert call(plane, "info")["objects"] == 1


def test_a_subscriber_that_leaves_gets_nothing_more(plane):
    call(plane, "register_node", "n1", node_info(), sub=f"conn-{'n1'}")
    call(plane, "subscribe", object_channel(1), sub="a")
    call(plane, "subscribe", "nodes", sub="a")
    assert call(plane, "unsubscribe", "nodes", sub="a")
    assert not call(plane, "unsubscribe", "nodes", sub="a")
    plane.drop_subscriber("a")
    assert plane.handle("s", "add_location", (1, "n1", 1))[1] == []
    assert call(plane, "info")["subscribers"] == 0
    with pytest.raises(ValueError):
        call(plane, "subscribe", "")


# ---------------------------------------------------------------------------- events
def test_task_events_through_the_plane(plane):
    first = call(
        plane,
        "add_events",
        [
            {"task_id": 1, "attempt": 0, "state": "RUNNING", "time": 1.0, "node_id": "n1"},
            {"task_id": 2, "attempt": 0, "state": "RUNNING", "time": 1.1, "resources": {"CPU": 1}},
            {"task_id": 1, "attempt": 0, "state": "FINISHED", "time": 2.0},
        ],
    )
    assert first == 0
    page = call(plane, "get_events", 1)
    assert [(s, e.state) for s, e in page.events] == [(0, "RUNNING"), (2, "FINISHED")]
    page = call(plane, "get_events", None, 1, 1)
    assert [s for s, _ in page.events] == [1]
    assert page.next_seq == 2
    assert page.events[0][1].extra == {"resources": {"CPU": 1}}
    with pytest.raises(ValueError, match="needs"):
        call(plane, "add_events", [{"task_id": 3, "state": "RUNNING"}])


# ---------------------------------------------------------------------------- restart
def test_everything_durable_comes_back_after_a_restart(plane, backend, clock):  # noqa: F811
    call(plane, "register_node", "n1", node_info(), sub=f"conn-{'n1'}")
    call(plane, "register_node", "n2", node_info(2), sub=f"conn-{'n2'}")
    call(plane, "node_dead", "n2")
    job = call(plane, "next_job_id")
    call(plane, "add_job", job, {"namespace": "ns", "driver_pid": 1})
    call(plane, "put_function", "f", b"fn")
    call(plane, "register_actor", 5, {"namespace": "ns", "name": "a", "max_restarts": 1})
    call(plane, "update_actor", 5, "ALIVE", {"node_id": "n1"})
    call(plane, "register_actor", 6, {"namespace": "ns", "name": "b"})
    call(plane, "update_actor", 6, "DEAD")
    call(plane, "add_tasks", [(100, b"spec", "o")])
    call(plane, "add_locations", [(1000, "n1", 10, "o"), (1001, "n1", 20)])
    call(plane, "kv_put", "ns", "k", b"v")
    call(plane, "subscribe", "nodes", sub="gone")

    again = restart(backend, clock)
    assert [(n.node_id, n.index, n.state) for n in call(again, "list_nodes")] == [
        ("n1", 1, "ALIVE"),
        ("n2", 2, "DEAD"),
    ]
    assert call(again, "get_job", job).driver_pid == 1
    assert call(again, "get_function", "f") == b"fn"
    assert call(again, "lookup_actor", "ns", "a").node_id == "n1"
    assert call(again, "lookup_actor", "ns", "b") is None
    with pytest.raises(ValueError, match="already exists"):
        call(again, "register_actor", 7, {"namespace": "ns", "name": "a"})
    call(again, "register_actor", 8, {"namespace": "ns", "name": "b"})
    assert call(again, "get_task", 100) == TaskEntry(100, b"spec", "o")
    assert call(again, "get_locations", 1000) == (10, ("n1",))
    assert call(again, "get_object", 1000).owner == "o"
    assert call(again, "kv_get", "ns", "k") == b"v"
    assert call(again, "info")["subscribers"] == 0, "subscriptions are per connection"
    assert again.durable == (backend.kind != "memory")
    # Node death after the restart still finds the recovered object locations.
    call(again, "node_dead", "n1")
    assert call(again, "get_locations", 1001) == (20, ())
    again.validate()


# ---------------------------------------------------------------------------- property
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "drop", "free", "restart"]),
            st.integers(0, 5),
            st.sampled_from(["n1", "n2", "n3"]),
        ),
        max_size=40,
    )
)
def test_object_directory_matches_a_model(ops):
    storage = MemoryStorage()
    plane = ControlPlane(storage)
    model: dict[int, set[str]] = {}
    for n in ("n1", "n2", "n3"):
        call(plane, "register_node", n, node_info(), sub=f"conn-{n}")
    for op, oid, node in ops:
        if op == "add":
            call(plane, "add_location", oid, node, 7)
            model.setdefault(oid, set()).add(node)
        elif op == "remove":
            call(plane, "remove_location", oid, node)
            if oid in model:
                model[oid].discard(node)
        elif op == "drop":  # the node dies and comes straight back as a new incarnation
            call(plane, "node_dead", node)
            call(plane, "register_node", node, node_info(), sub=f"conn-{node}")
            for held in model.values():
                held.discard(node)
        elif op == "free":
            call(plane, "remove_objects", [oid])
            model.pop(oid, None)
        else:
            plane = ControlPlane(storage)
        plane.validate()
        got = {o: set(loc[1]) for o in range(6) if (loc := call(plane, "get_locations", o))}
        assert got == model
