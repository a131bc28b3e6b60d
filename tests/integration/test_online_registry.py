"""rtml.online's model registry on both backends (a directory, a real redis-server): versions,
atomic publish, pin / unpin / rollback, keep=, pickling into other processes, a learner's
crash and resume; and its Subscriber's freshness, version lag, load times and exports."""

from __future__ import annotations

import sys
import threading
import time

import pytest

river = pytest.importorskip("river")
from river import datasets, linear_model, metrics, preprocessing  # noqa: E402

import rtml  # noqa: E402
from conftest import wait_for  # noqa: E402
from rtml.online import Learner, ModelRegistry, OnlineState, PublishError  # noqa: E402

DATA = list(datasets.Phishing())


@pytest.fixture(params=["dir", "redis"])
def location(request, tmp_path):
    """Where a registry lives: a fresh directory, or a fresh redis-server."""
    if request.param == "dir":
        return str(tmp_path / "reg")
    return f"redis://{request.getfixturevalue('redis_address')}/0"


def _state(n: int = 0, t: float | None = None) -> OnlineState:
    st = OnlineState(linear_model.LogisticRegression(), window=0)
    for x, y in DATA[:n]:
        st.learn(x, y, t)
    return st


def test_versions_pin_unpin_rollback_and_subscriber(location):
    reg = ModelRegistry(location, name="ctr")
    assert reg.head() == (0, None)
    assert reg.versions() == []
    assert reg.poll(0) is None
    st = OnlineState(linear_model.LogisticRegression(), window=0)
    for x, y in DATA[:100]:
        st.learn(x, y, t=1.5)
    v1 = reg.publish(st)
    for x, y in DATA[100:200]:
        st.learn(x, y, t=2.5)
    v2 = reg.publish(st)
    assert (v1.number, v2.number) == (1, 2)
    assert reg.versions() == [1, 2]
    got = reg.get(1)
    assert (got.position, got.event_time) == (100, 1.5)
    assert got.metrics == pytest.approx(v1.metrics)
    assert got.model.predict_proba_one(DATA[0][0]) == pytest.approx(
        v1_model_proba(DATA[:100], DATA[0][0])
    )
    sub = reg.subscriber(follow=False)
    assert sub.version.number == 2
    assert reg.poll(2) is None
    assert reg.poll(1) == 2
    _, n = sub.predict_proba_one(DATA[0][0])
    assert n == 2
    reg.pin(1)
    assert reg.head() == (2, 1)
    assert reg.current() == 1
    assert sub.refresh()
    assert sub.version.number == 1
    assert sub.stats()["version_lag"] == 1
    reg.publish(st)
    assert not sub.refresh()  # pinned: a new version is not served
    assert sub.stats()["version_lag"] == 2
    reg.unpin()
    assert sub.refresh()
    assert sub.version.number == 3
    assert reg.rollback() == 2
    assert sub.refresh()
    assert sub.version.number == 2
    assert reg.rollback() == 1
    assert reg.current() == 1
    with pytest.raises(KeyError, match="no older version"):
        reg.rollback()
    with pytest.raises(KeyError, match="version 9"):
        reg.pin(9)
    with pytest.raises(KeyError, match="version 9"):
        reg.get(9)
    assert reg.latest().number == 3
    # another model under another name is independent
    other = ModelRegistry(location, name="fraud")
    assert other.versions() == []
    assert other.publish(st).number == 1
    assert reg.versions() == [1, 2, 3]


def v1_model_proba(samples, x):
    m = linear_model.LogisticRegression()
    for xi, yi in samples:
        m.predict_proba_one(xi)
        m.learn_one(xi, yi)
    return m.predict_proba_one(x)


def test_unpicklable_model_fails_at_publish_naming_the_attribute(location):
    model = linear_model.LogisticRegression()
    model.lock = threading.Lock()
    with pytest.raises(PublishError, match=r"state\.model\.lock \(lock\)"):
        ModelRegistry(location).publish(OnlineState(model, window=0))


def test_keep_bounds_the_versions_but_never_drops_the_pinned_one(location):
    reg = ModelRegistry(location, keep=2)
    st = _state(10)
    for _ in range(3):
        reg.publish(st)
    assert reg.versions() == [2, 3]
    reg.pin(2)
    for _ in range(3):
        reg.publish(st)
    assert reg.versions() == [2, 5, 6]
    assert reg.current() == 2
    with pytest.raises(KeyError, match="version 1"):
        reg.get(1)
    reg.unpin()
    reg.publish(st)
    assert reg.versions() == [6, 7]
    with pytest.raises(ValueError, match="keep at least 1"):
        ModelRegistry(location, keep=0)


def test_a_reader_never_sees_a_half_written_version(location):
    """Big snapshots published back to back while another thread reads the current one."""
    reg = ModelRegistry(location)
    st = _state(50)
    st.ballast = b"x" * 4_000_000  # a 4 MB snapshot takes a while to write
    reg.publish(st)
    errors, read = [], []
    stop = threading.Event()

    def reader():
        r = ModelRegistry(location)
        while not stop.is_set():
            try:
                v = r.get()
                assert len(v.state.ballast) == 4_000_000
                read.append(v.number)
            except Exception as e:  # pragma: no cover - what the test looks for
                errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    for _ in range(8):
        reg.publish(st)
    stop.set()
    th.join(30)
    assert errors == []
    assert read
    assert read == sorted(read)


def test_subscriber_swaps_while_predictions_go_on_and_counts_them(location):
    reg = ModelRegistry(location)
    st = OnlineState(linear_model.LogisticRegression(), window=0)
    reg.publish(st)
    seen, errors = [], []
    with reg.subscriber(interval=0.001) as sub:
        stop = threading.Event()

        def predict():
            while not stop.is_set():
                try:
                    seen.append(sub.predict_one(DATA[0][0])[1])
                except Exception as e:  # pragma: no cover - what the test looks for
                    errors.append(e)

        threads = [threading.Thread(target=predict) for _ in range(3)]
        for th in threads:
            th.start()
        for i in range(20):
            for x, y in DATA[i * 10 : (i + 1) * 10]:
                st.learn(x, y, t=time.time())
            reg.publish(st)
            time.sleep(0.01)
        wait_for(lambda: seen and seen[-1] == 21, timeout=10, what="the last version served")
        stop.set()
        for th in threads:
            th.join(timeout=10)
        stats = sub.stats()
    assert errors == []
    assert sub.swaps >= 2
    assert stats["swaps"] == sub.swaps
    assert stats["predictions"] == len(seen)  # no prediction lost by the lock-free counter
    assert stats["version"] == 21
    assert stats["latest"] == 21
    assert stats["version_lag"] == 0
    # every version that served was timed once, after its newest event
    assert 1 <= stats["freshness_n"] <= 20
    assert 0 < stats["freshness_p50_s"] <= stats["freshness_p99_s"] < 5
    assert stats["load_ms_p99"] > 0


def test_freshness_is_first_prediction_minus_event_time_and_exports(location):
    reg = ModelRegistry(location, name="ctr")
    st = _state(20, t=1000.0)
    reg.publish(st)
    sub = reg.subscriber(follow=False)
    assert sub.stats()["freshness_n"] == 0
    assert sub.stats()["freshness_p99_s"] is None
    before = time.time()
    sub.predict_one(DATA[0][0])
    after = time.time()
    sub.predict_one(DATA[1][0])  # only the first prediction of a version times it
    st2 = _state(30, t=before - 0.5)
    reg.publish(st2)
    sub.refresh()
    sub.predict_proba_one(DATA[0][0])
    s = sub.stats()
    assert s["freshness_n"] == 2
    assert s["predictions"] == 3
    assert s["swaps"] == 2
    assert before - 1000.001 <= s["freshness_p99_s"] <= after - 1000.0 + 1  # version 1
    assert 0.5 <= s["freshness_p50_s"] < 5  # version 2: served ~0.5 s after its event
    assert set(s) >= {
        "version",
        "swaps",
        "predictions",
        "freshness_p50_s",
        "freshness_p99_s",
        "version_lag",
        "load_ms_p99",
    }
    text = sub.prometheus()
    assert f'rtml_online_model_version{{registry="ctr",subscriber="{sub.id}"}} 2' in text
    assert "# TYPE rtml_online_freshness_seconds summary" in text
    assert 'quantile="0.99"' in text
    assert "rtml_online_predictions_total" in text
    assert "rtml_online_version_lag" in text
    assert "rtml_online_load_milliseconds" in text
    resp = sub.response(DATA[0][0], proba=True)
    assert resp.headers["x-model-version"] == "2"
    assert b'"version":2' in resp.body
    assert b'"True":' in resp.body
    assert sub.predict(DATA[0][0]) == {"prediction": sub.predict_one(DATA[0][0])[0], "version": 2}
    m = sub.metrics_response()
    assert m.media_type.startswith("text/plain")
    assert b"rtml_online_swaps_total" in m.body


class _Remote:
    """Another process: publishes to, and subscribes to, a registry it got pickled."""

    def __init__(self, reg: ModelRegistry) -> None:
        self.reg = reg
        self.sub = None

    def publish(self, n: int) -> list[int]:
        return [self.reg.publish(_state(5)).number for _ in range(n)]

    def follow(self) -> int:
        self.sub = self.reg.subscriber(interval=0.01)
        return self.sub.version.number if self.sub.version else 0

    def predict(self) -> tuple:
        return self.sub.predict_one(DATA[0][0])

    def stop(self) -> None:
        self.sub.close()


def test_the_registry_travels_into_actors_and_their_subscribers_report(shared_runtime, location):
    from rtml.online import _panel

    reg = ModelRegistry(location, name="ctr")
    reg.publish(_state(5))
    actors = [rtml.remote(_Remote).remote(reg) for _ in range(2)]
    if location.startswith("redis"):  # concurrent publishers get distinct numbers
        nums = rtml.get([a.publish.remote(20) for a in actors], timeout=60)
        assert sorted(nums[0] + nums[1]) == list(range(2, 42))
    else:
        rtml.get(actors[0].publish.remote(40), timeout=60)
    assert reg.versions()[-1] == 41
    assert rtml.get(actors[1].follow.remote(), timeout=30) == 41
    assert rtml.get(actors[1].predict.remote(), timeout=30)[1] == 41
    wait_for(
        lambda: any(r["predictions"] == 1 for r in reg.subscribers()),
        timeout=10,
        what="the remote subscriber's report (every 2 s)",
    )
    (rep,) = reg.subscribers()
    assert rep["version"] == rep["latest"] == 41
    from rtml.dashboard._panels import panels_view

    _panel.expire_served()
    (panel,) = [p for p in panels_view() if p["name"] == "online-served"]
    rows = [r for r in panel["rows"] if r["subscriber"] == rep["subscriber"]]
    assert rows
    assert rows[0]["version"] == 41
    assert rows[0]["registry"] == reg.describe()
    rtml.get(actors[1].stop.remote(), timeout=30)
    assert reg.subscribers() == []  # a closed subscriber leaves the panel
    for a in actors:
        rtml.kill(a)


def test_a_learner_resumes_from_its_registry_after_a_crash(shared_runtime, location):
    def model():
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()

    reg = ModelRegistry(location, name="phishing")
    a = Learner(
        model(), [metrics.Accuracy()], registry=reg, publish_every=300, publish_interval=3600
    )
    a.learn_from(DATA[:700], batch=50)
    a.kill()  # the last snapshot is at 600
    b = Learner(
        model(),
        [metrics.Accuracy()],
        registry=ModelRegistry(location, name="phishing"),
        publish_every=300,
        publish_interval=3600,
        resume=True,
    )
    assert b.get("position") == 600
    b.learn_from(DATA[600:], batch=50)
    resumed = b.get("get_state")
    b.kill()
    whole = OnlineState(model(), [metrics.Accuracy()])
    for x, y in DATA:
        whole.learn(x, y)
    assert resumed.metric_values() == whole.metric_values()


def test_redis_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"rtml\[stream\]"):
        ModelRegistry("redis://127.0.0.1:1/0")


def test_unreachable_redis_is_named():
    with pytest.raises(ConnectionError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        ModelRegistry("redis://127.0.0.1:1/0")
