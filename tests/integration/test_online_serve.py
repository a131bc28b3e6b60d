"""An rtml.serve deployment serving the freshest version of a registry over real HTTP while a
learner publishes: zero failed requests, the x-model-version header rising, pin and rollback
taking effect, the handle's response naming its version, metrics from a route."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import threading
import time

import pytest

river = pytest.importorskip("river")
httpx = pytest.importorskip("httpx")
from river import datasets, linear_model, metrics, preprocessing  # noqa: E402
from starlette.requests import Request  # noqa: E402

import rtml  # noqa: E402
from conftest import wait_for  # noqa: E402
from rtml import serve  # noqa: E402
from rtml.online import Learner, ModelRegistry  # noqa: E402

DATA = list(datasets.Phishing())


@serve.deployment
class CTR:
    """Plain deployment code (runs on Ray Serve as is): a Subscriber holds the model."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.model = registry.subscriber(interval=0.01)

    def predict(self, x: dict) -> dict:
        return self.model.predict(x, proba=True)  # {"prediction": ..., "version": n}

    async def __call__(self, request: Request):
        if request.url.path.endswith("/metrics"):
            return self.model.metrics_response()
        return self.model.response(await request.json(), proba=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["dir", "redis"])
def port_and_location(request, tmp_path):
    location = (
        str(tmp_path / "reg")
        if request.param == "dir"
        else f"redis://{request.getfixturevalue('redis_address')}/0"
    )
    rtml.init(num_cpus=2, include_dashboard=False)
    p = _free_port()
    serve.start(http_options={"port": p})
    yield p, location
    serve.shutdown()
    rtml.shutdown()


class _Clients:
    """Clients posting samples back to back; every (time, status, version header) is kept."""

    def __init__(self, url: str, n: int = 4) -> None:
        self.url, self.n = url, n
        self.results: list[list[tuple[float, int, int | None]]] = [[] for _ in range(n)]
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()))

    async def _client(self, c: httpx.AsyncClient, i: int) -> None:
        k = i
        while not self.stop.is_set():
            try:
                r = await c.post(self.url, json=DATA[k % len(DATA)][0])
                v = r.headers.get("x-model-version")
                body_v = r.json()["version"] if r.status_code == 200 else None
                assert v is None or int(v) == body_v
                self.results[i].append((time.monotonic(), r.status_code, int(v) if v else None))
            except Exception as e:  # a failed request
                self.errors.append(e)
            k += self.n

    async def _main(self) -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            await asyncio.gather(*[self._client(c, i) for i in range(self.n)])

    def last(self) -> int | None:
        ends = [r[-1] for r in self.results if r]
        return max(ends, key=lambda t: t[0])[2] if ends else None

    def all_last(self, v: int) -> bool:
        """Every client's latest answer came from version ``v`` (none still in flight from
        before a swap)."""
        return all(res and res[-1][2] == v for res in self.results)

    def since(self, t: float) -> set[int | None]:
        return {v for res in self.results for (ts, _, v) in res if ts > t}


def test_a_deployment_serves_the_freshest_version_with_its_number(port_and_location):
    port, location = port_and_location
    reg = ModelRegistry(location, name="phishing")
    learner = Learner(
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        [metrics.Accuracy()],
        registry=reg,
        publish_every=10**9,
        publish_interval=0.1,
    )
    learner.get("publish")  # version 1 before the deployment starts
    handle = serve.run(CTR.bind(reg), name="ctr", route_prefix="/ctr")
    stop_learning = threading.Event()

    def learn():
        i = 0
        while not stop_learning.is_set():
            batch = [(*DATA[(i + k) % len(DATA)], time.time()) for k in range(50)]
            learner.get("learn_many", batch)
            i += 50
            time.sleep(0.01)

    teacher = threading.Thread(target=learn)
    teacher.start()
    clients = _Clients(f"http://127.0.0.1:{port}/ctr", n=4)
    clients.thread.start()
    try:
        wait_for(
            lambda: (clients.last() or 0) >= 10, timeout=60, what="ten versions served over HTTP"
        )
        # pin: from a moment on, only the pinned version answers, while versions go on
        pinned = reg.versions()[-3]
        reg.pin(pinned)
        wait_for(lambda: clients.all_last(pinned), timeout=10, what="the pinned version")
        t = time.monotonic()
        time.sleep(0.5)
        assert clients.since(t) == {pinned}
        assert reg.head()[0] > pinned + 2
        resp = handle.predict.remote(DATA[0][0]).result(timeout_s=10)
        assert resp["version"] == pinned
        assert set(resp["prediction"]) == {"True", "False"}
        # rollback: the version before the one served
        back = reg.rollback()
        assert back < pinned
        wait_for(lambda: clients.all_last(back), timeout=10, what="the rolled-back version")
        t = time.monotonic()
        time.sleep(0.3)
        assert clients.since(t) == {back}
        # unpin: the freshest version again
        reg.unpin()
        wait_for(
            lambda: (clients.last() or 0) > reg.head()[0] - 3,
            timeout=10,
            what="the latest version again",
        )
        m = httpx.get(f"http://127.0.0.1:{port}/ctr/metrics", timeout=10)
        assert m.status_code == 200
        assert "rtml_online_freshness_seconds" in m.text
        assert "rtml_online_model_version{" in m.text
    finally:
        clients.stop.set()
        clients.thread.join(60)
        stop_learning.set()
        teacher.join(60)
    results = [r for res in clients.results for r in res]
    assert clients.errors == []
    assert len(results) > 100
    assert {s for _, s, _ in results} == {200}  # zero failed requests
    # the version each client sees only rises, except where pin/rollback lowered it
    for res in clients.results:
        vs = [v for _, _, v in res]
        drops = sum(1 for a, b in itertools.pairwise(vs) if b < a)
        assert drops <= 2, vs  # the pin and the rollback
        assert vs[-1] > vs[0]
    # the replica's subscriber reports what it served
    wait_for(
        lambda: any(r["predictions"] >= len(results) for r in reg.subscribers()),
        timeout=10,
        what="the replica's report",
    )
    (rep,) = reg.subscribers()
    assert rep["swaps"] >= 10
    assert rep["freshness_n"] >= 5
    assert 0 < rep["freshness_p99_s"] < 5
    learner.kill()


ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PEERS = os.path.join(ROOT, "bench", ".peers-venv", "bin", "python")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(PEERS) or not os.environ.get("RTML_TEST_RAY_SERVE"),
    reason="~30 s: set RTML_TEST_RAY_SERVE=1 (needs Ray in bench/.peers-venv)",
)
def test_the_same_deployment_runs_on_ray_serve(tmp_path):
    program = os.path.join(os.path.dirname(__file__), "online_ray_serve_program.py")
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    out = subprocess.run(
        [PEERS, program], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln in ("200 1 1", "2")]
    assert lines == ["200 1 1", "2"], out.stdout[-2000:]
