"""rtml.serve's pure parts without processes: options, autoscaling policy, metrics, batching,
multiplexing, HTTP rendering, and the router's choices, queue and retry."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse

import rtml
from rtml import serve
from rtml.serve import _context, _direct, _http
from rtml.serve._autoscale import Autoscaler
from rtml.serve._config import AutoscalingConfig, build_config, merge
from rtml.serve._metrics import Histogram, Window, prometheus_text
from rtml.serve._router import Router, Slot, choose
from rtml.serve.exceptions import BackPressureError, DeploymentUnavailableError


# ---------------------------------------------------------------------- options
def test_config_defaults_match_ray_serve():
    c = build_config("f", {})
    assert (c.num_replicas, c.max_ongoing_requests, c.max_queued_requests) == (1, 5, -1)
    assert (c.health_check_period_s, c.health_check_timeout_s) == (10.0, 30.0)
    a = AutoscalingConfig()
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests) == (1, 1, 2.0)
    assert (a.upscale_delay_s, a.downscale_delay_s, a.look_back_period_s) == (30.0, 600.0, 30.0)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="mutually exclusive"):
        build_config("f", {"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}})
    with pytest.raises(ValueError, match="max_replicas"):
        build_config("f", {"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}})
    with pytest.raises(ValueError, match="unknown autoscaling_config keys"):
        build_config("f", {"autoscaling_config": {"max_replica": 3}})
    with pytest.raises(ValueError, match="ray_actor_options may not set"):
        build_config("f", {"ray_actor_options": {"max_concurrency": 3}})
    c = build_config("f", {"num_replicas": "auto"})
    assert c.autoscaling_config is not None
    assert c.autoscaling_config.max_replicas == 100
    m = merge(build_config("f", {"autoscaling_config": {"max_replicas": 4}}), {"num_replicas": 2})
    assert m.autoscaling_config is None
    assert m.num_replicas == 2


# ---------------------------------------------------------------------- autoscaling
def _auto(**kw):
    base = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 3,
        "downscale_delay_s": 10,
        "look_back_period_s": 1,
    }
    return Autoscaler(AutoscalingConfig(**{**base, **kw}))


def test_autoscaler_scales_up_after_the_delay_and_down_after_its_own():
    a = _auto()
    assert a.observe(0, 1, 8) == 1  # wants 4, waits upscale_delay_s
    assert a.observe(2, 1, 8) == 1
    assert a.observe(3.5, 1, 8) == 4
    assert a.observe(4, 4, 8) == 4  # 8 ongoing / 4 replicas = target
    assert a.observe(5, 4, 0) == 4
    assert a.observe(14, 4, 0) == 4
    assert a.observe(15.5, 4, 0) == 1  # min_replicas


def test_autoscaler_a_changed_mind_restarts_the_delay_and_zero_starts_at_once():
    a = _auto()
    a.observe(0, 2, 12)
    a.observe(1.1, 2, 0)  # now wants down: the up wish is forgotten
    assert a.observe(3.5, 2, 0) == 2
    z = _auto(min_replicas=0)
    assert z.observe(0, 0, 1) == 1


@given(st.integers(0, 10), st.floats(0, 1000))
def test_autoscaler_stays_within_bounds(replicas, ongoing):
    a = _auto(upscale_delay_s=0, downscale_delay_s=0)
    assert 1 <= a.observe(0, replicas, ongoing) <= 10


# ---------------------------------------------------------------------- metrics
def test_histogram_quantiles_and_prometheus_text():
    h = Histogram()
    for ms in [0.2] * 90 + [4] * 9 + [40]:
        h.observe(ms)
    assert h.count == 100
    assert 0.1 <= h.quantile(0.5) <= 0.25
    assert 3 <= h.quantile(0.95) <= 5
    w = Window()
    w.push(0, 0, Histogram(), now=0)
    w.push(100, 1, h, now=2)
    s = w.summary()
    assert s["requests_per_s"] == 50
    assert s["errors_per_s"] == 0.5
    text = prometheus_text(
        [
            {
                "app": "a",
                "deployment": 'd"q',
                "requests": 100,
                "errors": 1,
                "latency": h,
                "ongoing": 2,
                "queued": 0,
                "replicas": {"3": 2},
            }
        ],
        {"200": 99, "500": 1},
    )
    assert 'rtml_serve_requests_total{application="a",deployment="d\\"q"} 100' in text
    assert 'le="+Inf"} 100' in text
    assert 'rtml_serve_http_responses_total{code="500"} 1' in text


# ---------------------------------------------------------------------- batching
class _Scorer:
    def __init__(self):
        self.batches = []

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.05)
    async def score(self, xs):
        self.batches.append(list(xs))
        return [x * 2 for x in xs]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0)
    def wrong(self, xs):
        return xs[:1]


def test_batch_groups_concurrent_calls_and_keeps_order():
    s = _Scorer()

    async def main():
        return await asyncio.gather(*[s.score(i) for i in range(7)])

    assert asyncio.run(main()) == [i * 2 for i in range(7)]
    assert [len(b) for b in s.batches] == [3, 3, 1]


def test_batch_result_count_mismatch_fails_every_caller():
    s = _Scorer()

    async def main():
        return await asyncio.gather(s.wrong(1), s.wrong(2), return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(e, TypeError) and "one result per input" in str(e) for e in out)


def test_batch_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_batch_size"):
        serve.batch(max_batch_size=0)


# ---------------------------------------------------------------------- multiplexing
def test_multiplexed_caches_lru_and_shares_a_load():
    loads = []

    class M:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def get(self, model_id):
            loads.append(model_id)
            await asyncio.sleep(0)
            return model_id.upper()

    m = M()

    async def main():
        same = await asyncio.gather(m.get("a"), m.get("a"))
        await m.get("b")
        await m.get("a")  # a is recent again
        await m.get("c")  # evicts b
        await m.get("b")
        return same

    assert asyncio.run(main()) == ["A", "A"]
    assert loads == ["a", "b", "c", "b"]
    with pytest.raises(ValueError, match="non-empty str"):
        asyncio.run(m.get(""))


# ---------------------------------------------------------------------- HTTP
def test_render_values_and_errors():
    assert _http.render({"a": 1}) == (200, [(b"content-type", b"application/json")], b'{"a":1}')
    assert _http.render("hi")[2] == b"hi"
    status, headers, body = _http.render(PlainTextResponse("x", status_code=201))
    assert status == 201
    assert body == b"x"
    with pytest.raises(TypeError, match="not JSON serializable"):
        _http.render(object())
    (status, _, body), eid = _http.error_response(ZeroDivisionError("x"))
    assert status == 500
    assert json.loads(body)["error_id"] == eid
    assert eid
    (status, _, _), eid = _http.error_response(HTTPException(418, "teapot"))
    assert (status, eid) == (418, None)


def test_request_json_failure_is_a_client_error():
    req = _http.make_request(("POST", "/a", "", b"q=1", [], None, b"{oops"))

    async def main():
        return await req.json()

    with pytest.raises(_http.MalformedRequestError, match="not valid JSON"):
        asyncio.run(main())
    assert req.query_params["q"] == "1"


# ---------------------------------------------------------------------- router
def test_choose_is_power_of_two_on_queue_length():
    slots = [Slot(str(i), None, "1", inflight=i) for i in range(5)]
    rng = random.Random(0)
    picks = [choose(slots, 10, rng=rng).inflight for _ in range(500)]
    assert 4 not in picks  # the longest queue never wins a pair
    assert picks.count(0) > picks.count(3)
    assert choose(slots, 1) is slots[0]
    assert choose(slots, 0) is None
    slots[0].dead = True
    assert choose(slots[:2], 10).replica_id == "1"


class _FakeMethod:
    def __init__(self, replica):
        self.replica = replica

    def remote(self, *args):
        fut = asyncio.get_running_loop().create_future()
        self.replica.calls.append((args, fut))
        return fut


class _FakeReplica:
    def __init__(self):
        self.calls = []
        self.handle_request = _FakeMethod(self)


class _FakeController:
    def __init__(self):
        self.dead = []
        self.report_dead = self
        self.report_demand = self

    def remote(self, *args):
        self.dead.append(args)


def _router(monkeypatch, n=2, max_ongoing=1, max_queued=-1):
    ctl = _FakeController()
    monkeypatch.setattr(_context, "get_controller", lambda create=False: ctl)
    r = Router("app", "dep", asyncio.get_running_loop())
    reps = [_FakeReplica() for _ in range(n)]
    r.apply(
        {
            "epoch": 1,
            "max_ongoing": max_ongoing,
            "max_queued": max_queued,
            "replicas": [(f"r{i}", rep, "1", None) for i, rep in enumerate(reps)],
        }
    )
    return r, reps, ctl


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_router_queues_beyond_max_ongoing_and_backpressures(monkeypatch):
    async def main():
        r, reps, _ = _router(monkeypatch, n=2, max_ongoing=1, max_queued=1)
        t1 = asyncio.ensure_future(r.assign("m", (1,), {}))
        t2 = asyncio.ensure_future(r.assign("m", (2,), {}))
        t3 = asyncio.ensure_future(r.assign("m", (3,), {}))
        await _settle()
        assert [len(x.calls) for x in reps] == [1, 1]
        assert r.queued() == 1
        with pytest.raises(BackPressureError, match="max_queued_requests"):
            await r.assign("m", (4,), {})
        reps[0].calls[0][1].set_result(("one", "1"))
        assert await t1 == ("one", "1")
        await _settle()
        assert len(reps[0].calls) == 2
        assert r.queued() == 0
        reps[1].calls[0][1].set_result(("two", "1"))
        reps[0].calls[1][1].set_result(("three", "1"))
        assert await t2 == ("two", "1")
        assert await t3 == ("three", "1")
        assert all(s.inflight == 0 for s in r.order)

    asyncio.run(main())


def test_router_retries_once_on_another_replica_when_one_dies(monkeypatch):
    async def main():
        r, reps, ctl = _router(monkeypatch, n=2, max_ongoing=5)
        t = asyncio.ensure_future(r.assign("m", (1,), {}))
        await _settle()
        first = next(x for x in reps if x.calls)
        other = next(x for x in reps if x is not first)
        first.calls[0][1].set_exception(rtml.exceptions.ActorDiedError("gone"))
        await _settle()
        assert len(other.calls) == 1
        assert len(r.order) == 1
        assert ctl.dead
        assert ctl.dead[0][:2] == ("app", "dep")
        other.calls[0][1].set_exception(rtml.exceptions.ActorDiedError("gone too"))
        with pytest.raises(rtml.exceptions.ActorDiedError):
            await t

    asyncio.run(main())


def test_router_fails_waiters_when_the_deployment_is_deleted(monkeypatch):
    async def main():
        r, reps, _ = _router(monkeypatch, n=1, max_ongoing=1)
        t1 = asyncio.ensure_future(r.assign("m", (), {}))
        t2 = asyncio.ensure_future(r.assign("m", (), {}))
        await _settle()
        r.apply({"epoch": 2, "deleted": True})
        with pytest.raises(DeploymentUnavailableError, match="was deleted"):
            await t2
        reps[0].calls[0][1].set_result((1, "1"))
        assert await t1 == (1, "1")

    asyncio.run(main())


def test_direct_path_round_trips_errors_and_breaks():
    async def handler(kind, payload):
        if payload == "boom":
            raise KeyError("missing")
        if payload == "hang":
            await asyncio.sleep(30)
        return (kind, payload)

    async def main():
        server = _direct.Server(handler)
        await server.start()
        conn = _direct.Connection(server.path)
        try:
            outs = await asyncio.gather(*[conn.call(_direct.CALL, i) for i in range(20)])
            assert outs == [(_direct.CALL, i) for i in range(20)]
            with pytest.raises(KeyError, match="missing"):
                await conn.call(_direct.HTTP, "boom")
            hung = asyncio.ensure_future(conn.call(_direct.CALL, "hang"))
            await asyncio.sleep(0.05)
            server.server.close()
            for t in list(server.tasks):
                t.cancel()
            conn.writer.transport.abort()  # the replica's end goes away
            with pytest.raises(_direct.ReplicaConnectionError):
                await asyncio.wait_for(hung, 10)
            with pytest.raises(_direct.ReplicaConnectionError):
                await conn.call(_direct.CALL, 1)
        finally:
            conn.close()
            server.close()
            await asyncio.sleep(0)

    asyncio.run(main())


def test_public_api_is_exported():
    assert set(serve.__all__) >= {
        "deployment",
        "run",
        "batch",
        "multiplexed",
        "status",
        "get_app_handle",
        "get_deployment_handle",
        "delete",
        "shutdown",
        "ingress",
        "DeploymentHandle",
    }
    assert rtml.serve is serve
