"""The README's serving example runs as written; with Ray installed (bench/.peers-venv), the
same program runs on Ray Serve after changing only its two import lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import readme_block

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PEERS = os.environ.get("RTML_PEERS_PYTHON") or os.path.join(
    ROOT, "bench", ".peers-venv", "bin", "python"
)
SRC = os.path.join(ROOT, "src")
IMPORTS = (
    "import rtml as ray          # a Ray Serve program: only these two lines differ\n"
    "from rtml import serve\n"
)


def _block() -> str:
    return readme_block("### Serving (`rtml.serve`)")


def test_the_serving_example_runs_as_written():
    out = subprocess.run(
        [sys.executable, "-c", _block()], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        "200 {'fraud': True, 'p': 0.7} served by version 1",
        "{'fraud': False, 'p': 0.7}",
        "{'RUNNING': 2}",
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(PEERS) or not os.environ.get("RTML_TEST_RAY_SERVE"),
    reason="~50 s: set RTML_TEST_RAY_SERVE=1 (needs Ray in bench/.peers-venv or RTML_PEERS_PYTHON)",
)
def test_the_serving_example_is_a_ray_serve_program(tmp_path):
    code = _block()
    assert IMPORTS in code
    code = code.replace(IMPORTS, "import ray\nfrom ray import serve\n")
    out = subprocess.run(
        [PEERS, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[:3] == [
        "200 {'fraud': True, 'p': 0.7} served by version None",
        "{'fraud': False, 'p': 0.7}",
        "{'RUNNING': 2}",
    ]


RAY_ENGINE_PROGRAM = """
import httpx, ray
from rtml import serve

ray.init(num_cpus=2, include_dashboard=False)
serve.start(http_options={"port": PORT}, engine="ray")

@serve.deployment(num_replicas=2)
class Echo:
    def reconfigure(self, cfg):
        self.v = cfg["v"]

    async def __call__(self, request):
        return {"v": self.v}

h = serve.run(Echo.options(user_config={"v": 1}).bind(), name="e")
r = httpx.get("http://127.0.0.1:PORT/", timeout=30)
print(r.status_code, r.json(), r.headers.get("x-rtml-version"))
print(h.remote(None).result(timeout_s=30))
serve.run(Echo.options(user_config={"v": 2}).bind(), name="e")
print(httpx.get("http://127.0.0.1:PORT/", timeout=30).json())
st = serve.status()
print(st.applications["e"].deployments["Echo"].replica_states,
      sorted({p["node_id"] for p in st.proxies.values()}) == sorted(
          n["NodeID"] for n in ray.nodes() if n["Alive"]))
serve.shutdown()
ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(PEERS) or not os.environ.get("RTML_TEST_RAY_SERVE"),
    reason="~40 s: set RTML_TEST_RAY_SERVE=1 (needs Ray in bench/.peers-venv or RTML_PEERS_PYTHON)",
)
def test_rtml_serve_runs_on_the_ray_engine(tmp_path):
    """rtml.serve itself (controller, proxies, replicas, the direct path) on Ray's core API:
    HTTP and handle calls, a config swap, a proxy on Ray's node."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run(
        [PEERS, "-c", RAY_ENGINE_PROGRAM.replace("PORT", str(port))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[:4] == [
        "200 {'v': 1} 1",
        "{'v': 1}",
        "{'v': 2}",
        "{'RUNNING': 2} True",
    ]
