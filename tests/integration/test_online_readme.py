"""The README's online-learning example runs as written."""

import pytest

pytest.importorskip("river")
from conftest import readme_block


def test_readme_online_example(capsys):
    exec(compile(readme_block("### Online learning (`rtml.online`)"), "README", "exec"), {})
    out = capsys.readouterr().out.split("\n")
    assert out[0] == "0.8928 1"
    assert int(out[1]) >= 1000
