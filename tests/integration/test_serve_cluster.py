"""rtml.serve on a multi-node cluster on this machine: a set of proxies on every node, started
on nodes that join, forgotten for nodes that leave; proxy_location="HeadOnly".

The nodes share one host, so their proxies all bind the same port with SO_REUSEPORT and the
kernel spreads connections over every node's proxies."""

from __future__ import annotations

import socket

import httpx

import rtml
from conftest import wait_for
from rtml import serve
from rtml.testing import Cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_nodes() -> dict[str, str]:
    """proxy id → node id, as serve.status() lists them."""
    return {pid: p["node_id"] for pid, p in serve.status().proxies.items()}


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in rtml.nodes() if n["Alive"]}


def test_a_proxy_on_every_node_follows_nodes_that_join_and_leave():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, heartbeat_timeout=2.0)
    port = free_port()
    try:
        cluster.add_node(num_cpus=1)
        cluster.connect()
        serve.start(http_options={"port": port})

        @serve.deployment
        def hello(request):
            return "hello"

        serve.run(hello.bind(), name="hello")
        # One proxy per node (each node has one CPU), each placed on its node.
        assert sorted(proxy_nodes().values()) == sorted(alive_nodes())
        # Fresh connections land on every node's proxy, and each answers.
        for _ in range(40):
            with httpx.Client(timeout=20) as c:
                assert c.get(f"http://127.0.0.1:{port}/").text == "hello"
        wait_for(
            lambda: all(p["responses"] > 0 for p in serve.status().proxies.values()),
            timeout=20,
            what="every node's proxy answered some of 40 connections",
        )

        joined = cluster.add_node(num_cpus=1)
        wait_for(
            lambda: joined.node_id in proxy_nodes().values(),
            timeout=60,
            what="a proxy on the node that joined",
        )
        assert len(proxy_nodes()) == 3
        cluster.remove_node(joined, allow_graceful=False)
        wait_for(
            lambda: joined.node_id not in proxy_nodes().values(),
            timeout=30,
            what="the proxy of the node that left forgotten",
        )
        assert sorted(proxy_nodes().values()) == sorted(alive_nodes())
        with httpx.Client(timeout=20) as c:  # the remaining proxies still serve
            assert all(c.get(f"http://127.0.0.1:{port}/").text == "hello" for _ in range(10))

        serve.shutdown()
        serve.start(http_options={"port": port}, proxy_location="HeadOnly")
        here = rtml.get_runtime_context().get_node_id()
        assert set(proxy_nodes().values()) == {here}
        serve.run(hello.bind(), name="hello")
        with httpx.Client(timeout=20) as c:
            assert c.get(f"http://127.0.0.1:{port}/").text == "hello"
        assert serve.status().http["location"] == "HeadOnly"
    finally:
        serve.shutdown()
        rtml.shutdown()
        cluster.shutdown()
