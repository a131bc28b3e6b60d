"""rtml.online without processes: parity with River's progressive_val_score, delayed labels,
drift and bad input (the registry and its subscriber: tests/integration/test_online_registry.py)."""

from __future__ import annotations

import pytest

river = pytest.importorskip("river")
from river import (  # noqa: E402  # noqa: E402
    datasets,
    drift,
    ensemble,
    evaluate,
    linear_model,
    metrics,
    preprocessing,
    stream,
    tree,
)
from river.datasets import synth  # noqa: E402

from rtml.online import Drift, OnlineState  # noqa: E402


def _models():
    return {
        "logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "hoeffding": lambda: tree.HoeffdingTreeClassifier(),
        "ensemble": lambda: ensemble.BaggingClassifier(
            tree.HoeffdingTreeClassifier(), n_models=3, seed=42
        ),
    }


def _datasets():
    return {
        "phishing": lambda: datasets.Phishing(),
        "bananas": lambda: list(datasets.Bananas())[:2000],
        "drift": lambda: list(
            synth.ConceptDriftStream(seed=7, position=1000, width=100).take(2000)
        ),
    }


@pytest.mark.parametrize("data", sorted(_datasets()))
@pytest.mark.parametrize("name", sorted(_models()))
def test_parity_with_progressive_val_score(name, data):
    ref = evaluate.progressive_val_score(
        _datasets()[data](), _models()[name](), metrics.Accuracy() + metrics.ROCAUC()
    )
    st = OnlineState(_models()[name](), [metrics.Accuracy(), metrics.ROCAUC()], window=100)
    for x, y in _datasets()[data]():
        st.learn(x, y)
    acc, auc = list(ref)
    assert st.metric_values()["Accuracy"] == acc.get()  # digit for digit
    assert st.metric_values()["ROCAUC"] == auc.get()
    assert st.position == len(list(_datasets()[data]()))


def test_delayed_labels_match_river_with_delay():
    data = list(datasets.Phishing())
    mk = lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()  # noqa: E731
    ref = evaluate.progressive_val_score(data, mk(), metrics.Accuracy(), delay=25)
    st = OnlineState(mk(), [metrics.Accuracy()], window=0)
    for i, x, y in stream.simulate_qa(data, moment=None, delay=25):
        if y is None:
            st.ask(i, x, now=0.0)
        else:
            assert st.answer(i, y)
    assert st.metric_values()["Accuracy"] == ref.get()


def test_label_timeout_and_unknown_key_are_dead_lettered():
    st = OnlineState(linear_model.LogisticRegression(), window=0, label_timeout=5.0)
    st.ask("a", {"f": 1.0}, now=100.0)
    st.ask("b", {"f": 2.0}, now=103.0)
    assert st.expire(now=106.0) == 1
    assert not st.answer("a", True)  # expired
    assert st.answer("b", True)
    assert not st.answer("zzz", False)  # never asked
    assert st.counts["expired"] == 1
    assert st.counts["unknown_key"] == 2
    assert [d["kind"] for d in st.dead] == ["expired", "unknown_key", "unknown_key"]


class _Flaky(linear_model.LogisticRegression):
    def learn_one(self, x, y):
        if x.get("boom"):
            raise ValueError("boom")
        super().learn_one(x, y)


def test_bad_input_is_counted_and_the_learner_goes_on():
    st = OnlineState(_Flaky(), window=0, check_features=True)
    assert st.learn({"a": 1.0, "boom": 0}, True)
    assert not st.learn({"boom": 0}, False)  # missing feature
    assert not st.learn({"a": "high", "boom": 0}, False)  # wrong type
    assert not st.learn([1, 2], False)  # not a dict
    assert not st.learn({"a": 1.0, "boom": 1}, True)  # model raises
    assert st.learn({"a": 2.0, "boom": 0}, False)
    assert st.counts == {
        "learned": 2,
        "bad_features": 3,
        "model_error": 1,
        "unknown_key": 0,
        "expired": 0,
    }
    reasons = [d["reason"] for d in st.dead]
    assert "feature 'a' is missing" in reasons[0]
    assert "expected a number" in reasons[1]
    assert "ValueError: boom" in reasons[3]


def _drift_data():
    return list(
        synth.ConceptDriftStream(
            stream=synth.Agrawal(classification_function=0, seed=1),
            drift_stream=synth.Agrawal(classification_function=4, seed=1),
            seed=1,
            position=3000,
            width=200,
        ).take(6000)
    )


@pytest.mark.parametrize("action", ["alert", "reset", "swap"])
def test_drift_is_detected_recorded_and_acted_on(action):
    st = OnlineState(tree.HoeffdingTreeClassifier(), window=0, drift=Drift(action=action))
    first = st.model
    for x, y in _drift_data():
        st.learn(x, y)
    after = [d for d in st.drifts if d["position"] >= 3000]
    assert after, st.drifts
    assert all(d["action"] == action for d in st.drifts)
    assert (st.model is first) == (action == "alert")


def test_default_detector_is_adwin():
    assert isinstance(Drift().detector, drift.ADWIN)
    with pytest.raises(ValueError, match="use 'alert', 'reset' or 'swap'"):
        Drift(action="panic")


def test_average_pools_scaler_statistics_exactly():
    from rtml.online import average

    data = list(datasets.Phishing())
    mk = lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()  # noqa: E731
    a, b, whole = mk(), mk(), preprocessing.StandardScaler()
    for x, y in data[:500]:
        a.learn_one(x, y)
    for x, y in data[500:1000]:
        b.learn_one(x, y)
    for x, _ in data[:1000]:
        whole.learn_one(x)
    avg = average([a, b])
    for k in whole.means:
        assert avg["StandardScaler"].means[k] == pytest.approx(whole.means[k])
        assert avg["StandardScaler"].vars[k] == pytest.approx(whole.vars[k])
    wa, wb = dict(a["LogisticRegression"]._weights), dict(b["LogisticRegression"]._weights)
    for k, w in dict(avg["LogisticRegression"]._weights).items():
        assert w == pytest.approx((wa.get(k, 0) + wb.get(k, 0)) / 2)


def test_mini_batch_is_batch_prequential_with_learn_many():
    pd = pytest.importorskip("pandas")
    data = list(datasets.Phishing())
    mk = lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()  # noqa: E731
    st = OnlineState(mk(), [metrics.Accuracy(), metrics.LogLoss()], window=0, mini_batch=True)
    assert st.mini_batch
    ref, acc, loss = mk(), metrics.Accuracy(), metrics.LogLoss()
    for i in range(0, len(data), 64):
        batch = data[i : i + 64]
        assert st.learn_many(batch) == len(batch)
        X, Y = pd.DataFrame([x for x, _ in batch]), pd.Series([y for _, y in batch])
        for (_, y), p in zip(
            batch, ref.predict_proba_many(X).to_dict(orient="records"), strict=True
        ):
            acc.update(y, max(p, key=p.get))
            loss.update(y, p)
        ref.learn_many(X, Y)
    assert st.metric_values() == {"Accuracy": acc.get(), "LogLoss": loss.get()}
    assert st.position == len(data)
    assert dict(st.model["LogisticRegression"].weights) == dict(ref["LogisticRegression"].weights)
    bad = [(data[0][0], True), ({"nope": 1.0}, False), (data[1][0], False, 7.0)]
    assert st.learn_many(bad) == 2
    assert st.counts["bad_features"] == 1
    assert st.event_time == 7.0


def test_mini_batch_without_learn_many_stays_one_by_one_and_exact():
    data = list(datasets.Phishing())
    ref = evaluate.progressive_val_score(data, tree.HoeffdingTreeClassifier(), metrics.Accuracy())
    st = OnlineState(
        tree.HoeffdingTreeClassifier(), [metrics.Accuracy()], window=0, mini_batch=True
    )
    assert not st.mini_batch  # no learn_many: one by one
    for i in range(0, len(data), 100):
        st.learn_many(data[i : i + 100])
    assert st.metric_values()["Accuracy"] == ref.get()


def test_a_model_raising_in_learn_many_falls_back_to_one_by_one():
    pytest.importorskip("pandas")

    class Flaky(linear_model.LogisticRegression):
        def learn_one(self, x, y):
            if x.get("boom"):
                raise ValueError("boom")
            super().learn_one(x, y)

        def learn_many(self, X, y):
            if X["boom"].any():
                raise ValueError("boom in a batch")
            super().learn_many(X, y)

    st = OnlineState(Flaky(), window=0, mini_batch=True)
    assert st.learn_many([({"a": 1.0, "boom": 0}, True), ({"a": 2.0, "boom": 0}, False)]) == 2
    assert st.learn_many([({"a": 1.0, "boom": 1}, True), ({"a": 2.0, "boom": 0}, False)]) == 1
    assert st.counts["model_error"] == 1
    assert st.position == 3
