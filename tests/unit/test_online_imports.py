"""rtml.online in a fresh interpreter: River's submodules are loaded by rtml.online itself
(``import river`` alone does not load ``river.drift``, ``river.metrics``...)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("river")


def test_drift_and_default_metrics_work_without_the_user_importing_river_submodules():
    code = (
        "from rtml import online; d = online.Drift(action='swap');"
        "from river import linear_model;"
        "s = online.OnlineState(linear_model.LogisticRegression(), drift=d);"
        "s.learn({'a': 1.0}, True); print(type(d.detector).__name__, s.position)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ADWIN", "1"]
