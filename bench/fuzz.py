"""Coverage-guided fuzzing (atheris, libFuzzer) of frame decoding and of the control-plane
server's handling of what an authenticated peer sends.

    .venv/bin/python bench/fuzz.py --minutes 10           # prints one JSON object
    .venv/bin/python bench/fuzz.py --quick                # 30 s

Needs the ``fuzz`` extra (``pip install 'rtml[fuzz]'``: atheris, which ships wheels for
CPython up to 3.11). The target runs in this process, instrumented: a real ``ControlServer``
(in-memory tables, its loop not running) with a connection whose peer end is a socket pair.
Each input is written by the peer; the server's own ``_read`` then ``_flush`` handle it, exactly
as its selector loop would, and what it replies is drained. A connection the server closed is
replaced by a new one. Each input also goes, split at a point it chooses, through a fresh
frame decoder. A crash is any exception that escapes: the server must turn every bad input into
an error reply or a closed connection, and the decoder into ``FrameError``.

State that well-formed requests store (kv entries, nodes, jobs) is legitimately kept, so the
harness starts a new plane every 20,000 inputs; the server's frame limit is 1 MiB here.

The seed corpus is well-formed requests for every control-plane operation (with plausible and
implausible arguments), so mutation starts from frames that reach the handlers. The node's
message handling is fuzzed against a live node by ``tests/integration/test_fuzz_protocol.py``
(Hypothesis) rather than here: a node in-process is not a small harness.

Reported: executions, coverage (libFuzzer's edges ``cov`` and features ``ft``), crashes, and
the crash input's path when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)


def seeds(directory: str) -> int:
    from rtml._control._plane import ControlPlane
    from rtml._control._storage import open_storage
    from rtml._transport._channel import encode

    plane = ControlPlane(open_storage(None))
    args_of = [(), ("x",), ("x", 1), ("x", b"v", True), (1, 2, 3), (None,) * 4]
    n = 0
    for k, op in enumerate(sorted(plane._ops)):
        lo, hi = plane._ops[op][1], plane._ops[op][2]
        for args in args_of:
            if lo <= len(args) <= hi or k % 3 == 0:
                with open(os.path.join(directory, f"seed-{n}"), "wb") as f:
                    f.write(encode([("req", n, op, args)]))
                n += 1
    with open(os.path.join(directory, f"seed-{n}"), "wb") as f:
        f.write(encode([("req", 1, "list_nodes", ()), ("req", 2, "kv_get", ("k",))]))
    return n + 1


def child(argv: list[str]) -> None:
    try:
        import atheris
    except ImportError:
        raise ImportError("bench/fuzz.py needs the fuzz extra: pip install 'rtml[fuzz]'") from None
    import selectors
    import socket

    with atheris.instrument_imports(include=["rtml"]):
        from rtml._control import _server
        from rtml._control._plane import ControlPlane
        from rtml._control._storage import open_storage
        from rtml._transport import FrameError, NodeChannel
        from rtml._transport._channel import _Decoder

    _server.log = lambda msg: None  # the server logs every refusal; keep the run quiet
    # Frames are pickles, which an authenticated peer may use to call any importable function
    # (``bytearray(10**12)`` included): the token and TLS keep strangers out, not members. The
    # harness therefore decodes with an unpickler that resolves no globals, so it measures the
    # server's handling of data, not pickle's documented power.
    import io
    import pickle
    import types

    from rtml._transport import _channel

    class _NoGlobals(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            raise pickle.UnpicklingError(f"global {module}.{name} refused by the fuzz harness")

    def loads(data: object) -> object:
        return _NoGlobals(io.BytesIO(bytes(data))).load()  # type: ignore[call-overload]

    _channel.pickle = types.SimpleNamespace(loads=loads, dumps=pickle.dumps)  # type: ignore[assignment]
    # Frames up to 1 MiB (the limit is a parameter of the server): an input stream that
    # announces a larger frame is refused, rather than buffered for a frame of up to 2 GiB
    # that the fuzzer feeds 4 KiB at a time (the harness would measure that as a leak).
    server = _server.ControlServer(ControlPlane(open_storage(None)), b"k" * 32, max_frame=1 << 20)
    state: dict = {"n": 0}
    if os.environ.get("RTML_FUZZ_TRACE"):  # which request made the memory jump
        import resource

        real = ControlPlane.handle

        def traced(self, sub, op, args=()):  # type: ignore[no-untyped-def]
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                return real(self, sub, op, args)
            finally:
                grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
                if grew > 50_000:
                    print(f"GREW {grew} kB on {op!r} {args!r:.300}", file=sys.stderr)

        ControlPlane.handle = traced  # type: ignore[method-assign]

    def fresh() -> None:
        a, b = socket.socketpair()
        b.setblocking(False)
        server._next_id += 1
        conn = _server._Conn(server._next_id, NodeChannel(a), "fuzz")
        server._conns[conn.id] = conn
        server._sel.register(a, selectors.EVENT_READ, conn)
        state["conn"], state["peer"] = conn, b

    fresh()

    def one(data: bytes) -> None:
        if len(data) > 1:
            cut = data[0] % len(data)
            dec = _Decoder(1 << 20)
            try:
                dec.feed(data[1 : cut + 1])
                dec.feed(data[cut + 1 :])
            except FrameError:
                pass
        state["n"] += 1
        if state["n"] % 20000 == 0:  # what peers stored (kv, nodes, jobs) is theirs to keep:
            server.plane = ControlPlane(open_storage(None))  # start over so it stays bounded
        conn, peer = state["conn"], state["peer"]
        try:
            peer.sendall(data)
        except OSError:
            pass
        server._read(conn)
        server._flush()
        try:
            while peer.recv(1 << 16):
                pass
        except (BlockingIOError, OSError):
            pass
        if conn.ch.closed:
            peer.close()
            fresh()

    atheris.Setup(argv, one)
    atheris.Fuzz()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="30 seconds")
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a, rest = p.parse_known_args()
    if a.child:
        child([sys.argv[0], *rest])
        return
    seconds = 30 if a.quick else int(a.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="rtml-fuzz-") as d:
        corpus = os.path.join(d, "corpus")
        os.makedirs(corpus)
        n_seeds = seeds(corpus)
        crash_dir = os.path.join(HERE, "results", "fuzz-crashes")
        os.makedirs(crash_dir, exist_ok=True)
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            f"-max_total_time={seconds}",
            "-max_len=4096",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={crash_dir}/",
            corpus,
        ]
        env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
    err = proc.stderr
    runs = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", err, re.M)
    done = re.search(r"Done (\d+) runs in (\d+) second", err)
    crashes = re.findall(r"Test unit written to (\S+)", err)
    execs = int(done.group(1)) if done else (int(runs[-1][0]) if runs else 0)
    out = {
        "bench": "fuzz",
        "seconds": seconds,
        "seeds": n_seeds,
        "execs": execs,
        "execs_per_s": round(execs / max(1, seconds), 1),
        "cov": int(runs[-1][1]) if runs else None,
        "ft": int(runs[-1][2]) if runs else None,
        "crashes": len(crashes),
        "crash_inputs": crashes,
        "exit_code": proc.returncode,
    }
    if crashes or proc.returncode not in (0,):
        tail = [ln for ln in err.splitlines() if ln.strip()][-40:]
        out["stderr_tail"] = tail
    if a.json:
        from _report import write_json_atomic

        write_json_atomic(a.json, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
