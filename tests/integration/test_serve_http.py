"""rtml.serve's HTTP ingress through real sockets: proxies, routing, errors, limits, auth."""

from __future__ import annotations

import asyncio
import os
import socket

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import rtml
from conftest import wait_for
from rtml import serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http():
    rtml.init(num_cpus=2, include_dashboard=False)
    port = free_port()
    serve.start(http_options={"port": port, "num_proxies": 2})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
        yield client
    serve.shutdown()
    rtml.shutdown()


@pytest.fixture
def client(http):
    yield http
    for name in list(serve.status().applications):
        serve.delete(name)


@serve.deployment
class Echo:
    async def __call__(self, request: Request):
        if request.method == "POST":
            body = await request.json()
            return {
                "got": body,
                "path": request.url.path,
                "q": dict(request.query_params),
                "h": request.headers.get("x-test"),
            }
        if request.url.path.endswith("/text"):
            return "plain"
        if request.url.path.endswith("/resp"):
            return PlainTextResponse("made", status_code=201, headers={"x-made": "yes"})
        if request.url.path.endswith("/boom"):
            raise ZeroDivisionError("user bug")
        return {"pid": os.getpid()}


def test_json_text_and_response_out_with_version_header(client):
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    r = client.post("/echo/x?a=1", json={"k": [1, 2]}, headers={"x-test": "t"})
    assert r.status_code == 200
    assert r.json() == {"got": {"k": [1, 2]}, "path": "/echo/x", "q": {"a": "1"}, "h": "t"}
    assert (
        r.headers["x-rtml-version"]
        == serve.status().applications["echo"].deployments["Echo"].version
    )
    r = client.get("/echo/text")
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        200,
        "plain",
        "text/plain; charset=utf-8",
    )
    r = client.get("/echo/resp")
    assert (r.status_code, r.text, r.headers["x-made"]) == (201, "made", "yes")


def test_routing_by_prefix_and_unknown_route(client):
    @serve.deployment
    def hello(request):
        return "hello"

    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    serve.run(hello.bind(), name="hello", route_prefix="/hello")
    assert client.get("/hello").text == "hello"
    assert client.get("/hello/deeper").text == "hello"
    assert "pid" in client.get("/echo").json()
    r = client.get("/nowhere")
    assert r.status_code == 404
    assert "no application is routed at '/nowhere'" in r.text
    assert client.get("/hellothere").status_code == 404  # a prefix matches whole segments
    assert set(client.get("/-/routes").json()) == {"/echo", "/hello"}


def test_client_errors_are_4xx_and_user_errors_500_with_id(client, capfd):
    serve.run(Echo.bind(), name="echo", route_prefix="/")
    r = client.post("/", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.text
    r = client.post("/", content=b"x" * (16 * 2**20 + 1))
    assert r.status_code == 413
    assert "over the limit" in r.text
    r = client.get("/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["type"] == "ZeroDivisionError"
    assert len(body["error_id"]) == 12
    assert client.get("/").status_code == 200  # the replica keeps serving
    st = serve.status().applications["echo"].deployments["Echo"]
    assert st.replica_states == {"RUNNING": 1}


def test_keep_alive_serves_many_requests_on_one_connection(client):
    serve.run(Echo.bind(), name="echo", route_prefix="/")
    port = client.base_url.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
            status = f.readline()
            headers = {}
            while (line := f.readline()) not in (b"\r\n", b""):
                k, v = line.decode().split(":", 1)
                headers[k.strip().lower()] = v.strip()
            assert status.startswith(b"HTTP/1.1 200")
            assert f.read(int(headers["content-length"])) == b"plain"
        f.close()


@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Slow:
    def __init__(self, gate):
        self.gate = gate

    async def __call__(self, request):
        while not os.path.exists(self.gate):
            await asyncio.sleep(0.01)
        return "done"


def test_full_queues_answer_503_with_retry_after(client, gate_path):
    serve.run(Slow.bind(str(gate_path)), name="slow", route_prefix="/")
    port = client.base_url.port

    async def main():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
            # Each proxy sends the replica at most max_ongoing_requests and queues none
            # (max_queued_requests=0): of 6 requests at once, some are turned away.
            pending = {asyncio.ensure_future(c.get("/")) for _ in range(6)}
            done: set = set()
            while pending and not any(t.result().status_code == 503 for t in done):
                more, pending = await asyncio.wait(
                    pending, timeout=15, return_when=asyncio.FIRST_COMPLETED
                )
                assert more, "no request was turned away within 15 s"
                done |= more
            gate_path.touch()
            done |= set(await asyncio.gather(*pending)) and pending
            return [t.result() for t in done]

    responses = asyncio.run(main())
    assert len(responses) == 6
    assert {r.status_code for r in responses} == {200, 503}
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1"
    assert "max_queued_requests" in rejected.text
    assert client.get("/").text == "done"


def test_metrics_endpoint_and_status_metrics(client):
    serve.run(Echo.bind(), name="echo", route_prefix="/")
    for _ in range(10):
        client.get("/text")
    client.get("/boom")

    def counted():
        m = serve.status().applications["echo"].deployments["Echo"].metrics
        return m if m["requests_total"] >= 11 else None

    m = wait_for(counted, timeout=15, what="replica stats at the controller")
    assert m["errors_total"] == 1
    assert m["p50_ms"] is not None

    def scraped():
        text = client.get("/-/metrics").text
        return text if 'rtml_serve_http_responses_total{code="500"}' in text else None

    text = wait_for(scraped, timeout=15, what="proxy stats in /-/metrics")
    assert 'rtml_serve_errors_total{application="echo",deployment="Echo"} 1' in text
    v = serve.status().applications["echo"].deployments["Echo"].version
    assert f'rtml_serve_replicas{{application="echo",deployment="Echo",version="{v}"}} 1' in text
    assert "rtml_serve_latency_ms_bucket" in text


def test_multiplexed_model_id_header(client):
    @serve.deployment
    class Models:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def load(self, model_id):
            return model_id.upper()

        async def __call__(self, request):
            return await self.load(serve.get_multiplexed_model_id())

    serve.run(Models.bind(), name="models", route_prefix="/")
    r = client.get("/", headers={"serve_multiplexed_model_id": "abc"})
    assert r.text == "ABC"


def test_ingress_with_a_starlette_app(client):
    async def predict(request):
        inst = request.state.serve_instance
        return JSONResponse({"scale": inst.scale, "x": request.path_params["x"]})

    from starlette.applications import Starlette

    app = Starlette(routes=[Route("/predict/{x}", predict)])

    @serve.deployment
    @serve.ingress(app)
    class Api:
        def __init__(self):
            self.scale = 3

    serve.run(Api.bind(), name="api", route_prefix="/")
    r = client.get("/predict/7")
    assert r.status_code == 200
    assert r.json() == {"scale": 3, "x": "7"}
    assert client.get("/other").status_code == 404


def test_a_bearer_token_is_required_when_set(client):
    with pytest.raises(ValueError, match="without authentication"):
        serve.start(http_options={"host": "0.0.0.0", "port": free_port()})
