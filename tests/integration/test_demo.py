"""The README's demo runs end to end (small budget) and its actor sees every expansion."""

from __future__ import annotations

import os
import re
import subprocess
import sys

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "tree_search.py")


def test_tree_search_demo_runs():
    out = subprocess.run(
        [sys.executable, DEMO, "--budget", "24", "--in-flight", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    m = re.search(r"expanded (\d+) nodes", out.stdout)
    assert m
    assert int(m.group(1)) == 24
    m = re.search(r"stats actor: (\d+) expansions and (\d+) rollouts", out.stdout)
    assert m
    assert int(m.group(1)) == 24
    assert int(m.group(2)) == 24 * 4 * 3
