"""A dataflow-fed learner through crashes, exactly once: the learner's actor SIGKILLed (it
restarts from its last snapshot), killed through the engine, and the dataflow stage holding
the sink killed, fused with the source or a keyed stage of its own (the dataflow restores its
checkpoint); each run ends with exactly the model, metrics and counts of an uninterrupted run,
and the published versions stay monotonic. Also the dead-letter output, to real sinks."""

from __future__ import annotations

import os
import signal

import pytest

river = pytest.importorskip("river")
from river import datasets, linear_model, metrics, preprocessing  # noqa: E402

import rtml  # noqa: E402
from conftest import wait_for  # noqa: E402
from rtml.online import Learner, ModelRegistry, OnlineState  # noqa: E402
from rtml.stream import CollectSink, Dataflow, IterableSource  # noqa: E402
from rtml.util.state import list_actors  # noqa: E402

DATA = list(datasets.Phishing())
RECORDS = [{"x": x, "y": y, "t": float(i)} for i, (x, y) in enumerate(DATA)]


def _model():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _reference() -> OnlineState:
    st = OnlineState(_model(), [metrics.Accuracy()], window=1000)
    for r in RECORDS:
        st.learn(r["x"], r["y"], r["t"])
    return st


def _assert_same(got: OnlineState, ref: OnlineState) -> None:
    assert got.position == ref.position == len(DATA)
    assert got.seen == ref.seen
    assert got.counts == ref.counts
    assert got.event_time == ref.event_time
    assert got.metric_values() == ref.metric_values()  # whole stream and rolling window
    a, b = got.model["LogisticRegression"], ref.model["LogisticRegression"]
    assert dict(a.weights) == dict(b.weights)
    assert a.intercept == b.intercept
    assert [got.model.predict_proba_one(x) for x, _ in DATA[:50]] == [
        ref.model.predict_proba_one(x) for x, _ in DATA[:50]
    ]


def _assert_monotonic(reg: ModelRegistry) -> None:
    vs = [reg.get(n) for n in reg.versions()]
    assert [v.number for v in vs] == sorted({v.number for v in vs})
    positions = [v.position for v in vs]
    assert positions == sorted(positions), positions
    assert positions[-1] == len(DATA)


def _start(name: str, lr: Learner, rate: float):
    flow = Dataflow(name)
    flow.source(IterableSource(RECORDS, rate=rate)).sink(lr.sink())
    return flow.run(checkpoint_every=0.2)


def _learner(reg: ModelRegistry) -> Learner:
    return Learner(
        _model(), [metrics.Accuracy()], registry=reg, publish_every=200, publish_interval=3600
    )


def _sigkill(handle) -> None:
    aid = handle._actor_id.hex()
    pid = wait_for(
        lambda: next(
            (
                r["pid"]
                for r in list_actors(limit=10_000)
                if r["actor_id"] == aid and r["state"] == "ALIVE"
            ),
            None,
        ),
        timeout=30,
        what="the learner's actor to be alive",
    )
    os.kill(pid, signal.SIGKILL)


def _finish(run, lr: Learner) -> OnlineState:
    run.wait(timeout=90)
    wait_for(lambda: lr.get("position") == len(DATA), timeout=60, what="every sample learned")
    return lr.get("get_state")


def test_sigkilled_learner_restarts_from_its_snapshot_exactly_once(shared_runtime, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    lr = _learner(reg)
    run = _start("online-eo-sigkill", lr, rate=500)
    wait_for(lambda: lr.get("position") >= 400, timeout=30, what="learning under way")
    _sigkill(lr.handle)
    got = _finish(run, lr)
    assert lr.get("stats")["restored_from"] is not None  # it did restart from a version
    assert run.restarts == 0  # the dataflow never noticed: the calls were re-sent
    _assert_same(got, _reference())
    _assert_monotonic(reg)
    lr.kill()


def test_learner_killed_through_the_engine_twice(shared_runtime, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    lr = _learner(reg)
    run = _start("online-eo-kill", lr, rate=600)
    for at in (300, 800):
        wait_for(lambda a=at: lr.get("position") >= a, timeout=30, what=f"position {at}")
        lr.kill(restart=True)
    got = _finish(run, lr)
    _assert_same(got, _reference())
    _assert_monotonic(reg)
    lr.kill()


def test_killed_dataflow_stage_recovers_and_the_learner_skips_what_it_has(shared_runtime, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    lr = _learner(reg)
    run = _start("online-eo-stage", lr, rate=250)  # 5 s of input
    wait_for(
        lambda: run.last_checkpoint >= 2 and lr.get("position") > 0,
        timeout=30,
        what="learning under way",
    )
    assert run.status == "running"
    rtml.kill(run._actors[0][0])  # the source stage, with the learner's sink fused in
    wait_for(
        lambda: run.restarts == 1 or run.status == "finished",
        timeout=30,
        what="the dataflow's recovery",
    )
    got = _finish(run, lr)
    assert run.restarts == 1
    _assert_same(got, _reference())
    _assert_monotonic(reg)
    lr.kill()


def test_dead_letters_go_to_a_sink_as_they_happen(shared_runtime):
    out = CollectSink()
    lr = Learner(_model(), [metrics.Accuracy()], dead_letters=out)
    samples = [(x, y) for x, y in DATA[:100]]
    samples[10] = ({"oops": "x"}, True)
    samples[20] = ([1, 2], False)
    lr.learn_from(samples, batch=25)
    assert lr.get("ask", "k1", DATA[0][0]) is not None
    assert rtml.get(lr.answer.remote("nope", True), timeout=30) is False
    lr.get("flush_dead_letters")  # the last may wait for a later call (at most every 0.1 s)
    wait_for(lambda: out.count() == 3, timeout=10, what="3 dead letters in the sink")
    recs = out.items()
    assert [r["kind"] for r in recs] == ["bad_features", "bad_features", "unknown_key"]
    assert [r["position"] for r in recs] == [11, 21, 101]
    assert "feature" in recs[0]["reason"]
    assert "dict" in recs[1]["reason"]
    assert recs[2]["item"] == ("nope", True)
    assert lr.get("stats")["dead_letter_output"]["sent"] == 3
    assert len(lr.get("dead_letters")) == 3  # still kept in the actor too
    lr.kill()


def test_dead_letters_to_a_callable_and_an_exactly_once_sink(shared_runtime, tmp_path):
    path = tmp_path / "dead.txt"

    def to_file(records):
        with open(path, "a") as f:
            for r in records:
                f.write(f"{r['kind']} {r['position']}\n")

    lr = Learner(_model(), dead_letters=to_file)
    lr.learn_from([({"a": 1.0}, True), ({"a": "x"}, False), ({"b": 1.0}, True)], batch=10)
    assert lr.get("flush_dead_letters") in (0, 2)
    wait_for(
        lambda: path.exists() and path.read_text().count("\n") == 2, timeout=10, what="2 lines"
    )
    assert path.read_text() == "bad_features 2\nbad_features 3\n"
    lr.kill()
    eo = CollectSink(exactly_once=True)
    lr = Learner(_model(), dead_letters=eo)
    lr.learn_from([({"a": 1.0}, True), ({"a": "x"}, False)], batch=10)
    wait_for(lambda: eo.count() == 1, timeout=10, what="1 dead letter")
    lr.kill()


def test_killed_keyed_stage_holding_the_sink(shared_runtime, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    lr = _learner(reg)
    flow = Dataflow("online-eo-keyed")
    (
        flow.source(IterableSource(RECORDS, rate=250))
        .key_by(lambda r: 0)
        .stateful_map(lambda s, r: (None, r))
        .sink(lr.sink())
    )
    run = flow.run(checkpoint_every=0.2)
    assert len(run._actors) == 2  # the source stage, and the keyed stage with the sink
    wait_for(
        lambda: run.last_checkpoint >= 2 and lr.get("position") > 0,
        timeout=30,
        what="learning under way",
    )
    assert run.status == "running"
    rtml.kill(run._actors[1][0])
    wait_for(
        lambda: run.restarts == 1 or run.status == "finished",
        timeout=30,
        what="the dataflow's recovery",
    )
    got = _finish(run, lr)
    assert run.restarts == 1
    _assert_same(got, _reference())
    _assert_monotonic(reg)
    lr.kill()
