"""The README's serving example runs as written; with Ray installed (bench/.peers-venv), the
same program runs on Ray Serve after changing only its two import lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import readme_block

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PEERS = os.path.join(ROOT, "bench", ".peers-venv", "bin", "python")
IMPORTS = ("import rtml as ray          # a Ray Serve program: only these two lines differ\n"
           "from rtml import serve\n")


def _block() -> str:
    return readme_block("### Serving (`rtml.serve`)")


def test_the_serving_example_runs_as_written():
    out = subprocess.run([sys.executable, "-c", _block()], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == ["200 {'fraud': True, 'p': 0.7} served by version 1",
                     "{'fraud': False, 'p': 0.7}", "{'RUNNING': 2}"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(PEERS) or not os.environ.get("RTML_TEST_RAY_SERVE"),
                    reason="~50 s: set RTML_TEST_RAY_SERVE=1 (needs Ray in bench/.peers-venv)")
def test_the_serving_example_is_a_ray_serve_program(tmp_path):
    code = _block()
    assert IMPORTS in code
    code = code.replace(IMPORTS, "import ray\nfrom ray import serve\n")
    out = subprocess.run([PEERS, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[:3] == [
        "200 {'fraud': True, 'p': 0.7} served by version None", "{'fraud': False, 'p': 0.7}",
        "{'RUNNING': 2}"]
