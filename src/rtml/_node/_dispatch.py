"""Routing of worker messages to Node calls (runs on the selector thread, under node.lock).

Requests that need an answer carry a request id; the answer is ``("reply", req, value)``.
"""

from __future__ import annotations

import pickle
from typing import Any

from rtml import exceptions as exc
from rtml._node._objects import Waiter


def dispatch(node: Any, shell: Any, wid: int, m: tuple) -> None:
    tag = m[0]
    h = _HANDLERS.get(tag)
    if h is None:
        if tag.startswith("actor") and node.actors is not None:
            node.actors.handle(wid, m)
            return
        raise exc.RtmlSystemError(f"unknown message {tag!r} from worker {wid}")
    h(node, shell, wid, m)


def _done(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.on_done(wid, m[1], m[2], m[3], m[4])


def _revoked(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.on_revoked(wid, m[1])


def _refs(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.ref_updates(wid, m[1], m[2])


def _borrow(node: Any, shell: Any, wid: int, m: tuple) -> None:
    """A peer borrows refs it found inside a value (see ``_cluster/_ownership.py``): hold
    them for it and say which ones were already gone."""
    _tag, req, ids = m
    missing = [o for o in ids if o not in node.objects]
    node.ref_updates(wid, ids, [])
    shell.send(wid, ("reply", req, missing))


def _submit(node: Any, shell: Any, wid: int, m: tuple) -> None:
    spec, blob = m[1], m[2]
    if blob is not None:
        node.register_function(spec.fn_id, blob)
    node.submit(wid, spec)


def _hello(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.on_hello(wid, m[1])


def _item(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.on_item(m[1], m[2], m[3], m[4], m[5], m[6])


def _put(node: Any, shell: Any, wid: int, m: tuple) -> None:
    _tag, req, task_id, kind, payload, size, contained = m
    try:
        node.put(wid, task_id, kind, payload, size, contained)
        err = None
    except exc.RtmlError as e:
        err = pickle.dumps(e)
    if req is not None:
        shell.send(wid, ("reply", req, err))


def _get(node: Any, shell: Any, wid: int, m: tuple) -> None:
    _tag, req, ids = m
    w = node.workers.get(wid) or node.clients.get(wid)

    def attempt(fired: Any = None) -> None:
        if fired is not None and w is not None and w.requests.pop(req, None) is not None:
            node._unblock(wid)
        # (In a cluster an object may have been sealed as REMOTE meanwhile: add_get then
        # pulls it here and waits again.)
        waiter = node.add_get(wid, ids, attempt)
        if waiter is None:
            shell.send(wid, ("reply", req, [node.payload(o) for o in ids]))
        elif w is not None:
            w.requests[req] = (waiter, ids)

    attempt()


def _wait(node: Any, shell: Any, wid: int, m: tuple) -> None:
    _tag, req, ids, num_returns, block = m
    w = node.workers.get(wid) or node.clients.get(wid)
    objects = node.objects

    def sealed() -> list[int]:
        return [o for o in ids if objects.is_sealed(o) or o not in objects]

    def answer(_waiter: Any) -> None:
        if w is not None and w.requests.pop(req, None) is not None:
            node._unblock(wid)
        shell.send(wid, ("reply", req, sealed()))

    ready, waiter = node.add_wait(wid, ids, num_returns, answer, block)
    if waiter is None:
        shell.send(wid, ("reply", req, ready))
    elif w is not None:
        w.requests[req] = (waiter, ids)


def _unget(node: Any, shell: Any, wid: int, m: tuple) -> None:
    w = node.workers.get(wid) or node.clients.get(wid)
    if w is None:
        return
    r = w.requests.pop(m[1], None)
    if r is not None:
        node.remove_waiter(wid, r[0], r[1])


def _cancel(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.cancel(m[1], m[2], m[3])


def _stream_next(node: Any, shell: Any, wid: int, m: tuple) -> None:
    _tag, req, task_id, index = m

    def attempt() -> None:
        available, oid = node.stream_next(task_id, index)
        if available:
            shell.send(wid, ("reply", req, oid))
        else:
            node.stream_wait(task_id, attempt)

    attempt()


def _stream_drop(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.stream_drop(m[1], m[2])


def _log(node: Any, shell: Any, wid: int, m: tuple) -> None:
    shell.log(wid, m[1], m[2], m[3], m[4])


def _client_hello(node: Any, shell: Any, wid: int, m: tuple) -> None:
    c = node.clients.get(wid)
    if c is None:
        raise exc.RtmlSystemError(f"process {wid} is not a client connection")
    c.info = dict(m[2])
    cluster = node.cluster
    if c.info.get("kind") == "node" and cluster is not None and cluster.is_fenced(c.info):
        shell.close_link(wid)  # a node declared dead (a zombie): refuse it
        return
    shell.send(wid, ("reply", m[1], {**shell.node_info, "proc": wid}))


def resources_of(node: Any) -> tuple[dict[str, float], dict[str, float]]:
    """(total, available) of the whole runtime: this node, or every live node of its cluster."""
    total, avail = node.resources.totals(), node.resources.availability()
    cluster = node.cluster
    if cluster is None:
        return total, avail
    total, avail = dict(total), dict(avail)
    for v in cluster.view.values():
        if v.alive and v.node_id != cluster.node_id:
            for k, x in v.totals.items():
                total[k] = total.get(k, 0.0) + x
            for k, x in v.available.items():
                avail[k] = avail.get(k, 0.0) + max(0.0, x)
    return total, avail


def nodes_of(node: Any, node_id: str) -> list[dict[str, Any]]:
    """``rtml.nodes()``: Ray's fields for each node (alive or dead) of the runtime."""
    cluster = node.cluster
    if cluster is None:
        return [
            {
                "NodeID": node_id,
                "Alive": True,
                "Resources": node.resources.totals(),
                "NodeManagerAddress": "127.0.0.1",
                "Labels": {},
            }
        ]
    out = []
    for v in sorted(cluster.view.values(), key=lambda v: v.index):
        host, _, port = v.address.rpartition(":")
        out.append(
            {
                "NodeID": v.node_id,
                "Alive": v.alive,
                "Resources": dict(v.totals),
                "NodeManagerAddress": host,
                "NodeManagerPort": int(port or 0),
                "Labels": dict(v.labels),
                "Index": v.index,
            }
        )
    return out


def _resources(node: Any, shell: Any, wid: int, m: tuple) -> None:
    shell.send(wid, ("reply", m[1], resources_of(node)))


def _nodes(node: Any, shell: Any, wid: int, m: tuple) -> None:
    shell.send(wid, ("reply", m[1], nodes_of(node, shell.node_info.get("node_id", ""))))


def _fetch(node: Any, shell: Any, wid: int, m: tuple) -> None:
    """A peer node asks for objects: the reply waits until each is sealed (never pulling a
    remote one here first) and says where the bytes are; see ClusterState.fetch_value."""
    _tag, req, ids = m
    cluster = node.cluster
    objects = node.objects

    def answer(_waiter: Any = None) -> None:
        # Every one sealed, checked again at each call: one sealed earlier may be pending
        # again by now (lost with a node and being rebuilt), and a pending entry has no value.
        pending = {o for o in ids if o in objects and not objects.is_sealed(o)}
        if pending:
            waiter = Waiter(len(pending), answer)
            for o in pending:
                objects.add_waiter(o, waiter)
            return
        shell.send(wid, ("reply", req, [cluster.fetch_value(o) for o in ids]))

    for o in ids:  # owned here and lost with a dead node: rebuilt, answered when done
        cluster.check_lost(o)
    answer()


def _state(node: Any, shell: Any, wid: int, m: tuple) -> None:
    """An observer asks for live state: ("state", req, kind) with kind in READERS."""
    from rtml._node._readers import READERS, log_files

    _tag, req, kind = m
    node_id = shell.node_info.get("node_id", "")
    if kind == "logs":
        value: Any = log_files(shell.log_dir, node_id)
    else:
        reader = READERS.get(kind)
        value = None if reader is None else reader(node, node_id)
    shell.send(wid, ("reply", req, value))


def _read_log(node: Any, shell: Any, wid: int, m: tuple) -> None:
    from rtml._node._readers import read_log_file

    _tag, req, pid, tail = m
    shell.send(wid, ("reply", req, read_log_file(shell.log_dir, pid, tail)))


def _pull(node: Any, shell: Any, wid: int, m: tuple) -> None:
    _tag, req, oid, offset, length = m
    data = node.cluster.serve_pull(oid, offset, length)
    if data is None:
        shell.send(wid, ("reply", req, None))
    else:
        shell.send_raw(wid, req, data)


_HANDLERS = {
    "done": _done,
    "refs": _refs,
    "borrow": _borrow,
    "revoked": _revoked,
    "submit": _submit,
    "hello": _hello,
    "item": _item,
    "put": _put,
    "get": _get,
    "wait": _wait,
    "unget": _unget,
    "cancel": _cancel,
    "stream_next": _stream_next,
    "stream_drop": _stream_drop,
    "log": _log,
    "resources": _resources,
    "client_hello": _client_hello,
    "nodes": _nodes,
    "fetch": _fetch,
    "pull": _pull,
    "state": _state,
    "read_log": _read_log,
}
