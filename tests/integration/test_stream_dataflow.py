"""rtml.stream dataflows on real actors: results, joins, errors, checkpoints, resume,
recovery from killed operator actors, backpressure, metrics."""

from __future__ import annotations

import collections
import time

import pytest

import rtml
from conftest import wait_for
from rtml import stream as rs


@pytest.fixture(scope="module", autouse=True)
def _runtime():
    rtml.init(num_cpus=2)
    yield
    rtml.shutdown()


def _counts_by_key(n, keys):
    c = collections.Counter(i % keys for i in range(n))
    return dict(c)


def test_keyed_tumbling_counts_over_two_partitions_are_exact():
    flow = rs.Dataflow("counts")
    sink = rs.CollectSink()
    (
        flow.source(rs.IterableSource(list(range(5000)), partitions=2))
        .map(lambda x: {"k": x % 7, "ts": x / 100.0})
        .with_event_time(lambda e: e["ts"])
        .key_by(lambda e: e["k"])
        .window(rs.Tumbling(seconds=10))
        .count()
        .sink(sink)
    )
    run = flow.run(parallelism=2)
    run.wait(timeout=60)
    got = {(r.key, r.start): r.value for r in sink.items()}
    expect = collections.Counter((x % 7, (x // 1000) * 10.0) for x in range(5000))
    assert got == dict(expect)
    assert run.status == "finished"
    m = run.metrics()
    assert m["operators"]["source_0"]["out"] == 5000
    assert m["operators"]["window_4"]["out"] == len(expect)


def test_late_events_reach_the_late_stream(tmp_path):
    events = [{"k": "a", "ts": t} for t in (1.0, 2.0, 25.0, 3.0, 26.0)]  # 3.0 arrives late
    flow = rs.Dataflow("late")
    out, late = rs.CollectSink(), rs.CollectSink()
    counted = (
        flow.source(rs.IterableSource(events))
        .with_event_time(lambda e: e["ts"], max_out_of_order=1.0)
        .key_by(lambda e: e["k"])
        .window(rs.Tumbling(seconds=10))
        .count()
    )
    counted.sink(out)
    counted.late.sink(late)
    flow.run(max_batch=1).wait(timeout=60)  # one event per batch: each moves the watermark
    assert sorted((r.start, r.value) for r in out.items()) == [(0.0, 2), (20.0, 2)]
    assert late.items() == [{"k": "a", "ts": 3.0}]


def test_join_as_of_a_parquet_table_is_point_in_time_correct(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = str(tmp_path / "users.parquet")
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u1", "u2"],
                "updated_at": [0.0, 50.0, 0.0],
                "tier": ["free", "pro", "gold"],
            }
        ),
        path,
    )
    users = rs.Table.from_parquet(path, key="user_id", time="updated_at")
    clicks = [
        {"user": "u1", "ts": 10.0},
        {"user": "u1", "ts": 60.0},
        {"user": "u2", "ts": 5.0},
        {"user": "u3", "ts": 7.0},
    ]
    flow = rs.Dataflow("asof")
    sink = rs.CollectSink()
    (
        flow.source(rs.IterableSource(clicks))
        .with_event_time(lambda e: e["ts"])
        .key_by(lambda e: e["user"])
        .join_as_of(users)
        .map(lambda pair: (pair[0]["user"], pair[0]["ts"], pair[1] and pair[1]["tier"]))
        .sink(sink)
    )
    flow.run(parallelism=2).wait(timeout=60)
    assert sorted(sink.items()) == [
        ("u1", 10.0, "free"),
        ("u1", 60.0, "pro"),
        ("u2", 5.0, "gold"),
        ("u3", 7.0, None),
    ]


def test_interval_join_pairs_clicks_with_their_impressions():
    imps = [{"id": i, "ts": float(i)} for i in range(50)]
    clicks = [{"id": i, "ts": i + 3.0} for i in range(0, 50, 5)] + [{"id": 7, "ts": 40.0}]
    flow = rs.Dataflow("ij")
    sink = rs.CollectSink()
    a = (
        flow.source(rs.IterableSource(imps), name="imps")
        .with_event_time(lambda e: e["ts"], max_out_of_order=100)
        .key_by(lambda e: e["id"])
    )
    b = (
        flow.source(rs.IterableSource(sorted(clicks, key=lambda e: e["ts"])), name="clicks")
        .with_event_time(lambda e: e["ts"], max_out_of_order=100)
        .key_by(lambda e: e["id"])
    )
    a.interval_join(b, lower=0, upper=10).map(lambda p: (p[0]["id"], p[1]["ts"])).sink(sink)
    flow.run(parallelism=2).wait(timeout=60)
    assert sorted(sink.items()) == [(i, i + 3.0) for i in range(0, 50, 5)]


def test_left_interval_join_gives_the_impressions_nobody_clicked():
    imps = [{"id": i, "ts": float(i)} for i in range(50)]
    clicks = [{"id": i, "ts": i + 3.0} for i in range(0, 50, 5)] + [{"id": 7, "ts": 40.0}]
    events = sorted(imps + [{**c, "click": True} for c in clicks], key=lambda e: e["ts"])
    flow = rs.Dataflow("ij-left")
    sink = rs.CollectSink()
    ev = flow.source(rs.IterableSource(events)).with_event_time(lambda e: e["ts"])
    a = ev.filter(lambda e: "click" not in e).key_by(lambda e: e["id"])
    b = ev.filter(lambda e: "click" in e).key_by(lambda e: e["id"])
    a.interval_join(b, lower=0, upper=10, how="left").map(
        lambda p: (p[0]["id"], p[1] is not None)
    ).sink(sink)
    flow.run(parallelism=2).wait(timeout=60)
    assert sorted(sink.items()) == [(i, i % 5 == 0) for i in range(50)]


def test_merge_interleaves_keyed_branches_and_windows_close_on_the_smaller_watermark():
    evens = [{"user": f"u{i % 3}", "ts": float(i)} for i in range(0, 60, 2)]
    odds = [{"user": f"u{i % 3}", "ts": float(i)} for i in range(1, 60, 2)]
    flow = rs.Dataflow("merge")
    a = (
        flow.source(rs.IterableSource(evens), name="evens")
        .with_event_time(lambda e: e["ts"], max_out_of_order=5)
        .key_by(lambda e: e["user"])
    )
    b = (
        flow.source(rs.IterableSource(odds), name="odds")
        .with_event_time(lambda e: e["ts"], max_out_of_order=5)
        .key_by(lambda e: e["user"])
    )
    # A branch of a branch: the same keyed stream filtered two ways, then merged back.
    small = a.filter(lambda e: e["ts"] < 30)
    large = a.filter(lambda e: e["ts"] >= 30)
    counts = rs.CollectSink()
    (
        small.merge(large, b, name="all")
        .window(rs.Tumbling(seconds=20))
        .count()
        .map(lambda r: (r.key, r.start, r.value))
        .sink(counts)
    )
    flow.run(parallelism=2).wait(timeout=60)
    expected = {
        (f"u{u}", float(w), sum(1 for i in range(w, w + 20) if i % 3 == u))
        for u in range(3)
        for w in (0, 20, 40)
    }
    assert set(counts.items()) == expected
    assert len(counts.items()) == 9


def test_merge_refuses_nothing_to_merge_and_unkeyed_inputs():
    flow = rs.Dataflow("merge-bad")
    s = flow.source(rs.IterableSource([1, 2])).key_by(lambda x: x)
    with pytest.raises(rs.StreamConfigError, match="at least one"):
        s.merge()
    with pytest.raises(rs.StreamConfigError, match="keyed inputs"):
        s.merge(flow.source(rs.IterableSource([3]), name="other").map(lambda x: x))


def test_a_user_error_fails_the_run_naming_the_event_and_key():
    flow = rs.Dataflow("boom")
    (
        flow.source(rs.IterableSource([1, 2, 3, 0, 5]))
        .key_by(lambda x: f"key{x}")
        .stateful_map(lambda s, x: (s, 10 // x))
        .sink(rs.CallableSink(lambda v: None))
    )
    run = flow.run()
    with pytest.raises(rs.UserFunctionError) as info:
        run.wait(timeout=60)
    err = info.value
    assert err.key == "key0"
    assert err.event == "0"
    assert "ZeroDivisionError" in err.remote_traceback
    assert "dead_letter=True" in str(err)
    assert run.status == "failed"


def test_a_sink_that_raises_fails_the_run_naming_the_sink():
    flow = rs.Dataflow("badsink")
    flow.source(rs.IterableSource([1, 2])).sink(rs.CallableSink(len), name="lengths")
    run = flow.run()
    with pytest.raises(rs.UserFunctionError, match="'lengths'") as info:
        run.wait(timeout=60)
    assert "TypeError" in info.value.remote_traceback
    assert run.restarts == 0  # user code, not a lost actor: no recovery loop


def test_dead_letters_take_failing_events_and_the_run_goes_on():
    flow = rs.Dataflow("dlq")
    ok, dead = rs.CollectSink(), rs.CollectSink()
    parsed = flow.source(rs.IterableSource(["1", "x", "3"])).map(int, dead_letter=True)
    parsed.sink(ok)
    parsed.dead_letters.sink(dead)
    flow.run().wait(timeout=60)
    assert sorted(ok.items()) == [1, 3]
    (d,) = dead.items()
    assert d.event == "x"
    assert "ValueError" in d.error
    assert d.operator == "map_1"


def _running_counts_flow(name, source, sink):
    flow = rs.Dataflow(name)
    (
        flow.source(source)
        .key_by(lambda x: x % 5)
        .stateful_map(lambda n, x: ((n or 0) + 1, (x, (n or 0) + 1)))
        .sink(sink)
    )
    return flow


def _assert_exactly_once(items, n):
    values = [x for x, _ in items]
    assert sorted(values) == list(range(n)), (
        f"lost {set(range(n)) - set(values)} duplicated "
        f"{[v for v, c in collections.Counter(values).items() if c > 1]}"
    )
    # Running counts per key are exact too: the state was restored, not rebuilt.
    per_key = collections.defaultdict(list)
    for x, c in items:
        per_key[x % 5].append(c)
    for counts in per_key.values():
        assert sorted(counts) == list(range(1, len(counts) + 1))


def test_stop_then_resume_with_another_parallelism_continues_exactly(tmp_path):
    n = 3000
    sink = rs.CollectSink(exactly_once=True)
    src = rs.IterableSource(list(range(n)), partitions=2, rate=1500)
    ckpt = str(tmp_path / "ckpt")
    run = _running_counts_flow("resume", src, sink).run(
        parallelism=2, checkpoint_every=0.2, checkpoint_dir=ckpt
    )
    wait_for(lambda: sink.count() > 300, timeout=30, what="some output")
    run.stop(timeout=60)
    assert run.status == "stopped"
    first = sink.count()
    assert 0 < first < n
    run2 = _running_counts_flow("resume", src, sink).run(
        parallelism=3, checkpoint_every=0.2, checkpoint_dir=ckpt, resume=True
    )
    run2.wait(timeout=60)
    _assert_exactly_once(sink.items(), n)


def test_killed_operator_actors_are_recovered_with_exactly_once_output():
    n = 4000
    sink = rs.CollectSink(exactly_once=True)
    src = rs.IterableSource(list(range(n)), partitions=2, rate=1500)
    run = _running_counts_flow("chaos", src, sink).run(parallelism=2, checkpoint_every=0.2)
    for killed, stage in enumerate((1, 0, 1)):  # a keyed actor, a source actor, keyed again
        before = run.restarts
        wait_for(
            lambda: run.last_checkpoint >= 2 and run.status == "running",
            timeout=30,
            what="a checkpoint",
        )
        rtml.kill(run._actors[stage][killed % 2])
        wait_for(
            lambda b=before: run.restarts > b or run.status == "finished",
            timeout=30,
            what="recovery",
        )
    run.wait(timeout=90)
    assert run.restarts == 3
    _assert_exactly_once(sink.items(), n)


class _Slow:
    def __init__(self):
        self.n = 0

    def write(self, records):
        time.sleep(0.01 * len(records) / 50)
        self.n += len(records)
        return self.n

    def count(self):
        return self.n


def test_a_slow_sink_slows_the_source_down_and_buffers_stay_bounded():
    slow = rtml.remote(num_cpus=0)(_Slow).remote()
    flow = rs.Dataflow("bp")
    (
        flow.source(rs.IterableSource(list(range(200_000))))
        .key_by(lambda x: x % 3)
        .stateful_map(lambda s, x: (None, x))
        .sink(rs.ActorSink(slow))
    )
    run = flow.run(parallelism=1, max_batch=256)
    gaps = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        m = run.metrics()
        read = m["operators"].get("source_0", {}).get("out", 0)
        written = rtml.get(slow.count.remote(), timeout=10)
        gaps.append(read - written)
    run.stop(timeout=60)
    assert read < 200_000  # the source did not race ahead to the end
    # At most: 4 calls in flight per edge, 8 to the sink, a batch per stage in hand.
    assert max(gaps) <= 256 * (4 + 8 + 4), gaps


def test_wait_draws_progress_for_a_bounded_source():
    import io

    flow = rs.Dataflow("progress")
    flow.source(rs.IterableSource(list(range(600)), rate=400)).sink(rs.CallableSink(lambda x: None))
    buf = io.StringIO()
    flow.run().wait(timeout=60, progress=True, file=buf)
    lines = [x for x in buf.getvalue().split("\r") if x.strip()]
    assert lines
    assert lines[0].startswith("progress: ")
    assert "/600" in lines[-1], lines  # the source knows its size


def test_processing_time_windows_close_by_the_clock():
    flow = rs.Dataflow("ptime")
    sink = rs.CollectSink()
    (
        flow.source(rs.IterableSource(list(range(300)), rate=300))
        .key_by(lambda x: "all")
        .window(rs.Tumbling(seconds=0.25, processing_time=True))
        .count()
        .sink(sink)
    )
    flow.run().wait(timeout=60)
    results = sink.items()
    assert sum(r.value for r in results) == 300
    assert len(results) >= 3  # a second of input over quarter-second windows
    assert all(r.end - r.start == 0.25 for r in results)


def test_windowed_stream_join_pairs_events_of_a_key_in_the_same_window():
    left = [{"k": i % 3, "ts": float(i)} for i in range(30)]
    right = [{"k": i % 3, "ts": float(i) + 0.5} for i in range(0, 30, 10)]
    flow = rs.Dataflow("wjoin")
    sink = rs.CollectSink()
    a = (
        flow.source(rs.IterableSource(left), name="left")
        .with_event_time(lambda e: e["ts"], max_out_of_order=100)
        .key_by(lambda e: e["k"])
    )
    b = (
        flow.source(rs.IterableSource(right), name="right")
        .with_event_time(lambda e: e["ts"], max_out_of_order=100)
        .key_by(lambda e: e["k"])
    )
    a.join(b, window=rs.Tumbling(seconds=10)).map(lambda p: (p[0]["ts"], p[1]["ts"])).sink(sink)
    flow.run(parallelism=2).wait(timeout=60)
    expect = sorted(
        (lt["ts"], rt["ts"])
        for lt in left
        for rt in right
        if lt["k"] == rt["k"] and lt["ts"] // 10 == rt["ts"] // 10
    )
    assert sorted(sink.items()) == expect
    assert expect


def test_a_joined_table_refreshes_while_the_dataflow_runs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "prices.parquet")
    pq.write_table(pa.table({"item": ["a"], "price": [1.0]}), path)
    prices = rs.Table.from_parquet(path, key="item")  # no time column: the latest row counts
    flow = rs.Dataflow("refresh")
    sink = rs.CollectSink()
    (
        flow.source(
            rs.IterableSource(lambda: ({"item": "a", "n": i} for i in range(10**9)), rate=200)
        )
        .key_by(lambda e: e["item"])
        .join_as_of(prices)
        .map(lambda p: p[1]["price"])
        .sink(sink)
    )
    run = flow.run()
    wait_for(lambda: sink.count() > 20, timeout=30, what="events priced")
    pq.write_table(pa.table({"item": ["a"], "price": [2.0]}), path)
    run.refresh(prices)
    wait_for(lambda: 2.0 in sink.items()[-5:], timeout=30, what="the new price")
    run.stop(timeout=60)
    got = sink.items()
    first_new = got.index(2.0)
    assert set(got[:first_new]) == {1.0}
    assert set(got[first_new:]) == {2.0}
