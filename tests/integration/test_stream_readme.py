"""The README's Streams example runs as written and prints the point-in-time correct counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _block(heading: str) -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_streams_example_runs_as_written():
    out = subprocess.run([sys.executable, "-c", _block("### Streams (`rtml.stream`)")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # u1 turned "pro" at t=30: its clicks count as "free" before and "pro" after, never early.
    assert lines[:5] == ["free [0, 20): 20 clicks", "free [20, 40): 14 clicks",
                         "pro  [20, 40): 6 clicks", "free [40, 60): 6 clicks",
                         "pro  [40, 60): 14 clicks"]
    assert lines[5] == "late: [{'user': 'u2', 'ts': 2.0, 'tier': 'free'}]"
    assert "'in': 61" in lines[6]
