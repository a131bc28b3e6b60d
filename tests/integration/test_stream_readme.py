"""The README's Streams example runs as written and prints the point-in-time correct counts."""

from __future__ import annotations

import subprocess
import sys

from conftest import readme_block


def test_the_streams_example_runs_as_written():
    out = subprocess.run(
        [sys.executable, "-c", readme_block("### Streams (`rtml.stream`)")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # u1 turned "pro" at t=30: its clicks count as "free" before and "pro" after, never early.
    assert lines[:5] == [
        "free [0, 20): 20 clicks",
        "free [20, 40): 14 clicks",
        "pro  [20, 40): 6 clicks",
        "free [40, 60): 6 clicks",
        "pro  [40, 60): 14 clicks",
    ]
    assert lines[5] == "late: [{'user': 'u2', 'ts': 2.0, 'tier': 'free'}]"
    assert "'in': 61" in lines[6]
