"""The README's online-learning example runs as written."""

import pytest

pytest.importorskip("river")
from conftest import readme_block


def test_readme_online_example(capsys):
    exec(compile(readme_block("### Online learning (`rtml.online`)"), "README", "exec"), {})
    out = capsys.readouterr().out.split("\n")
    assert out[0] == "0.8928 1"
    assert int(out[1]) >= 1000


def test_readme_learner_to_serving_example():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", readme_block("#### From a learner to a serving deployment")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["1", "5 4", "4", "['5', '0']"]
