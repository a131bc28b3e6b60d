"""What mutual TLS costs a cluster: the round trip of a task on another node, and the
throughput of an object pulled between nodes, with and without TLS, side by side.

    .venv/bin/python bench/tls.py --quick          # ~1 min, prints one JSON object
    .venv/bin/python bench/tls.py --json bench/results/tls.json

Each round starts a 2-node ``rtml.testing.Cluster`` (control plane + head + one more node, all on
this machine) once plain and once with ``RTML_TLS_*`` set (a CA and a member certificate made
here with ``cryptography``), in alternating order. The driver connects to the head.

  rtt_us      sequential ``get(f.remote())`` of a no-op pinned (hard affinity) to the second
              node: driver -> head -> node B -> head -> driver, every hop a TLS link when on.
  pull_gbps   a task on the head reads an object made on node B (the head pulls it over the
              node-to-node link) minus the same read of a local object; GB/s = size / that.

Reported: medians over all samples of each mode, and the ratio tls/plain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from _report import machine, write_json_atomic  # noqa: E402

import rtml  # noqa: E402
from rtml._transport import _tls  # noqa: E402
from rtml.testing import Cluster  # noqa: E402
from rtml.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

MB = 1 << 20


@rtml.remote
def noop() -> None:
    return None


@rtml.remote
def make(nbytes: int) -> np.ndarray:
    return np.ones(nbytes, dtype=np.uint8)


@rtml.remote
def read(a: np.ndarray) -> int:
    return int(a[::4096].sum())


def pin(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def certificates(directory: str) -> dict[str, str]:
    try:
        from tls_certs import make_ca, make_member
    except ImportError as e:
        raise ImportError("bench/tls.py needs the tls extra: pip install 'rtml[tls]'") from e
    ca_pem, ca = make_ca(directory)
    cert, key = make_member(directory, "member", ca)
    return {_tls.CERT_ENV: cert, _tls.KEY_ENV: key, _tls.CA_ENV: ca_pem}


def one_round(tls_env: dict[str, str] | None, calls: int, size: int, reps: int) -> dict[str, Any]:
    for name in (_tls.CERT_ENV, _tls.KEY_ENV, _tls.CA_ENV):
        os.environ.pop(name, None)
    if tls_env:
        os.environ.update(tls_env)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        rtml.init(address=c.address)
        try:
            assert c.head_node is not None
            head, other = c.head_node.node_id, c.worker_nodes[0].node_id
            far = noop.options(scheduling_strategy=pin(other))
            rtml.get([far.remote() for _ in range(50)], timeout=60)  # workers up, links open
            rtt = []
            for _ in range(calls):
                t = time.perf_counter()
                rtml.get(far.remote(), timeout=60)
                rtt.append((time.perf_counter() - t) * 1e6)
            reader = read.options(scheduling_strategy=pin(head))
            rtml.get(reader.remote(make.options(scheduling_strategy=pin(head)).remote(MB)))
            gbps = []
            for _ in range(reps):
                local = make.options(scheduling_strategy=pin(head)).remote(size)
                remote = make.options(scheduling_strategy=pin(other)).remote(size)
                rtml.wait([local, remote], num_returns=2, timeout=120)
                t = time.perf_counter()
                rtml.get(reader.remote(local), timeout=120)
                t_local = time.perf_counter() - t
                t = time.perf_counter()
                rtml.get(reader.remote(remote), timeout=120)
                t_remote = time.perf_counter() - t
                gbps.append(size / max(t_remote - t_local, 1e-6) / 1e9)
                del local, remote
            return {"rtt_us": rtt, "pull_gbps": gbps}
        finally:
            rtml.shutdown()
    finally:
        c.shutdown()
        for name in (_tls.CERT_ENV, _tls.KEY_ENV, _tls.CA_ENV):
            os.environ.pop(name, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one short round per mode")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args()
    rounds, calls, size, reps = (1, 300, 50 * MB, 3) if a.quick else (a.rounds, 1000, 200 * MB, 5)
    samples: dict[str, dict[str, list[float]]] = {
        m: {"rtt_us": [], "pull_gbps": []} for m in ("plain", "tls")
    }
    with tempfile.TemporaryDirectory(prefix="rtml-tls-bench-") as d:
        env = certificates(d)
        for r in range(rounds):
            order = ("plain", "tls") if r % 2 == 0 else ("tls", "plain")
            for mode in order:
                got = one_round(env if mode == "tls" else None, calls, size, reps)
                for k, v in got.items():
                    samples[mode][k].extend(v)
    med = {m: {k: statistics.median(v) for k, v in s.items()} for m, s in samples.items()}
    out = {
        "bench": "tls",
        "quick": a.quick,
        "rounds": rounds,
        "object_mb": size // MB,
        "rtt_us_plain": round(med["plain"]["rtt_us"], 1),
        "rtt_us_tls": round(med["tls"]["rtt_us"], 1),
        "rtt_ratio": round(med["tls"]["rtt_us"] / med["plain"]["rtt_us"], 3),
        "pull_gbps_plain": round(med["plain"]["pull_gbps"], 3),
        "pull_gbps_tls": round(med["tls"]["pull_gbps"], 3),
        "pull_ratio": round(med["tls"]["pull_gbps"] / med["plain"]["pull_gbps"], 3),
        "machine": machine(),
    }
    if a.json:
        write_json_atomic(a.json, {**out, "samples": samples})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
