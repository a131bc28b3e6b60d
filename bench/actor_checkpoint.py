"""Actor checkpoints (issue 6): calls re-executed and recovery time after a SIGKILL, and what
checkpointing costs while nothing fails.

    .venv/bin/python bench/actor_checkpoint.py --json bench/results/actor_checkpoint.json
    .venv/bin/python bench/actor_checkpoint.py --quick                    # ~10 s smoke run

The actor holds a state that every call updates: a count of applied calls, a running sum and a
``--state-kb`` buffer (one byte written per call). Call ``i`` carries its index and applies only
if it is the next one (else it raises), so the final state shows every call applied exactly
once. The driver makes ``--calls`` sequential calls (``rtml.get`` of each before the next).

  recovery    for each ``--kill-at`` k and each ``--intervals`` value (0: no checkpoints): a
              fresh actor (``max_restarts=-1``); right after the result of call k the driver
              SIGKILLs the actor's process, then asks the actor how many calls its state
              reflects (``applied()``, re-sent by ``max_task_retries`` if it reached the dead
              process) and re-sends the calls from there. Reported: calls re-executed
              (k - applied), recovery time (SIGKILL to the answer of ``applied()``: death
              noticed, new process, constructor, checkpoint read and restored), and the check
              that the final state is exactly that of all the calls.
  steady      calls/s of the same loop with no failure, per interval, in rotating order over
              ``--rounds`` rounds; the cost of one checkpoint is derived from the difference
              with interval 0 (per-call time difference x interval).

Checkpoints go to the default directory (``$RTML_STATE_DIR`` or ``/tmp/rtml-<uid>``, on this
machine's disk: ext4) unless ``--checkpoint-dir`` says otherwise; each is written to a temp
file, fsynced and renamed. No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from _report import write_json_atomic  # noqa: E402

import rtml  # noqa: E402
from rtml import exceptions as exc  # noqa: E402


@rtml.remote
class Ledger:
    def __init__(self, state_kb: int) -> None:
        self.applied = 0
        self.total = 0
        self.buf = bytearray(state_kb * 1024)

    def update(self, i: int, x: int) -> tuple[int, int]:
        if i != self.applied:
            raise ValueError(f"call {i} arrived when the state reflects {self.applied} calls")
        self.total += x
        if self.buf:
            self.buf[i % len(self.buf)] = x & 0xFF
        self.applied += 1
        return self.applied, os.getpid()

    def count(self) -> int:
        return self.applied

    def digest(self) -> tuple[int, int, bytes]:
        return self.applied, self.total, bytes(self.buf)


def _value(i: int) -> int:
    return (i * 2654435761) % 1000


def _expected(calls: int, state_kb: int) -> tuple[int, int, bytes]:
    buf = bytearray(state_kb * 1024)
    for i in range(calls):
        if buf:
            buf[i % len(buf)] = _value(i) & 0xFF
    return calls, sum(_value(i) for i in range(calls)), bytes(buf)


def _options(interval: int, a: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"max_restarts": -1, "checkpoint_interval": interval}
    if a.checkpoint_dir:
        opts["checkpoint_dir"] = a.checkpoint_dir
    return opts


def _gone(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.001)


def run_recovery(interval: int, kill_at: int, a: argparse.Namespace) -> dict[str, Any]:
    actor = Ledger.options(**_options(interval, a)).remote(a.state_kb)
    t0 = time.perf_counter()
    pid = None
    i = 0
    while i < kill_at:
        _, pid = rtml.get(actor.update.remote(i, _value(i)), timeout=60)
        i += 1
    assert pid is not None
    t_kill = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    applied = rtml.get(actor.count.options(max_task_retries=-1).remote(), timeout=60)
    recovery = time.perf_counter() - t_kill
    new_pid = None
    i = applied
    while i < a.calls:
        _, new_pid = rtml.get(actor.update.remote(i, _value(i)), timeout=60)
        i += 1
    total = time.perf_counter() - t0
    state = rtml.get(actor.digest.remote(), timeout=60)
    rtml.kill(actor)
    _gone(new_pid or pid, time.monotonic() + 10)
    return {
        "interval": interval,
        "kill_at": kill_at,
        "restored_to": applied,
        "re_executed": kill_at - applied,
        "recovery_ms": recovery * 1e3,
        "total_s": total,
        "exactly_once": state == _expected(a.calls, a.state_kb),
        "restarted": new_pid is not None and new_pid != pid,
    }


def run_steady(interval: int, a: argparse.Namespace) -> float:
    actor = Ledger.options(**_options(interval, a)).remote(a.state_kb)
    rtml.get(actor.count.remote(), timeout=60)  # started
    t0 = time.perf_counter()
    for i in range(a.calls):
        rtml.get(actor.update.remote(i, _value(i)), timeout=60)
    rate = a.calls / (time.perf_counter() - t0)
    rtml.kill(actor)
    return rate


def report(doc: dict[str, Any]) -> str:
    a = doc["args"]
    lines = [
        f"{a['calls']} sequential calls, state {a['state_kb']} KB, SIGKILL after call k; "
        "checkpoint_interval 0 = none",
        "",
    ]
    lines.append(
        f"{'interval':>8}  {'k':>5}  {'restored to':>11}  {'re-executed':>11}  "
        f"{'recovery ms':>11}  {'run s':>6}  exactly once"
    )
    for r in doc["recovery"]:
        lines.append(
            f"{r['interval']:>8}  {r['kill_at']:>5}  {r['restored_to']:>11}  "
            f"{r['re_executed']:>11}  {r['recovery_ms']:>11.1f}  {r['total_s']:>6.2f}"
            f"  {'yes' if r['exactly_once'] else 'NO'}"
        )
    lines += ["", "per interval: mean calls re-executed, median recovery (ms)"]
    for iv, s in doc["recovery_summary"].items():
        lines.append(f"{iv:>8}  {s['re_executed_mean']:>8.1f}  {s['recovery_ms_median']:>8.1f}")
    lines += [
        "",
        f"steady state ({a['rounds']} rounds, no failure): calls/s mean ± std, "
        "relative to no checkpoints, cost of one checkpoint",
    ]
    for iv, s in doc["steady"].items():
        ck = s.get("checkpoint_ms")
        lines.append(
            f"{iv:>8}  {s['mean']:>8,.0f} ± {s['std']:>5,.0f}  {s['relative']:>5.2f}  "
            + (f"{ck:.2f} ms" if ck is not None else "")
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument(
        "--kill-at",
        default="137,777,1234,1999",
        help="comma-separated call numbers after which the actor is killed",
    )
    ap.add_argument("--intervals", default="0,1,10,100", help="checkpoint_interval values")
    ap.add_argument("--state-kb", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="steady-state rounds")
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--quick", action="store_true", help="a fast smoke run")
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args()
    if a.quick:
        a.calls, a.kill_at, a.rounds = 300, "77,250", 1
    intervals = [int(x) for x in a.intervals.split(",")]
    kills = [int(x) for x in a.kill_at.split(",")]
    if any(not 0 < k <= a.calls for k in kills):
        ap.error("every --kill-at must be in 1..--calls")
    doc: dict[str, Any] = {
        "command": "python bench/actor_checkpoint.py " + " ".join(sys.argv[1:]),
        "args": {
            "calls": a.calls,
            "kill_at": kills,
            "intervals": intervals,
            "state_kb": a.state_kb,
            "rounds": a.rounds,
            "checkpoint_dir": a.checkpoint_dir,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": os.getloadavg(),
    }
    rtml.init(num_cpus=2, include_dashboard=False)
    try:
        # Warm-up (the first actor pays for imports in a fresh worker), and a check that the
        # runtime checkpoints at all (it raises if the worker got no checkpoint settings).
        probe = Ledger.options(**_options(0, a)).remote(a.state_kb)
        rtml.get(probe.__rtml_checkpoint__.remote(), timeout=60)
        rtml.kill(probe)
        run_steady(0, argparse.Namespace(**{**vars(a), "calls": 100}))
        doc["recovery"] = [run_recovery(iv, k, a) for k in kills for iv in intervals]
        rates: dict[int, list[float]] = {iv: [] for iv in intervals}
        for r in range(a.rounds):
            for iv in intervals[r % len(intervals) :] + intervals[: r % len(intervals)]:
                rates[iv].append(run_steady(iv, a))
    except exc.RtmlError:
        rtml.shutdown()
        raise
    rtml.shutdown()
    doc["recovery_summary"] = {
        str(iv): {
            "re_executed_mean": statistics.mean(
                r["re_executed"] for r in doc["recovery"] if r["interval"] == iv
            ),
            "recovery_ms_median": statistics.median(
                r["recovery_ms"] for r in doc["recovery"] if r["interval"] == iv
            ),
        }
        for iv in intervals
    }
    base = statistics.mean(rates[0]) if 0 in rates else None
    steady: dict[str, Any] = {}
    for iv, rs in rates.items():
        m = statistics.mean(rs)
        s: dict[str, Any] = {
            "mean": m,
            "std": statistics.pstdev(rs),
            "samples": rs,
            "relative": m / base if base else float("nan"),
        }
        if base and iv:
            s["checkpoint_ms"] = (1 / m - 1 / base) * iv * 1e3
        steady[str(iv)] = s
    doc["steady"] = steady
    doc["load_average_at_end"] = os.getloadavg()
    print(report(doc))
    if a.json:
        write_json_atomic(a.json, json.loads(json.dumps(doc, default=str)))


if __name__ == "__main__":
    main()
