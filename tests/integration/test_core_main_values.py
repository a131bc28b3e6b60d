"""Functions and classes of the driver's script travel by value inside arguments and put
values (no worker can import ``__main__`` by name), as in Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import rtml
    rtml.init(num_cpus=1)

    def double(x):
        return 2 * x

    class Box:
        def __init__(self, v):
            self.v = v

    @rtml.remote
    def apply(spec):
        return spec["f"](spec["box"].v)

    @rtml.remote(num_cpus=0)
    class Holder:
        def __init__(self, spec):
            self.spec = spec

        def run(self):
            return self.spec["f"](self.spec["box"].v)

    spec = {"f": double, "box": Box(21)}
    print(rtml.get(apply.remote(spec), timeout=30))
    print(rtml.get(apply.remote(rtml.put(spec)), timeout=30))
    print(rtml.get(Holder.remote(spec).run.remote(), timeout=30))
    rtml.shutdown()
""")


def test_main_functions_and_classes_inside_arguments_reach_workers():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "42", "42"]
