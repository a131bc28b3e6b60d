"""``rtml stack``: the Python stack of every worker, to find a hang.

With py-spy installed, ``py-spy dump --pid`` (native-safe, no cooperation needed); otherwise
SIGUSR2, on which every worker has faulthandler write all its threads' stacks into
``stack-<pid>.txt`` in its node's log directory. Works for workers on this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any


def dump_stacks(
    source: Any, use_py_spy: bool | None = None, timeout: float = 5.0
) -> list[tuple[dict[str, Any], str]]:
    """(worker record, stack text) for every live worker the source lists."""
    workers = [w for w in source.workers() if w.get("pid")]
    spy = shutil.which("py-spy") if use_py_spy in (None, True) else None
    out = []
    for w in workers:
        pid = int(w["pid"])
        text = None
        if spy:
            try:
                r = subprocess.run(
                    [spy, "dump", "--pid", str(pid)],
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
                if r.returncode == 0:
                    text = r.stdout
            except (OSError, subprocess.TimeoutExpired):
                text = None
        if text is None:
            text = _faulthandler_dump(source, w, timeout)
        out.append((w, text))
    return out


def _faulthandler_dump(source: Any, w: dict[str, Any], timeout: float) -> str:
    path = w.get("stack_file") or ""
    pid = int(w["pid"])
    try:
        before = os.path.getsize(path) if path else 0
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ProcessLookupError) as e:
        return f"(cannot signal pid {pid}: {e})"
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:  # the dump is written by the worker asynchronously
        try:
            size = os.path.getsize(path)
        except OSError:
            size = before
        if size > before and size == last:
            with open(path, errors="replace") as f:
                f.seek(before)
                return f.read()
        last = size
        time.sleep(0.05)
    return f"(worker pid {pid} wrote no stack within {timeout:.0f}s; is it on this machine?)"
