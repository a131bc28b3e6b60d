"""Smoke test of ``python -m rtml microbenchmark``: it runs, exits 0 and writes its JSON.

Only that the rows exist with positive values is checked; no number is compared with a
threshold (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROWS = [
    "single client tasks sync",
    "single client tasks async",
    "single client put calls (Plasma Store)",
    "single client get calls (Plasma Store)",
    "single client wait 1k refs",
    "1M tiny tasks submitted at once",
]


def test_microbenchmark_smoke(tmp_path):
    out = tmp_path / "mb.json"
    cmd = [
        sys.executable,
        "-W",
        "error",
        "-m",
        "rtml",
        "microbenchmark",
        "--duration",
        "0.05",
        "--tiny-tasks",
        "2000",
        "--num-cpus",
        "2",
        "--json",
        str(out),
    ]
    for name in ROWS:
        cmd += ["--filter", name]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    doc = json.loads(out.read_text())
    results = {r["name"]: r for r in doc["results"]}
    for name in ROWS:
        assert name in results, f"row {name!r} missing from {sorted(results)}"
        row = results[name]
        assert row["status"] == "ok", row
        assert row["value"] > 0, row
        assert row["unit"]
    assert "single client tasks sync" in proc.stdout  # the table was printed
