"""Planning dataflows into stages (fusion, shuffles) and the errors for misbuilt ones."""

from __future__ import annotations

import pytest

from rtml import stream as rs
from rtml.stream._plan import plan


def _src(n=4):
    return rs.IterableSource(list(range(100)), partitions=n)


def test_stateless_operators_fuse_and_keyed_ones_start_a_stage():
    flow = rs.Dataflow("f")
    s = flow.source(_src()).map(str).filter(bool).with_event_time(float)
    w = s.key_by(len).window(rs.Tumbling(seconds=1)).count()
    w.map(repr).sink(rs.CallableSink(print))
    w.stateful_map(lambda st, v: (v, v)).sink(rs.CallableSink(print))  # same key: fused
    p = plan(flow, 3, {0: ["0", "1", "2", "3"]})
    assert [st.kind for st in p.stages] == ["source", "keyed"]
    assert p.stages[0].parallelism == 3
    assert p.stages[1].parallelism == 3
    assert [p.nodes[n].kind for n in p.stages[1].nodes] == [
        "window",
        "map",
        "sink",
        "stateful_map",
        "sink",
    ]
    assert len(p.edges) == 1
    assert len(p.channels(1)) == 3


def test_a_join_takes_two_shuffled_inputs():
    flow = rs.Dataflow("j")
    a = flow.source(_src(1), name="a").with_event_time(float).key_by(int)
    b = flow.source(_src(1), name="b").with_event_time(float).key_by(int)
    a.interval_join(b, lower=0, upper=1).sink(rs.CallableSink(print))
    p = plan(flow, 2, {n.id: ["0"] for n in flow.nodes if n.kind == "source"})
    assert [st.kind for st in p.stages] == ["source", "source", "keyed"]
    assert sorted(p.edges[e].side for e in p.stages[2].inputs) == [0, 1]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda f: f.source(_src()).map(str), "no sink"),
        (
            lambda f: (
                f.source(_src())
                .key_by(int)
                .window(rs.Tumbling(seconds=1))
                .count()
                .sink(rs.CallableSink(print))
            ),
            "event time",
        ),
        (
            lambda f: (
                f.source(_src())
                .key_by(int)
                .stateful_map(lambda s, v: (s, v))
                .with_event_time(float)
                .key_by(int)
                .window(rs.Tumbling(seconds=1))
                .count()
                .sink(rs.CallableSink(print))
            ),
            "before key_by",
        ),
        (lambda f: f.source(_src()).map(str).late, "window and join"),
        (lambda f: f.source(_src()).map(str).dead_letters, "dead_letter=True"),
        (lambda f: f.source([1, 2]), "Source"),
        (lambda f: f.source(_src()).map(3), "function"),
        (lambda f: f.source(_src()).sink(print), "Sink"),
    ],
)
def test_misbuilt_dataflows_are_refused_with_the_fix(build, match):
    flow = rs.Dataflow("bad")
    with pytest.raises(rs.StreamConfigError, match=match):
        build(flow)
        plan(flow, 1, {0: ["0", "1", "2", "3"]})


def test_iterable_source_refuses_what_it_cannot_replay():
    with pytest.raises(rs.StreamConfigError, match="replay"):
        rs.IterableSource(iter([1, 2]))
    src = rs.IterableSource(lambda i: range(i, 10, 2), partitions=2)
    assert src.open("1", 2).read(10, 0) == [5, 7, 9]


def test_iterable_source_resumes_from_an_offset():
    src = rs.IterableSource(list(range(10)), partitions=2)
    r = src.open("1", None)
    assert r.read(3, 0) == [1, 3, 5]
    again = src.open("1", r.offset())
    assert again.read(10, 0) == [7, 9]
    assert again.done()
