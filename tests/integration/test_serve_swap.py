"""Hot swaps, rollbacks, replica deaths, health checks and autoscaling, under HTTP load counted
request by request."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading

import httpx
import pytest

import rtml
from conftest import wait_for
from rtml import serve
from rtml.serve.exceptions import RayServeException


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def port():
    rtml.init(num_cpus=2, include_dashboard=False)
    p = free_port()
    serve.start(http_options={"port": p, "num_proxies": 2})
    yield p
    serve.shutdown()
    rtml.shutdown()


@pytest.fixture
def clean(port):
    yield port
    for name in list(serve.status().applications):
        serve.delete(name)


class Load:
    """``concurrency`` clients sending requests back to back on a thread of their own; every
    response (status, body, version header) is kept."""

    def __init__(self, port: int, concurrency: int = 6, path: str = "/") -> None:
        self.url = f"http://127.0.0.1:{port}{path}"
        self.concurrency = concurrency
        self.results: list[tuple[int, str, str | None]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()))

    async def _client(self, c: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                r = await c.get(self.url)
                self.results.append((r.status_code, r.text, r.headers.get("x-rtml-version")))
            except Exception as e:  # counted as a failed request
                self.errors.append(e)

    async def _main(self) -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            await asyncio.gather(*[self._client(c) for _ in range(self.concurrency)])

    def __enter__(self) -> Load:
        self._thread.start()
        wait_for(lambda: len(self.results) >= 20, timeout=30, what="load to start")
        return self

    def wait_more(self, n: int = 20) -> None:
        target = len(self.results) + n
        wait_for(lambda: len(self.results) >= target, timeout=30, what=f"{n} more requests")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def failed(self) -> list:
        return [r for r in self.results if r[0] != 200] + self.errors


@serve.deployment(num_replicas=2, user_config={"answer": "a"})
class Versioned:
    def __init__(self):
        self.answer = None

    def reconfigure(self, config):
        self.answer = config["answer"]

    def __call__(self, request):
        return self.answer


@serve.deployment(num_replicas=2, user_config={"answer": "c"})
class NewCode:
    def reconfigure(self, config):
        self.answer = config["answer"]

    def __call__(self, request):
        return "new-" + self.answer


@serve.deployment(num_replicas=2, user_config={"answer": "x"})
class BrokenCode:
    def __init__(self):
        raise RuntimeError("weights file missing")

    def reconfigure(self, config):
        pass

    def __call__(self, request):
        return "never"


@serve.deployment(num_replicas=2, user_config={"answer": "x"})
class Unhealthy:
    def reconfigure(self, config):
        pass

    def check_health(self):
        raise RuntimeError("model did not warm up")

    def __call__(self, request):
        return "never"


def test_swaps_and_rollbacks_under_load_fail_no_request(clean):
    serve.run(Versioned.bind(), name="m")
    with Load(clean) as load:
        # 1. A new user_config: prepared beside the live instance, switched between requests.
        serve.run(Versioned.options(user_config={"answer": "b"}).bind(), name="m")
        load.wait_more()
        # 2. New code: new replicas beside the old, switched once healthy.
        serve.run(NewCode.options(name="Versioned").bind(), name="m")
        load.wait_more()
        # 3. New code whose constructor fails, 4. whose health check fails: rolled back.
        with pytest.raises(RayServeException, match=r"weights file missing.*rolled back"):
            serve.run(BrokenCode.options(name="Versioned").bind(), name="m")
        load.wait_more()
        with pytest.raises(RayServeException, match=r"did not warm up.*rolled back"):
            serve.run(Unhealthy.options(name="Versioned").bind(), name="m")
        load.wait_more(50)
    assert load.failed() == []
    seen = [(body, v) for _, body, v in load.results]
    assert {b for b, _ in seen} == {"a", "b", "new-c"}
    # Each answer came from exactly one version, and versions only went forward.
    by_version = {}
    for body, v in seen:
        by_version.setdefault(v, set()).add(body)
    assert all(len(b) == 1 for b in by_version.values()), by_version
    last = seen[-50:]
    assert {b for b, _ in last} == {"new-c"}
    dep = serve.status().applications["m"].deployments["Versioned"]
    assert dep.status == "HEALTHY"
    assert dep.replica_states == {"RUNNING": 2}
    assert "rolled back" in dep.message or dep.message == ""


@serve.deployment(user_config={"v": 1})
class SlowSwap:
    def __init__(self):
        self.v = 0

    def reconfigure(self, config):
        self.v = config["v"]

    async def __call__(self, gate):
        if gate:
            open(gate + ".started", "w").close()  # the test swaps only once this runs
        while gate and not os.path.exists(gate):
            await asyncio.sleep(0.01)
        return self.v


def test_in_flight_requests_finish_on_their_version(clean, gate_path):
    h = serve.run(SlowSwap.bind(), name="s", route_prefix=None)
    slow = h.remote(str(gate_path))
    wait_for(
        lambda: os.path.exists(f"{gate_path}.started"),
        timeout=10,
        what="the slow request running on version 1",
    )
    serve.reconfigure({"v": 2}, app_name="s")
    fast = h.remote("")
    assert fast.result(timeout_s=10) == 2
    assert fast.version == "2"
    gate_path.touch()
    assert slow.result(timeout_s=10) == 1
    assert slow.version == "1"


def _pids(app: str, dep: str) -> set[int]:
    d = serve.status().applications[app].deployments[dep]
    return {r["pid"] for r in d.replicas if r["state"] == "RUNNING" and r["pid"]}


def test_a_killed_replica_is_replaced_and_its_requests_retried(clean):
    serve.run(Versioned.bind(), name="k")
    before = _pids("k", "Versioned")
    assert len(before) == 2
    victim = sorted(before)[0]
    with Load(clean, concurrency=8) as load:
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(_pids("k", "Versioned") - before) == 1,
            timeout=30,
            what="a replacement replica",
        )
        load.wait_more(50)
    assert load.failed() == []
    after = _pids("k", "Versioned")
    assert victim not in after
    assert len(after) == 2


@serve.deployment(health_check_period_s=0.2, health_check_timeout_s=5)
class Flaky:
    def __init__(self, path):
        self.path = path

    def check_health(self):
        if os.path.exists(self.path):
            os.unlink(self.path)  # fail once: the replacement is healthy
            raise RuntimeError("lost the GPU")

    def __call__(self, request):
        return os.getpid()


def test_a_failing_health_check_replaces_the_replica(clean, tmp_path):
    flag = tmp_path / "sick"
    h = serve.run(Flaky.bind(str(flag)), name="h", route_prefix=None)
    first = h.remote(None).result(timeout_s=10)
    flag.touch()
    wait_for(
        lambda: _pids("h", "Flaky") and first not in _pids("h", "Flaky"),
        timeout=30,
        what="the unhealthy replica to be replaced",
    )
    assert h.remote(None).result(timeout_s=10) != first
    assert "health check failed" in serve.status().applications["h"].deployments["Flaky"].message


@serve.deployment(
    max_ongoing_requests=4,
    autoscaling_config={
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 1,
        "look_back_period_s": 2,
    },
)
class Busy:
    async def __call__(self, request):
        await asyncio.sleep(0.05)
        return "ok"


def test_autoscaling_follows_ongoing_requests(clean):
    serve.run(Busy.bind(), name="a")

    def running() -> int:
        return serve.status().applications["a"].deployments["Busy"].replica_states.get("RUNNING", 0)

    assert running() == 1
    with Load(clean, concurrency=6) as load:
        wait_for(lambda: running() == 2, timeout=30, what="scale up to 2")
        load.wait_more()
    assert load.failed() == []
    wait_for(lambda: running() == 1, timeout=30, what="scale down to 1")


@serve.deployment(
    autoscaling_config={
        "min_replicas": 0,
        "max_replicas": 1,
        "initial_replicas": 1,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 0.5,
        "downscale_to_zero_delay_s": 0.5,
        "look_back_period_s": 1,
    }
)
class Sleepy:
    def __init__(self):
        import time

        time.sleep(1.5)  # slower to start than the controller's 1 s stats period

    async def __call__(self, request=None):
        return "awake"


def test_scale_to_zero_and_back_on_a_request(clean):
    h = serve.run(Sleepy.bind(), name="z")

    def replicas() -> int:
        return sum(serve.status().applications["z"].deployments["Sleepy"].replica_states.values())

    assert h.remote().result(timeout_s=10) == "awake"
    for ask in (
        lambda: h.remote().result(timeout_s=60),  # a handle call wakes it
        lambda: httpx.get(f"http://127.0.0.1:{clean}/", timeout=60).text,
    ):  # HTTP too
        wait_for(lambda: replicas() == 0, timeout=30, what="scale down to zero when idle")
        assert ask() == "awake"
        assert replicas() >= 1
