"""The README's example runs as written (the first python block), with `import rtml as ray` too."""

from __future__ import annotations

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _example() -> str:
    with open(README, encoding="utf-8") as f:
        return re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)


def test_readme_example_runs():
    out = subprocess.run(
        [sys.executable, "-c", _example()], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().isdigit()


def test_readme_example_runs_as_ray():
    code = re.sub(r"^import rtml\b.*$", "import rtml as ray", _example(), count=1, flags=re.M)
    code = code.replace("rtml.", "ray.")
    assert "rtml." not in code
    assert "ray.remote" in code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
