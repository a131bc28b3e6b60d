"""A throwaway redis-server on this machine, for tests, benchmarks and local clusters.

::

    LocalRedis(dir).start() ──▶ redis-server --port <free> --bind 127.0.0.1 --save '' ...
                                   │ (a child process; nothing written to disk)
                                   ▼ PING answered ──▶ .address "127.0.0.1:<port>"
    .stop() ──▶ SIGTERM (SIGKILL if it lingers) ──▶ waited for

Persistence is off (``--save '' --appendonly no``): the server outlives control-plane
restarts, which is what the Redis backend is for, but not its own. Debian's ``redis-server``
package provides the binary (``make test`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class LocalRedis:
    """One redis-server child process on a free port of 127.0.0.1.

    Raises (from ``start``):
        FileNotFoundError: redis-server is not installed.
        RuntimeError: it would not start (its output is in the message).
    """

    def __init__(self, directory: str, executable: str = "redis-server") -> None:
        self.directory = directory
        self.executable = executable
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        exe = shutil.which(self.executable)
        if exe is None:
            raise FileNotFoundError(
                f"{self.executable} is not installed; `make test` (or `make redis-server`) "
                "installs Debian's redis-server package"
            )
        last = ""
        for _ in range(5):  # a free port can be taken between probing and binding: retry
            self.port = _free_port()
            logfile = os.path.join(self.directory, f"redis-{self.port}.log")
            proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.directory,
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                    "--logfile",
                    logfile,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if _pings(self.port):
                    self.proc = proc
                    return self
                time.sleep(0.01)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            try:
                with open(logfile, errors="replace") as f:
                    last = f.read()[-1000:]
            except OSError:
                last = ""
        raise RuntimeError(f"redis-server would not start: {last}")

    def stop(self, kill: bool = False) -> None:
        """Terminate (or SIGKILL) the server and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
