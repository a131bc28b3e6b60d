"""Transport candidates for rtml's process channels, measured in one run on this machine.

    bench/.peers-venv/bin/python bench/transport.py            # ~1 min
    bench/.peers-venv/bin/python bench/transport.py --rounds 5 --duration 2

Each candidate connects this process with a forked echo process and carries rtml-style frames:
``[u32 length][pickle([msg, ...])]`` with a small message (a "done"-like tuple). Measured:

  round trip  one frame there, the echo back; median and p99 of ``--pings`` trips (µs)
  pipelined   the pusher writes one frame per message (one write call each, at most
              ``--window`` unanswered); the echo process reads whatever is there, decodes it,
              and answers all of it in ONE frame (a batch), as rtml's node coalesces (msgs/s)

Candidates: os.pipe pair, socketpair (AF_UNIX), TCP loopback (TCP_NODELAY),
multiprocessing.Pipe (Connection), pyzmq PAIR over ipc://, and asyncio streams over a
socketpair (stock loop, and uvloop when installed). Rounds alternate the candidates; the
median over rounds is reported. Results: bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import platform
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _report import write_json_atomic  # noqa: E402

HDR = struct.Struct("<I")
# Bytes asked of each read. rtml's channel reads 256 KiB at a time (_RECV_SIZE); while glibc's
# mmap threshold is at its default (128 KiB) every such read maps and unmaps fresh pages, which
# costs more than the transport itself, so candidates are compared at 64 KiB and the 256 KiB
# socketpair is a separate row (its fork-child ends have never raised the threshold). Set by
# --recv-size; with 256 KiB for all, earlier candidates may raise the threshold (see 0001).
RECV = [1 << 16]
MSG = ("done", 0x2000000000100000001, 1, b"\x01" * 24)  # ~70 bytes pickled, like a "done"
STOP = "stop"


def encode(msgs: list) -> bytes:
    p = pickle.dumps(msgs, protocol=5)
    return HDR.pack(len(p)) + p


class Decoder:
    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list:
        buf = self.buf
        buf += data
        out: list = []
        pos, n = 0, len(buf)
        while n - pos >= 4:
            (ln,) = HDR.unpack_from(buf, pos)
            if n - pos - 4 < ln:
                break
            out.extend(pickle.loads(memoryview(buf)[pos + 4 : pos + 4 + ln]))
            pos += 4 + ln
        del buf[:pos]
        return out


# --------------------------------------------------------------------------- endpoints
class FdEnd:
    """os.pipe pair: read from one fd, write to the other."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.p = select.poll()
        self.p.register(rfd, select.POLLIN)

    def send(self, b: bytes) -> None:
        view = memoryview(b)
        while view:
            view = view[os.write(self.wfd, view) :]

    def recv(self) -> bytes:
        return os.read(self.rfd, RECV[0])

    def ready(self) -> bool:
        return bool(self.p.poll(0))


class SockEnd:
    def __init__(self, s: socket.socket, recv_size: int | None = None) -> None:
        self.s = s
        self.size = recv_size
        self.p = select.poll()
        self.p.register(s.fileno(), select.POLLIN)

    def send(self, b: bytes) -> None:
        self.s.sendall(b)

    def recv(self) -> bytes:
        return self.s.recv(self.size or RECV[0])

    def ready(self) -> bool:
        return bool(self.p.poll(0))


class ConnEnd:
    """multiprocessing.Connection: message-oriented (send_bytes / recv_bytes)."""

    def __init__(self, c: Any) -> None:
        self.c = c

    def send(self, b: bytes) -> None:
        self.c.send_bytes(b)

    def recv(self) -> bytes:
        return self.c.recv_bytes()

    def ready(self) -> bool:
        return self.c.poll(0)


class ZmqEnd:
    def __init__(self, s: Any) -> None:
        import zmq

        self.s, self.zmq = s, zmq

    def send(self, b: bytes) -> None:
        self.s.send(b, copy=True)

    def recv(self) -> bytes:
        return self.s.recv(copy=True)

    def ready(self) -> bool:
        return bool(self.s.poll(0))


def echo_loop(ep: Any) -> None:
    """Answer everything readable with one frame; stop on the STOP message."""
    dec = Decoder()
    while True:
        data = ep.recv()
        if not data:
            return
        msgs = dec.feed(data)
        while ep.ready():  # batch: take all that is already there
            more = ep.recv()
            if not more:
                break
            msgs += dec.feed(more)
        if STOP in msgs:
            return
        if msgs:
            ep.send(encode(msgs))


def ping(ep: Any, n: int) -> list[float]:
    dec, frame, out = Decoder(), encode([MSG]), []
    for _ in range(n):
        t = time.perf_counter()
        ep.send(frame)
        while not dec.feed(ep.recv()):
            pass
        out.append(time.perf_counter() - t)
    return out


def push(ep: Any, duration: float, window: int) -> float:
    dec, frame = Decoder(), encode([MSG])
    sent = got = 0
    t0 = time.perf_counter()
    end = t0 + duration
    sending = True
    while sending or got < sent:
        if sending and sent - got < window:
            ep.send(frame)
            sent += 1
            if sent % 32 == 0:
                if time.perf_counter() >= end:
                    sending = False
                while ep.ready():
                    got += len(dec.feed(ep.recv()))
        else:
            got += len(dec.feed(ep.recv()))
    return got / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- candidates
def _fork(target: Any, *args: Any) -> Any:
    p = mp.get_context("fork").Process(target=target, args=args, daemon=True)
    p.start()
    return p


def pair_pipe() -> tuple[Any, Any, list]:
    a_r, b_w = os.pipe()
    b_r, a_w = os.pipe()
    return FdEnd(a_r, a_w), FdEnd(b_r, b_w), [a_r, a_w, b_r, b_w]


def pair_socketpair() -> tuple[Any, Any, list]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return SockEnd(a), SockEnd(b), [a, b]


def pair_socketpair_256k() -> tuple[Any, Any, list]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return SockEnd(a, 1 << 18), SockEnd(b, 1 << 18), [a, b]


def pair_tcp() -> tuple[Any, Any, list]:
    lst = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(lst.getsockname())
    b, _ = lst.accept()
    lst.close()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SockEnd(a), SockEnd(b), [a, b]


def pair_mp_pipe() -> tuple[Any, Any, list]:
    a, b = mp.Pipe(duplex=True)
    return ConnEnd(a), ConnEnd(b), [a, b]


def _zmq_child(path: str) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.connect(path)
    echo_loop(ZmqEnd(s))
    s.close(linger=0)
    ctx.term()


def run_zmq(args: argparse.Namespace) -> dict:
    import zmq

    path = "ipc://" + os.path.join(tempfile.mkdtemp(prefix="rtml-zmq-"), "s")
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.bind(path)
    child = _fork(_zmq_child, path)
    try:
        return measure(ZmqEnd(s), args)
    finally:
        s.send(encode([STOP]))
        child.join(10)
        s.close(linger=0)
        ctx.term()


def run_sync(make: Any, args: argparse.Namespace) -> dict:
    mine, theirs, handles = make()

    def child() -> None:
        echo_loop(theirs)
        os._exit(0)

    proc = _fork(child)
    try:
        return measure(mine, args)
    finally:
        mine.send(encode([STOP]))
        proc.join(10)
        for h in handles:
            h.close() if hasattr(h, "close") else os.close(h)


def measure(ep: Any, args: argparse.Namespace) -> dict:
    ping(ep, 200)  # warm-up
    trips = ping(ep, args.pings)
    push(ep, 0.1, args.window)
    rate = push(ep, args.duration, args.window)
    trips.sort()
    return {
        "rtt_median_us": statistics.median(trips) * 1e6,
        "rtt_p99_us": trips[int(0.99 * (len(trips) - 1))] * 1e6,
        "msgs_per_s": rate,
    }


def candidates() -> dict[str, Any]:
    out: dict[str, Any] = {
        "os.pipe pair": lambda a: run_sync(pair_pipe, a),
        "socketpair (AF_UNIX)": lambda a: run_sync(pair_socketpair, a),
        "socketpair, 256 KiB reads": lambda a: run_sync(pair_socketpair_256k, a),
        "TCP loopback": lambda a: run_sync(pair_tcp, a),
        "multiprocessing.Pipe": lambda a: run_sync(pair_mp_pipe, a),
    }
    try:
        import zmq  # noqa: F401

        out["pyzmq PAIR ipc://"] = run_zmq
    except ImportError:
        print("pyzmq not installed: skipped (bash bench/setup_peers.sh)")
    from _transport_asyncio import run_asyncio

    out["asyncio streams (socketpair)"] = lambda a: run_asyncio("asyncio", a)
    try:
        import uvloop  # noqa: F401

        out["asyncio streams + uvloop"] = lambda a: run_asyncio("uvloop", a)
    except ImportError:
        print("uvloop not installed: skipped")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pings", type=int, default=5000)
    ap.add_argument("--duration", type=float, default=1.5, help="pipelined seconds per round")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--recv-size", type=int, default=1 << 16, help="bytes per read call")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    RECV[0] = args.recv_size
    cands = candidates()
    runs: dict[str, list[dict]] = {name: [] for name in cands}
    for rnd in range(args.rounds):
        for name, fn in cands.items():
            runs[name].append(fn(args))
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    print(f"\n{'transport':30s} {'RTT median µs':>14s} {'RTT p99 µs':>11s} {'msgs/s':>20s}")
    summary = {}
    for name, rs in runs.items():
        med = statistics.median(r["rtt_median_us"] for r in rs)
        p99 = statistics.median(r["rtt_p99_us"] for r in rs)
        rates = [r["msgs_per_s"] for r in rs]
        m, sd = statistics.fmean(rates), statistics.pstdev(rates)
        summary[name] = {
            "rtt_median_us": med,
            "rtt_p99_us": p99,
            "msgs_per_s_mean": m,
            "msgs_per_s_std": sd,
            "runs": rs,
        }
        print(f"{name:30s} {med:14.1f} {p99:11.1f} {f'{m:,.0f} ± {sd:,.0f}':>20s}")
    os.makedirs(args.out_dir, exist_ok=True)
    write_json_atomic(
        os.path.join(args.out_dir, "transport.json"),
        {
            "meta": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "args": vars(args),
                "msg_frame_bytes": len(encode([MSG])),
            },
            "results": summary,
        },
    )
    print(
        f"\nframe size {len(encode([MSG]))} bytes; wrote "
        f"{os.path.join(args.out_dir, 'transport.json')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
