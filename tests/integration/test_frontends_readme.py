"""The README's Dask-on-rtml and metrics example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import readme_block

pytest.importorskip("dask.dataframe")


def test_the_dask_and_metrics_example_runs_as_written():
    code = readme_block("### Dask on rtml, metrics")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "array: 2000000.0"
    assert lines[1] == "groupby: [148.5, 149.5, 150.5]"
    assert lines[2] == "requests: 3.0"
    assert re.fullmatch(r"scrape at http://127\.0\.0\.1:\d+/metrics", lines[3]), lines
