"""Start the processes of a cluster: the control plane and node managers.

Used by ``rtml start`` (detached, output to log files) and ``rtml.testing.Cluster`` (children
of the calling process). Each child reports readiness on a pipe (``--ready-fd``); a child that
exits or stays silent past the deadline raises with the tail of its output.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from rtml._transport._auth import TOKEN_ENV

READY_TIMEOUT_S = 60.0


@dataclass
class Started:
    proc: subprocess.Popen
    port: int
    node_id: str = ""
    log_path: str | None = None


def _spawn(
    args: list[str], token: bytes, log_path: str | None, detach: bool, timeout: float
) -> tuple[subprocess.Popen, list[str]]:
    r, w = os.pipe()
    env = dict(os.environ)
    env[TOKEN_ENV] = token.hex()
    env["RTML_SYS_PATH"] = json.dumps([p for p in sys.path if p])
    if not detach:
        env[END_WITH_ENV] = str(os.getpid())
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args, "--ready-fd", str(w)],
            pass_fds=(w,),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out if log_path else None,
            start_new_session=detach,
        )
    finally:
        os.close(w)
        if log_path is not None:
            out.close()
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait()
                raise TimeoutError(
                    f"{args[0]} did not become ready within {timeout:.0f}s{_tail(log_path)}"
                )
            ready, _, _ = select.select([r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(r, 4096)
            if not chunk:
                code = proc.wait()
                raise RuntimeError(
                    f"{args[0]} exited with code {code} while starting{_tail(log_path)}"
                )
            buf += chunk
    finally:
        os.close(r)
    return proc, buf.decode().split()


END_WITH_ENV = "RTML_END_WITH_PID"


def end_with_parent() -> None:
    """In a node or control-plane process started (not detached) by ``_spawn``: SIGTERM
    ourselves when the process that started us dies, so a test cluster whose driver is killed
    does not linger (they clean up on SIGTERM). A watch on the parent pid rather than
    PR_SET_PDEATHSIG, which fires when the *thread* that spawned the child ends."""
    pid = os.environ.pop(END_WITH_ENV, None)
    if not pid:
        return
    parent = int(pid)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="rtml-end-with-parent", daemon=True).start()


def _tail(log_path: str | None) -> str:
    if not log_path:
        return " (its output is above)"
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 2000))
            return f"; the end of {log_path}:\n" + f.read().decode(errors="replace")
    except OSError:
        return ""


def start_control_plane(
    token: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    redis: str | None = None,
    heartbeat_timeout: float | None = None,
    log_path: str | None = None,
    detach: bool = False,
    timeout: float = READY_TIMEOUT_S,
) -> Started:
    args = ["rtml._control", "--host", host, "--port", str(port)]
    if redis:
        args += ["--redis", redis]
    if heartbeat_timeout is not None:
        args += ["--heartbeat-timeout", str(heartbeat_timeout)]
    proc, words = _spawn(args, token, log_path, detach, timeout)
    return Started(proc, int(words[-1]), log_path=log_path)


def start_node(
    gcs_address: str,
    token: bytes,
    *,
    head: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    num_cpus: float | None = None,
    num_gpus: float = 0,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    labels: dict[str, str] | None = None,
    log_path: str | None = None,
    detach: bool = False,
    timeout: float = READY_TIMEOUT_S,
    dashboard_port: int = 0,
) -> Started:
    args = [
        "rtml._node",
        "--gcs",
        gcs_address,
        "--host",
        host,
        "--port",
        str(port),
        "--num-gpus",
        str(num_gpus),
        "--resources",
        json.dumps(resources or {}),
        "--labels",
        json.dumps(labels or {}),
    ]
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if object_store_memory is not None:
        args += ["--object-store-memory", str(int(object_store_memory))]
    if head:
        args += ["--head", "--dashboard-port", str(dashboard_port)]
    proc, words = _spawn(args, token, log_path, detach, timeout)
    # "RTML_NODE_READY <port> <node id>"
    return Started(proc, int(words[1]), node_id=words[2], log_path=log_path)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
