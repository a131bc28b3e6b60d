"""``rtml.util.metrics``: Ray's Counter / Gauge / Histogram API, values recorded by the driver,
tasks and actors summed in one place, the Prometheus text, and the dashboard's panel and
``/metrics`` endpoint over real HTTP."""

from __future__ import annotations

import urllib.request

import pytest

import rtml
from conftest import wait_for
from rtml.util import metrics
from rtml.util.metrics import Counter, Gauge, Histogram, prometheus_text


@pytest.fixture(scope="module")
def ctx():
    c = rtml.init(num_cpus=2, dashboard_port=0)
    yield c
    rtml.shutdown()


def _series(name):
    return metrics.snapshot().get(name, {}).get("series", {})


def test_validation_errors_match_ray():
    with pytest.raises(ValueError, match="Empty name"):
        Counter("")
    with pytest.raises(ValueError, match="Invalid metric name"):
        Counter("1bad name")
    with pytest.raises(TypeError, match="tag_keys should be a tuple"):
        Counter("c", tag_keys=["a"])
    with pytest.raises(ValueError, match="boundaries argument should be provided"):
        Histogram("h")
    with pytest.raises(ValueError, match="positive values"):
        Histogram("h", boundaries=[0, 1])
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram("h", boundaries=[2, 1])
    c = Counter("c_valid", tag_keys=("route",))
    with pytest.raises(ValueError, match="Missing value for tag key"):
        c.inc()
    with pytest.raises(ValueError, match="Unrecognized tag key"):
        c.inc(1, tags={"other": "x"})
    with pytest.raises(ValueError, match="must be >0"):
        c.inc(0, tags={"route": "a"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        c.set_default_tags({"route": 3})
    with pytest.raises(TypeError, match="numbers"):
        Gauge("g_valid").set("high")
    assert c.set_default_tags({"route": "/"}) is c
    assert c.info["default_tags"] == {"route": "/"}


def test_prometheus_text_of_each_kind():
    snap = {
        "req_total": {
            "kind": "counter",
            "description": "Requests.",
            "tag_keys": ("route",),
            "boundaries": None,
            "series": {("/a",): 3.0, ('x"y',): 1.5},
        },
        "temp": {"kind": "gauge", "description": "", "tag_keys": (), "series": {(): -2.0}},
        "lat": {
            "kind": "histogram",
            "description": "Latency.",
            "tag_keys": (),
            "boundaries": [1.0, 2.5],
            "series": {(): [[1, 2, 1], 7.25]},
        },
    }
    assert prometheus_text(snap) == (
        "# HELP lat Latency.\n"
        "# TYPE lat histogram\n"
        'lat_bucket{le="1"} 1\n'
        'lat_bucket{le="2.5"} 3\n'
        'lat_bucket{le="+Inf"} 4\n'
        "lat_sum 7.25\n"
        "lat_count 4\n"
        "# HELP req_total Requests.\n"
        "# TYPE req_total counter\n"
        'req_total{route="/a"} 3\n'
        'req_total{route="x\\"y"} 1.5\n'
        "# HELP temp\n"
        "# TYPE temp gauge\n"
        "temp -2\n"
    )
    assert prometheus_text({}) == ""


@rtml.remote
def work(n):
    c = Counter("jobs_done", "Jobs finished.", tag_keys=("where",))
    h = Histogram("job_size", "Sizes.", boundaries=[1, 10], tag_keys=("where",))
    for i in range(n):
        c.inc(tags={"where": "task"})
        h.observe(i, tags={"where": "task"})
    return n


@rtml.remote
class Worker:
    def __init__(self):
        self.g = Gauge("queue_depth", "Items queued.", tag_keys=("who",))
        self.g.set_default_tags({"who": "actor"})
        self.c = Counter("jobs_done", "Jobs finished.", tag_keys=("where",))

    def step(self, depth):
        self.g.set(depth)
        self.c.inc(2, tags={"where": "actor"})
        return depth


def test_values_from_driver_tasks_and_actors_are_summed(ctx):
    assert rtml.get([work.remote(5) for _ in range(4)], timeout=60) == [5] * 4
    w = Worker.remote()
    assert rtml.get([w.step.remote(d) for d in (3, 7)], timeout=60) == [3, 7]
    Counter("jobs_done", tag_keys=("where",)).inc(0.5, tags={"where": "driver"})
    want = {("task",): 20.0, ("actor",): 4.0, ("driver",): 0.5}
    wait_for(lambda: _series("jobs_done") == want, timeout=30, what="jobs_done summed")
    wait_for(lambda: _series("queue_depth") == {("actor",): 7.0}, timeout=30, what="gauge")
    [(counts, total)] = _series("job_size").values()
    assert counts == [8, 12, 0]  # 0,1 -> le 1; 2..4 -> le 10; four tasks
    assert total == 40.0
    rtml.kill(w)


def test_dashboard_panel_and_metrics_endpoint(ctx):
    assert ctx.dashboard_url
    Gauge("dash_gauge", "Shown on the dashboard.").set(42)
    Histogram("dash_hist", boundaries=[0.5]).observe(0.25)

    def scrape():
        with urllib.request.urlopen(ctx.dashboard_url + "/metrics", timeout=30) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return r.read().decode()

    wait_for(lambda: "dash_gauge 42\n" in scrape(), timeout=30, what="gauge at /metrics")
    text = scrape()
    assert "# TYPE dash_gauge gauge\n" in text
    assert 'dash_hist_bucket{le="0.5"} 1\n' in text
    assert "dash_hist_count 1\n" in text

    def panel():
        import json

        with urllib.request.urlopen(ctx.dashboard_url + "/api/snapshot", timeout=30) as r:
            snap = json.loads(r.read())
        return next((p for p in snap["panels"] if p["name"] == "metrics"), None)

    wait_for(lambda: panel() is not None, timeout=30, what="metrics panel")
    rows = {r["metric"]: r for r in panel()["rows"]}
    assert rows["dash_gauge"]["value"] == 42.0
    assert rows["dash_hist"]["value"] == 1


def test_records_made_before_init_are_sent_once_a_runtime_is_up(ctx):
    rtml.shutdown()
    try:
        Counter("early_bird").inc(3)
        metrics.flush()
    finally:
        rtml.init(num_cpus=2, dashboard_port=0)
    wait_for(lambda: _series("early_bird") == {(): 3.0}, timeout=30, what="early counter")
