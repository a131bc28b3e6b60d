"""What an observer may read of a live node: its state as records, and its workers' logs.

The records' keys are those of ``_observability/_source.py``. The state readers are called with
``node.lock`` held: from the embedded runtime's source directly, and from the node's "state"
request (a cluster node answering an observer). The log files are the ones ``NodeShell.log``
writes, one per worker, under the node's ``logs`` directory.
"""

from __future__ import annotations

import os
from typing import Any

from rtml._node._objects import PENDING
from rtml._object_store._state import Location
from rtml._protocol._ids import is_put, object_hex, task_of, to_hex
from rtml._protocol._payload import ERR, INLINE, REMOTE, SHM
from rtml._protocol._spec import ASSIGNED, FORWARDED, QUEUED, WAITING

_TASK_STATE = {
    WAITING: "PENDING_ARGS",
    QUEUED: "PENDING_SCHEDULING",
    ASSIGNED: "RUNNING",
    FORWARDED: "FORWARDED",
}


def live_tasks(node: Any, node_id: str) -> list[dict[str, Any]]:
    out = []
    for t in list(node.tasks.values()):
        spec = t.spec
        w = t.worker
        out.append(
            {
                "task_id": to_hex(spec.task_id),
                "name": spec.name,
                "state": _TASK_STATE.get(t.state, "PENDING_SCHEDULING"),
                "node_id": node_id,
                "worker_pid": w.pid if w is not None and t.state == ASSIGNED else None,
                "actor_id": to_hex(spec.actor_id) if spec.actor_id is not None else None,
                "job_id": spec.job[0] if spec.job else "",
                "attempt": t.attempts,
                "submitted": t.submitted,
            }
        )
    return out


def _holders(node: Any) -> dict[int, list[str]]:
    """Who holds each object: processes (by pid), tasks pinning it, peer nodes."""
    names: dict[int, str] = {}
    for w in node.workers.values():
        names[w.wid] = f"worker pid {w.pid}"
    for c in node.clients.values():
        kind = c.info.get("kind")
        names[c.wid] = (
            f"node {c.info.get('node_id', '?')}"
            if kind == "node"
            else f"driver pid {c.info.get('pid', '?')}"
        )
    names.setdefault(1, "driver")
    out: dict[int, list[str]] = {}
    for proc, oids in node.held.items():
        who = names.get(proc, f"process {proc:x}")
        for oid in oids:
            out.setdefault(oid, []).append(who)
    for t in node.tasks.values():
        for d in t.spec.deps:
            out.setdefault(d, []).append(f"task {to_hex(t.spec.task_id)}")
    if node.cluster is not None:  # values kept until the refs inside them are borrowed
        for oid in node.cluster.ownership.registering:
            out.setdefault(oid, []).append("borrow registration")
    return out


def objects(node: Any, node_id: str) -> list[dict[str, Any]]:
    holders = _holders(node)
    store = node.store
    out = []
    for oid, e in list(node.objects.entries.items()):
        if e.state == PENDING:
            where = "PENDING"
        elif e.kind == SHM:
            where = "SHARED_MEMORY"
            try:
                if store is not None and store._state.location(oid) is Location.DISK:
                    where = "SPILLED"
            except (KeyError, AttributeError):
                pass
        elif e.kind == REMOTE:
            where = "REMOTE"
        elif e.kind == ERR:
            where = "ERROR"
        else:
            where = "INLINE" if e.kind == INLINE else "?"
        size = e.size or (len(e.payload) if isinstance(e.payload, (bytes, bytearray)) else 0)
        producer = task_of(oid)
        out.append(
            {
                "object_id": object_hex(oid),
                "size": size,
                "where": where,
                "node_id": node_id,
                "ref_count": e.refs,
                "holders": holders.get(oid, []),
                "task_id": "" if is_put(oid) else to_hex(producer),
            }
        )
    return out


def workers(node: Any, node_id: str) -> list[dict[str, Any]]:
    log_dir = getattr(node.io, "log_dir", "")
    out = []
    for w in list(node.workers.values()):
        out.append(
            {
                "stack_file": os.path.join(log_dir, f"stack-{w.pid}.txt") if log_dir else "",
                "worker_id": to_hex(w.wid),
                "pid": w.pid,
                "node_id": node_id,
                "state": str(w.state).upper(),
                "actor_id": to_hex(w.actor.actor_id) if w.actor is not None else None,
                "tasks": [to_hex(t.spec.task_id) for t in w.assigned],
                "blocked": bool(w.blocked),
            }
        )
    return out


def actors(node: Any, node_id: str) -> list[dict[str, Any]]:
    if node.actors is None:
        return []
    out = []
    for r in list(node.actors.actors.values()):
        out.append(
            {
                "actor_id": to_hex(r.actor_id),
                "class_name": r.name,
                "name": r.key[1] if r.key else None,
                "namespace": r.key[0] if r.key else None,
                "state": "PENDING"
                if r.state in ("DEPENDENCIES_UNREADY", "PENDING_CREATION")
                else r.state,
                "node_id": node_id,
                "pid": r.worker.pid if r.worker is not None else None,
                "num_restarts": r.num_restarts,
                "death_cause": None if r.cause is None else str(r.cause)[:2000],
                "job_id": r.spec.job[0] if r.spec.job else "",
            }
        )
    return out


def recovery(node: Any, node_id: str) -> list[dict[str, Any]]:
    """What a cluster node is doing about failures (for debugging a stuck workload): tasks
    forwarded and where, calls waiting for a restarting actor, objects being rebuilt or asked
    for again, pulls in flight, and pending objects with who waits on them."""
    c = node.cluster
    if c is None:
        return []
    pending = [(oid, e) for oid, e in node.objects.entries.items() if e.state == PENDING]
    return [
        {
            "node_id": node_id,
            "forwarded": {to_hex(t): r.remote for t, r in list(c.forwarded.items())[:50]},
            "parked": {to_hex(a): len(ts) for a, ts in c.parked.items()},
            "refetch": {to_hex(o): n for o, n in list(c.refetch.items())[:50]},
            "pulls": {to_hex(o): p.source for o, p in list(c.pulls.items())[:50]},
            "remote_held": len(c.remote_held),
            "lineage": len(c.lineage),
            "reconstructed": c.stats["reconstructed"],
            "dead_in_view": [n for n, v in c.view.items() if not v.alive],
            "pending": {
                to_hex(o): {
                    "kind": e.kind,
                    "refs": e.refs,
                    "waiters": len(e.waiters or ()),
                    "task_here": task_of(o) in node.tasks,
                }
                for o, e in pending[:40]
            },
            "n_pending": len(pending),
            "roots": _stuck_roots(node),
        }
    ]


def _stuck_roots(node: Any) -> list[dict[str, Any]]:
    """Tasks not running that wait on nothing pending here: where a stuck graph starts."""
    out = []
    entries = node.objects.entries
    for tid, t in list(node.tasks.items()):
        if t.state in (ASSIGNED, FORWARDED):
            continue
        deps = {
            to_hex(d): (None if d not in entries else (entries[d].state, entries[d].kind))
            for d in t.spec.deps
        }
        if any(v is not None and v[0] == PENDING for v in deps.values()):
            continue
        out.append(
            {
                "task": to_hex(tid),
                "name": t.spec.name,
                "state": t.state,
                "deps_left": t.deps_left,
                "deps": deps,
                "actor": t.spec.actor_id is not None,
            }
        )
        if len(out) >= 20:
            break
    return out


READERS = {
    "live_tasks": live_tasks,
    "objects": objects,
    "workers": workers,
    "actors": actors,
    "recovery": recovery,
}


LOG_DIR = "logs"


def log_files(log_dir: str, node_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    for name in names:
        if not (name.startswith("worker-") and name.endswith(".log")):
            continue
        path = os.path.join(log_dir, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        out.append(
            {
                "node_id": node_id,
                "pid": int(name[7:-4]),
                "kind": "worker",
                "path": path,
                "size": st.st_size,
                "mtime": st.st_mtime,
            }
        )
    out.sort(key=lambda r: r["mtime"], reverse=True)
    return out


def read_log_file(log_dir: str, pid: int, tail: int | None) -> str | None:
    path = os.path.join(log_dir, f"worker-{int(pid)}.log")
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:]) + ("\n" if text else "")
    return text
