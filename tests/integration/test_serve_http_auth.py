"""rtml.serve's HTTP proxies on their own: a taken port, a bearer token, a killed proxy."""

from __future__ import annotations

import json
import os
import signal
import socket

import httpx
import pytest

import rtml
from conftest import wait_for
from rtml import serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_in_use_names_the_fix():
    rtml.init(num_cpus=1, include_dashboard=False)
    try:
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            port = blocker.getsockname()[1]
            with pytest.raises(OSError, match="pick another port"):
                serve.start(http_options={"port": port, "num_proxies": 1})
    finally:
        serve.shutdown()
        rtml.shutdown()


def test_token_auth_on_a_fresh_serve():
    rtml.init(num_cpus=1, include_dashboard=False)
    port = free_port()
    try:
        serve.start(http_options={"port": port, "num_proxies": 1, "auth_token": "s3cret"})

        @serve.deployment
        def ok(request):
            return "ok"

        serve.run(ok.bind(), name="ok")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
            r = c.get("/")
            assert r.status_code == 401
            assert "bearer token" in r.text
            assert c.get("/", headers={"authorization": "Bearer nope"}).status_code == 401
            assert c.get("/", headers={"authorization": "Bearer s3cret"}).text == "ok"
            assert c.get("/-/healthz").status_code == 200
        assert json.loads(json.dumps(serve.status().http)) == {
            "host": "127.0.0.1",
            "port": port,
            "location": "EveryNode",
        }
    finally:
        serve.shutdown()
        rtml.shutdown()


def test_a_killed_proxy_is_replaced_on_its_node():
    rtml.init(num_cpus=1, include_dashboard=False)
    port = free_port()
    try:
        serve.start(http_options={"port": port, "num_proxies": 1})

        @serve.deployment
        def ok(request):
            return "ok"

        serve.run(ok.bind(), name="ok")
        ((pid, first),) = serve.status().proxies.items()
        os.kill(first["pid"], signal.SIGKILL)

        def replaced() -> bool:
            p = serve.status().proxies.get(pid)
            return p is not None and p["pid"] != first["pid"]

        wait_for(replaced, timeout=30, what="a new proxy in place of the killed one")
        assert serve.status().proxies[pid]["node_id"] == first["node_id"]
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=20).text == "ok"
    finally:
        serve.shutdown()
        rtml.shutdown()
