"""The task event log (bounded, queryable) and the pub/sub bookkeeping, in isolation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtml._control import EventLog, PubSub, TaskEvent, object_channel


def ev(task_id, state="RUNNING", attempt=0, **kw):
    return TaskEvent(task_id, attempt, state, 1.0, **kw)


# ---------------------------------------------------------------------------- event log
def test_events_are_numbered_and_queried_by_task_and_since():
    log = EventLog(capacity=100)
    assert log.append([ev(1), ev(2), ev(1, "FINISHED")]) == 0
    assert (
        log.append(
            [
                {
                    "task_id": 3,
                    "attempt": 1,
                    "state": "FAILED",
                    "time": 2.0,
                    "worker_id": 9,
                    "error": "ValueError",
                }
            ]
        )
        == 3
    )
    page = log.query()
    assert [s for s, _ in page.events] == [0, 1, 2, 3]
    assert page.next_seq == 4
    assert page.events[3][1] == TaskEvent(
        3, 1, "FAILED", 2.0, worker_id=9, extra={"error": "ValueError"}
    )
    assert [e.state for _, e in log.query(task_id=1).events] == ["RUNNING", "FINISHED"]
    assert [s for s, _ in log.query(task_id=1, since=1).events] == [2]
    assert log.query(task_id=404).events == []
    assert log.query(since=4).events == []
    assert log.query(since=4).next_seq == 4
    log.validate()


def test_paging_with_limit_reads_everything_once():
    log = EventLog()
    log.append([ev(i % 3) for i in range(25)])
    seen, since = [], 0
    while True:
        page = log.query(since=since, limit=10)
        if not page.events:
            break
        seen += [s for s, _ in page.events]
        since = page.next_seq
    assert seen == list(range(25))
    assert log.query(limit=0).events == []
    assert log.query(since=5, limit=0).next_seq == 5
    with pytest.raises(ValueError):
        log.query(limit=-1)


def test_the_oldest_events_are_dropped_past_capacity():
    log = EventLog(capacity=5)
    log.append([ev(1), ev(2)])
    log.append([ev(3, attempt=i) for i in range(6)])
    assert len(log) == 5
    assert log.dropped == 3
    page = log.query()
    assert [s for s, _ in page.events] == [3, 4, 5, 6, 7]
    assert page.dropped == 3
    assert log.query(task_id=1).events == []
    assert log.query(task_id=2).events == []
    assert len(log.query(task_id=3).events) == 5
    assert [s for s, _ in log.query(since=6).events] == [6, 7]
    assert [s for s, _ in log.query(since=0, limit=2).events] == [3, 4], (
        "a reader that fell behind resumes at the oldest event kept"
    )
    log.validate()
    with pytest.raises(ValueError):
        EventLog(capacity=0)


def test_bad_events_are_refused_whole():
    log = EventLog()
    with pytest.raises(ValueError, match="needs"):
        log.append([ev(1), {"task_id": 2, "state": "RUNNING", "time": 1.0}])
    with pytest.raises(ValueError):
        log.append([{"task_id": 2.5, "attempt": 0, "state": "RUNNING", "time": 1.0}])
    with pytest.raises(ValueError):
        log.append(["not an event"])  # type: ignore[list-item]
    assert len(log) == 0
    assert log.next_seq == 0


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.lists(st.lists(st.integers(0, 4), max_size=6), max_size=10))
def test_event_log_keeps_the_newest_capacity_events(capacity, batches):
    log = EventLog(capacity)
    everything = []
    for batch in batches:
        log.append([ev(t) for t in batch])
        everything += batch
        log.validate()
    kept = everything[-capacity:] if everything else []
    assert [e.task_id for _, e in log.query().events] == kept
    assert log.dropped == len(everything) - len(kept)
    for t in range(5):
        assert [s for s, _ in log.query(task_id=t).events] == [
            s for s, e in log.query().events if e.task_id == t
        ]


# ---------------------------------------------------------------------------- pub/sub
def test_publish_reaches_subscribers_in_order():
    ps = PubSub()
    assert ps.subscribe("b", "nodes")
    assert ps.subscribe("a", "nodes")
    assert not ps.subscribe("a", "nodes")
    ps.subscribe("a", object_channel(7))
    assert ps.publish("nodes", "m") == [("b", "nodes", "m"), ("a", "nodes", "m")]
    assert ps.publish(object_channel(7), 1) == [("a", "obj:7", 1)]
    assert ps.publish("jobs", "nobody") == []
    assert ps.channels("a") == ["nodes", "obj:7"]
    assert ps.subscribers("nodes") == ["b", "a"]
    ps.validate()


def test_unsubscribe_and_drop():
    ps = PubSub()
    ps.subscribe(1, "nodes")
    ps.subscribe(1, "actors")
    ps.subscribe(2, "actors")
    assert ps.unsubscribe(1, "nodes")
    assert not ps.unsubscribe(1, "nodes")
    assert not ps.unsubscribe(3, "actors")
    assert ps.drop(1) == 1
    assert ps.drop(1) == 0
    assert ps.publish("actors", "x") == [(2, "actors", "x")]
    assert ps.drop(2) == 1
    assert len(ps) == 0
    ps.validate()
    for bad in ("", None, "x" * 300):
        with pytest.raises(ValueError):
            ps.subscribe(1, bad)  # type: ignore[arg-type]


def test_channels_of_ids_do_not_collide():
    assert object_channel(255) == "obj:ff"
    assert object_channel("ff") == "obj:sff"
    with pytest.raises(ValueError):
        object_channel(1.5)  # type: ignore[arg-type]
