"""`rtml start --head`, `rtml start --address`, `rtml status`, `rtml stop`, and drivers that
find the cluster (and its token) by themselves; a cluster on the Redis backend."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import psutil
import pytest

import rtml
from conftest import wait_for
from rtml._control._local_redis import LocalRedis
from rtml.testing import Cluster


def _rtml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtml", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def state_env(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("RTML_STATE_DIR", str(state))
    monkeypatch.delenv("RTML_ADDRESS", raising=False)
    monkeypatch.delenv("RTML_TOKEN", raising=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    yield state, env
    started = state / "started.json"
    if started.exists():  # a failed test still stops what it started
        _rtml("stop", env=env)


def test_start_connect_status_join_and_stop(state_env):
    state, env = state_env
    out = _rtml(
        "start", "--head", "--port", "0", "--num-cpus", "1", "--heartbeat-timeout", "7", env=env
    )
    assert out.returncode == 0, out.stderr
    address = re.search(r"control plane at (\S+),", out.stdout).group(1)
    assert f'rtml.init(address="{address}")' in out.stdout
    assert "--token" in out.stdout
    token_files = [p for p in state.iterdir() if p.name.startswith("token-")]
    assert len(token_files) == 1
    assert stat.S_IMODE(token_files[0].stat().st_mode) == 0o600

    joined = _rtml(
        "start", "--address", address, "--num-cpus", "1", "--resources", '{"extra": 1}', env=env
    )
    assert joined.returncode == 0, joined.stderr
    pids = [e["pid"] for e in json.loads((state / "started.json").read_text())]
    assert len(pids) == 3
    assert all(psutil.pid_exists(p) for p in pids)

    status = _rtml("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "2 node(s) alive" in status.stdout
    assert "head" in status.stdout
    as_json = json.loads(_rtml("status", "--format", "json", env=env).stdout)
    assert sorted(n["resources"].get("extra", 0) for n in as_json) == [0, 1]

    rtml.init(address="auto")  # finds the address and the token in the state directory
    try:

        @rtml.remote(resources={"extra": 1})
        def where():
            return rtml.get_runtime_context().get_node_id()

        assert rtml.get(where.remote(), timeout=30) != rtml.get_runtime_context().get_node_id()
        from rtml._control._client import ControlClient
        from rtml._transport._auth import find_token

        with ControlClient(address, find_token(address, None)) as gcs:
            assert gcs.info()["heartbeat_timeout"] == 7.0
    finally:
        rtml.shutdown()

    stopped = _rtml("stop", env=env)
    assert stopped.returncode == 0
    assert "stopped 3" in stopped.stdout
    wait_for(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                for p in pids
            )
        ),
        15,
        what="every started process to exit",
    )
    assert not [p for p in state.iterdir() if p.name.startswith("token-")]


def test_cli_errors_are_clear(state_env):
    _state, env = state_env
    out = _rtml("start", env=env)
    assert out.returncode != 0
    assert "--head or --address" in out.stderr
    out = _rtml("start", "--address", "127.0.0.1:1", env=env)
    assert out.returncode != 0
    assert "no token" in out.stderr
    out = _rtml("status", env=env)
    assert out.returncode != 0
    assert "rtml start --head" in out.stderr
    out = _rtml("start", "--head", "--port", "0", "--resources", "[1]", env=env)
    assert out.returncode != 0
    assert "JSON object" in out.stderr
    with pytest.raises(ConnectionError, match="rtml start --head"):
        rtml.init(address="auto")
    with pytest.raises(ValueError, match="num_cpus"):
        rtml.init(address="127.0.0.1:1", num_cpus=2)


def test_cluster_on_the_redis_backend(tmp_path):
    redis = LocalRedis(str(tmp_path)).start()
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, redis=redis.address)
        try:
            cluster.add_node(num_cpus=1, resources={"r": 1})
            cluster.connect()

            @rtml.remote(resources={"r": 1})
            def square(x):
                return x * x

            assert rtml.get([square.remote(i) for i in range(10)], timeout=30) == [
                i * i for i in range(10)
            ]
            assert len([n for n in rtml.nodes() if n["Alive"]]) == 2
        finally:
            cluster.shutdown()
    finally:
        redis.stop()
