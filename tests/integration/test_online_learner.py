"""rtml.online with real actors: learning by calls and iterables, publishing, crash and resume
to exactly the uninterrupted model, the sink's writer, and a dataflow end to end."""

from __future__ import annotations

import pytest

river = pytest.importorskip("river")
from river import datasets, evaluate, linear_model, metrics, preprocessing  # noqa: E402

import rtml  # noqa: E402
from conftest import wait_for  # noqa: E402
from rtml.online import Learner, LearnerSink, ModelRegistry  # noqa: E402

DATA = list(datasets.Phishing())


def _model():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def test_learner_actor_matches_river_and_publishes(shared_runtime, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    lr = Learner(
        _model(), [metrics.Accuracy()], registry=reg, publish_every=500, publish_interval=3600
    )
    assert lr.learn_from(((x, y, float(i)) for i, (x, y) in enumerate(DATA)), batch=100) == len(
        DATA
    )
    assert rtml.get(lr.learn.remote({"bad": "x"}, True), timeout=30) is False
    stats = lr.get("stats")
    ref = evaluate.progressive_val_score(DATA, _model(), metrics.Accuracy())
    assert stats["metrics"]["Accuracy"] == ref.get()
    assert stats["counts"]["bad_features"] == 1
    assert lr.get("dead_letters")[0]["kind"] == "bad_features"
    assert reg.versions() == [1, 2]  # at 500 and 1000 samples
    assert (reg.get(2).position, reg.get(2).event_time) == (1000, 999.0)
    assert lr.get("publish") == 3
    with reg.subscriber(interval=0.01) as sub:
        assert sub.predict_one(DATA[0][0])[1] == 3
    lr.kill()


def test_crash_and_resume_ends_with_the_uninterrupted_model(shared_runtime, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    a = Learner(
        _model(), [metrics.Accuracy()], registry=reg, publish_every=300, publish_interval=3600
    )
    a.learn_from(DATA[:700], batch=50)
    a.kill()  # crash mid-stream: the last snapshot is at 600, not 700
    b = Learner(
        _model(),
        [metrics.Accuracy()],
        registry=reg,
        publish_every=300,
        publish_interval=3600,
        resume=True,
    )
    pos = b.get("position")
    assert pos == 600
    b.learn_from(DATA[pos:], batch=50)
    resumed = b.get("get_state")
    b.kill()
    whole = Learner(_model(), [metrics.Accuracy()])
    whole.learn_from(DATA, batch=50)
    ref = whole.get("get_state")
    whole.kill()
    assert resumed.position == ref.position == len(DATA)
    assert resumed.metric_values() == ref.metric_values()
    lr_a, lr_b = resumed.model["LogisticRegression"], ref.model["LogisticRegression"]
    assert dict(lr_a.weights) == dict(lr_b.weights)
    assert lr_a.intercept == lr_b.intercept
    assert [resumed.model.predict_proba_one(x) for x, _ in DATA[:50]] == [
        ref.model.predict_proba_one(x) for x, _ in DATA[:50]
    ]


def test_sink_writer_feeds_the_learner_with_flow_control(shared_runtime):
    lr = Learner(_model())
    sink = LearnerSink(lr, sample=lambda r: (r["features"], r["label"]))
    w = sink.open("w0", 0, 1)
    for i in range(0, 400, 40):
        w.write([{"features": x, "label": y} for x, y in DATA[i : i + 40]])
    w.flush()
    assert lr.get("position") == 400
    w.close()
    lr.kill()


def test_sink_ordered_by_time_learns_each_batch_in_event_time_order(shared_runtime):
    timed = [(x, y, float(i)) for i, (x, y) in enumerate(DATA[:400])]
    lr = Learner(_model(), [metrics.Accuracy()])
    w = LearnerSink(lr, order="time").open("w0", 0, 1)
    for i in range(0, 400, 100):  # each batch arrives newest first
        w.write(list(reversed(timed[i : i + 100])))
    w.write_epoch(1, [])
    w.flush()
    ref = evaluate.progressive_val_score(DATA[:400], _model(), metrics.Accuracy())
    assert lr.get("stats")["metrics"]["Accuracy"] == ref.get()
    arrival = Learner(_model(), [metrics.Accuracy()])
    w2 = LearnerSink(arrival).open("w0", 0, 1)
    for i in range(0, 400, 100):
        w2.write(list(reversed(timed[i : i + 100])))
    w2.flush()
    assert arrival.get("stats")["metrics"]["Accuracy"] != ref.get()  # the order mattered
    with pytest.raises(ValueError, match="order='random'"):
        LearnerSink(lr, order="random")
    w.close()
    w2.close()
    lr.kill()
    arrival.kill()


def test_dataflow_into_a_learner(shared_runtime):
    from rtml.stream import Dataflow, IterableSource

    lr = Learner(_model(), [metrics.Accuracy()])
    flow = Dataflow("online-learn")
    flow.source(IterableSource([{"x": x, "y": y} for x, y in DATA])).sink(lr.sink())
    flow.run().wait(timeout=60)
    wait_for(lambda: lr.get("position") == len(DATA), timeout=30, what="all samples learned")
    ref = evaluate.progressive_val_score(DATA, _model(), metrics.Accuracy())
    assert lr.get("stats")["metrics"]["Accuracy"] == ref.get()
    lr.kill()


def test_key_partitioned_models_equal_one_model_per_key(shared_runtime):
    from rtml.online import OnlineState, PartitionedLearner

    samples = [(i % 5, x, y) for i, (x, y) in enumerate(DATA)]
    pl = PartitionedLearner(_model(), [metrics.Accuracy()], n_actors=2)
    assert pl.learn_from(samples, batch=64) == len(DATA)
    got = pl.stats()
    for key in range(5):
        st = OnlineState(_model(), [metrics.Accuracy()], window=0)
        for k, x, y in samples:
            if k == key:
                st.learn(x, y)
        assert got[key]["metrics"]["Accuracy"] == st.metric_values()["Accuracy"]
        assert got[key]["position"] == st.position
    assert [pl.predict(4, x) for x, _ in DATA[:20]] == [st.predict(x) for x, _ in DATA[:20]]
    pl.kill()


def test_data_parallel_averaging_merges_replicas(shared_runtime):
    from river import tree

    from rtml.online import DataParallelLearner

    with pytest.raises(TypeError, match="cannot merge HoeffdingTreeClassifier"):
        DataParallelLearner(tree.HoeffdingTreeClassifier())
    dp = DataParallelLearner(_model(), [metrics.Accuracy()], n_actors=2, sync_every=200)
    avg = dp.learn_from(DATA, batch=50)
    assert dp.syncs >= 6
    st = dp.stats()
    assert sum(s["position"] for s in st) == len(DATA)
    assert set(avg["StandardScaler"].counts.values()) == {len(DATA)}  # pooled exactly
    pooled = sum(s["metrics"]["Accuracy"] * s["position"] for s in st) / len(DATA)
    assert pooled > 0.8
    dp.kill()


def test_a_learner_is_a_row_of_the_dashboard_panel(shared_runtime, tmp_path):
    from rtml.dashboard._panels import panels_view
    from rtml.online import _panel

    reg = ModelRegistry(tmp_path / "reg")
    lr = Learner(
        _model(), [metrics.Accuracy()], registry=reg, publish_every=100, publish_interval=3600
    )
    lr.learn_from(((x, y) for x, y in DATA[:300]), batch=100)
    rtml.get(lr.learn.remote({"bad": "x"}, True), timeout=30)
    _panel.PANEL.expire()  # no rows cached by an earlier refresh
    (panel,) = [p for p in panels_view() if p["name"] == "online"]
    (row,) = [r for r in panel["rows"] if r.get("position") == 300]
    assert row["model"] == "Pipeline"
    assert row["status"] == "learning"
    assert row["rejected"] == 1
    assert row["version"] == 3
    assert 0 < row["Accuracy"] <= 1
    lr.kill()


def test_mini_batch_learner_in_an_actor(shared_runtime):
    pytest.importorskip("pandas")
    from rtml.online import OnlineState

    lr = Learner(_model(), [metrics.Accuracy()], window=0, mini_batch=True)
    assert lr.learn_from(DATA, batch=100) == len(DATA)
    st = OnlineState(_model(), [metrics.Accuracy()], window=0, mini_batch=True)
    for i in range(0, len(DATA), 100):
        st.learn_many(DATA[i : i + 100])
    assert lr.get("stats")["metrics"] == st.metric_values()  # the same batches, same figures
    lr.kill()


def test_partitioned_learner_publishes_one_version_and_resumes_on_more_actors(
    shared_runtime, tmp_path
):
    from rtml.online import OnlineState, PartitionedLearner, ShardedState

    reg = ModelRegistry(tmp_path / "reg")
    samples = [(i % 5, x, y) for i, (x, y) in enumerate(DATA)]
    a = PartitionedLearner(
        _model(), [metrics.Accuracy()], n_actors=2, registry=reg, publish_every=300
    )
    a.learn_from(samples[:700], batch=64)
    a.kill()
    v = reg.latest()
    assert isinstance(v.state, ShardedState)
    assert v.position == 700
    assert sorted(v.state.states) == [0, 1, 2, 3, 4]
    assert v.metrics["keys"] == 5
    b = PartitionedLearner(_model(), [metrics.Accuracy()], n_actors=3, registry=reg, resume=True)
    assert b.resumed_from == v.number
    b.learn_from(samples[700:], batch=64)
    got = b.stats()
    for key in range(5):
        st = OnlineState(_model(), [metrics.Accuracy()], window=0)
        for k, x, y in samples:
            if k == key:
                st.learn(x, y)
        assert got[key]["metrics"] == st.metric_values()
        assert got[key]["position"] == st.position
    assert reg.latest().position == len(DATA)
    b.kill()


def test_data_parallel_learner_publishes_its_average_and_resumes(shared_runtime, tmp_path):
    from rtml.online import AveragedState, DataParallelLearner

    reg = ModelRegistry(tmp_path / "reg")
    dp = DataParallelLearner(
        _model(), [metrics.Accuracy()], n_actors=2, sync_every=200, registry=reg
    )
    avg = dp.learn_from(DATA[:600], batch=50)
    dp.kill()
    v = reg.latest()
    assert isinstance(v.state, AveragedState)
    assert v.position == 600
    assert len(reg.versions()) >= 3
    assert dict(v.model["LogisticRegression"].weights) == dict(avg["LogisticRegression"].weights)
    with reg.subscriber(follow=False) as sub:  # what a server would serve: the average
        assert sub.predict_one(DATA[0][0])[1] == v.number
    dp2 = DataParallelLearner(
        _model(), [metrics.Accuracy()], n_actors=2, sync_every=200, registry=reg, resume=True
    )
    assert dp2.resumed_from == v.number
    dp2.learn_from(DATA[600:], batch=50)
    assert reg.latest().position == len(DATA)
    assert set(reg.latest().model["StandardScaler"].counts.values()) == {len(DATA)}
    dp2.kill()


def test_a_dataflow_feeds_partitioned_shards_directly(shared_runtime):
    from rtml.online import OnlineState, PartitionedLearner
    from rtml.stream import Dataflow, IterableSource

    samples = [(i % 4, x, y) for i, (x, y) in enumerate(DATA)]  # key i % 4: one partition each
    pl = PartitionedLearner(_model(), [metrics.Accuracy()], n_actors=2)
    flow = Dataflow("online-partitioned-sink")
    flow.source(IterableSource(samples, partitions=2)).sink(pl.sink())
    flow.run(parallelism=2).wait(timeout=60)
    wait_for(
        lambda: sum(s["position"] for s in pl.stats().values()) == len(DATA),
        timeout=30,
        what="every sample learned",
    )
    got = pl.stats()
    for key in range(4):
        st = OnlineState(_model(), [metrics.Accuracy()], window=0)
        for k, x, y in samples:
            if k == key:
                st.learn(x, y)
        assert got[key]["metrics"] == st.metric_values()
    pl.kill()
