"""A load client: ``/recommend`` requests at a fixed rate (open loop), each one recorded.

Open loop means a slow answer does not slow the client down: request ``n`` is sent at
``start + n / rate`` whatever happened to the ones before (up to ``max_in_flight``), so queueing
shows up in the latencies instead of hiding in a lower rate.

It runs in a process of its own, as real clients do (in the driver it would share a GIL with
the driver's work and time its own waits): ``LoadClient`` starts ``python load.py URL ...``,
which appends one JSON line per answer to a file that the driver reads as it grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Result:
    sent: float  # wall clock
    latency_ms: float
    status: int  # 0: no response (connection error or time-out)
    version: int | None  # the model version that answered
    error: str = ""


class LoadClient:
    """Sends requests from a child process between :meth:`start` and :meth:`stop`;
    :attr:`results` holds every answer received so far."""

    def __init__(
        self,
        url: str,
        users: int,
        rate: float = 200.0,
        max_in_flight: int = 64,
        timeout: float = 5.0,
        log: str = "requests.jsonl",
    ) -> None:
        self.argv = [
            sys.executable,
            os.path.abspath(__file__),
            url,
            "--users",
            str(users),
            "--rate",
            str(rate),
            "--max-in-flight",
            str(max_in_flight),
            "--timeout",
            str(timeout),
            "--log",
            log,
        ]
        self.log = log
        self.results: list[Result] = []
        self.proc: subprocess.Popen | None = None
        self._offset = 0
        self._stopping = False

    def start(self) -> LoadClient:
        open(self.log, "w").close()
        self.proc = subprocess.Popen(self.argv)
        return self

    def stopping(self) -> bool:
        return self._stopping

    def poll(self) -> list[Result]:
        """Read the answers logged since the last call; every result so far."""
        if self.proc is None:
            return self.results
        with open(self.log, encoding="utf-8") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind("\n") + 1  # a line being written waits for the next call
        self._offset += len(chunk[:end].encode())
        self.results.extend(Result(**json.loads(line)) for line in chunk[:end].splitlines())
        return self.results

    def stop(self, timeout: float = 30.0) -> list[Result]:
        """Stop sending, let the answers in flight arrive; every result (none if never
        started)."""
        self._stopping = True
        if self.proc is None:
            return self.results
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise TimeoutError(f"the load client did not stop within {timeout}s") from None
        return self.poll()


class _Connection:
    """One keep-alive HTTP/1.1 connection, requests one at a time (a few dozen lines instead of
    an HTTP library: the client must cost far less CPU than the server it measures)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        assert self.reader is not None
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers.get("content-length", 0))), self.timeout
            )
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _send(
    url: str,
    users: int,
    rate: float,
    max_in_flight: int,
    timeout: float,
    log: Any,
    stop: asyncio.Event,
) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    rng = random.Random(11)
    idle = [
        _Connection(parts.hostname or "127.0.0.1", parts.port or 80, timeout)
        for _ in range(max_in_flight)
    ]
    tasks: set[asyncio.Task] = set()
    sem = asyncio.Semaphore(max_in_flight)

    async def one(user: int) -> None:
        conn = idle.pop()
        sent, t0 = time.time(), time.perf_counter()
        try:
            status, headers, body = await conn.get(f"{parts.path}?user={user}&k=10")
            v = headers.get("x-model-version")
            res = Result(
                sent,
                (time.perf_counter() - t0) * 1e3,
                status,
                int(v) if v else None,
                "" if status == 200 else body[:200].decode(errors="replace"),
            )
        except Exception as e:  # a failed request is a figure, not a crash of the client
            res = Result(
                sent, (time.perf_counter() - t0) * 1e3, 0, None, f"{type(e).__name__}: {e}"
            )
        finally:
            idle.append(conn)
            sem.release()
        log.write(json.dumps(asdict(res)) + "\n")

    start, n, flushed = time.perf_counter(), 0, time.perf_counter()
    while not stop.is_set():
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
        await sem.acquire()
        task = asyncio.create_task(one(rng.randrange(users)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        if time.perf_counter() - flushed > 0.2:
            log.flush()
            flushed = time.perf_counter()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 1)
    for conn in idle:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description="GET URL?user=..&k=10 at a fixed rate until SIGTERM")
    p.add_argument("url")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--log", required=True)
    a = p.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        with open(a.log, "a", encoding="utf-8") as log:
            await _send(a.url, a.users, a.rate, a.max_in_flight, a.timeout, log, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
