"""A load client: ``/recommend`` requests at a fixed rate (open loop), each one recorded.

Open loop means a slow answer does not slow the client down: request ``n`` is sent at
``start + n / rate`` whatever happened to the ones before (up to ``max_in_flight``), so queueing
shows up in the latencies instead of hiding in a lower rate.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    sent: float          # wall clock
    latency_ms: float
    status: int          # 0: no response (connection error or time-out)
    version: int | None  # the model version that answered
    error: str = ""


@dataclass
class LoadClient:
    """Sends requests from a background thread until :meth:`stop`."""

    url: str
    users: int
    rate: float = 200.0
    max_in_flight: int = 64
    timeout: float = 5.0
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="recommender-load", daemon=True)

    def start(self) -> LoadClient:
        self._thread.start()
        return self

    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 30.0) -> list[Result]:
        """Stop sending, wait for the answers in flight; every result (none if never started)."""
        self._stop.set()
        if self._thread.ident is None:
            return self.results
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the load client did not stop within {timeout}s")
        return self.results

    async def _one(self, client, user: int, sem: asyncio.Semaphore) -> None:
        sent = time.time()
        t0 = time.perf_counter()
        try:
            r = await client.get(self.url, params={"user": user, "k": 10})
            v = r.headers.get("x-model-version")
            self.results.append(Result(sent, (time.perf_counter() - t0) * 1e3, r.status_code,
                                       int(v) if v else None,
                                       "" if r.status_code == 200 else r.text[:200]))
        except Exception as e:  # a failed request is a figure, not a crash of the client
            self.results.append(Result(sent, (time.perf_counter() - t0) * 1e3, 0, None,
                                       f"{type(e).__name__}: {e}"))
        finally:
            sem.release()

    async def _main(self) -> None:
        import httpx

        rng = random.Random(11)
        sem = asyncio.Semaphore(self.max_in_flight)
        tasks: set[asyncio.Task] = set()
        limits = httpx.Limits(max_connections=self.max_in_flight,
                              max_keepalive_connections=self.max_in_flight)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            start, n = time.perf_counter(), 0
            while not self._stop.is_set():
                due = start + n / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sem.acquire()
                task = asyncio.create_task(self._one(client, rng.randrange(self.users), sem))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout + 1)
