"""asyncio-streams candidates of bench/transport.py (both ends asyncio, same frames)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time
from typing import Any

from transport import MSG, STOP, Decoder, _fork, encode


def _loop_factory(kind: str) -> Any:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


async def _aecho(sock: socket.socket, recv_size: int) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    dec = Decoder()
    while True:
        data = await reader.read(recv_size)
        if not data:
            break
        msgs = dec.feed(data)
        if STOP in msgs:
            break
        if msgs:
            writer.write(encode(msgs))
            await writer.drain()
    writer.close()


async def _amain(sock: socket.socket, args: argparse.Namespace) -> dict:
    reader, writer = await asyncio.open_connection(sock=sock)
    dec, frame = Decoder(), encode([MSG])

    async def rtt(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            writer.write(frame)
            await writer.drain()
            while not dec.feed(await reader.read(args.recv_size)):
                pass
            out.append(time.perf_counter() - t)
        return out

    async def pushed(duration: float) -> float:
        sent = got = 0
        space = asyncio.Semaphore(args.window)
        caught_up = asyncio.Event()

        async def read_side() -> None:
            nonlocal got
            while True:
                k = len(dec.feed(await reader.read(args.recv_size)))
                got += k
                for _ in range(k):
                    space.release()
                if got >= sent:
                    caught_up.set()

        t0 = time.perf_counter()
        rd = asyncio.ensure_future(read_side())
        while time.perf_counter() - t0 < duration:
            for _ in range(32):
                await space.acquire()
                writer.write(frame)
                sent += 1
            await writer.drain()
        while got < sent:
            caught_up.clear()
            if got < sent:
                await caught_up.wait()
        elapsed = time.perf_counter() - t0
        rd.cancel()
        try:
            await rd
        except asyncio.CancelledError:
            pass
        return got / elapsed

    await rtt(200)
    trips = sorted(await rtt(args.pings))
    await pushed(0.1)
    rate = await pushed(args.duration)
    writer.write(encode([STOP]))
    await writer.drain()
    writer.close()
    return {
        "rtt_median_us": statistics.median(trips) * 1e6,
        "rtt_p99_us": trips[int(0.99 * (len(trips) - 1))] * 1e6,
        "msgs_per_s": rate,
    }


def run_asyncio(kind: str, args: argparse.Namespace) -> dict:
    a, b = socket.socketpair()

    def child() -> None:
        loop = _loop_factory(kind)()
        loop.run_until_complete(_aecho(b, args.recv_size))
        os._exit(0)

    proc = _fork(child)
    b.close()
    loop = _loop_factory(kind)()
    try:
        return loop.run_until_complete(_amain(a, args))
    finally:
        loop.close()
        proc.join(10)
