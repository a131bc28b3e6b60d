"""Routing of worker messages to Node calls (runs on the selector thread, under node.lock).

Requests that need an answer carry a request id; the answer is ``("reply", req, value)``.
"""

from __future__ import annotations

import pickle
from typing import Any

from rtml import exceptions as exc


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


def _refs(node: Any, shell: Any, wid: int, m: tuple) -> None:
    node.ref_updates(wid, m[1], m[2])


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
    w = node.workers.get(wid)

    def answer(_waiter: Any) -> None:
        if w is not None and w.requests.pop(req, None) is not None:
            node._unblock(wid)
        shell.send(wid, ("reply", req, [node.payload(o) for o in ids]))

    waiter = node.add_get(wid, ids, answer)
    if waiter is None:
        shell.send(wid, ("reply", req, [node.payload(o) for o in ids]))
    elif w is not None:
        w.requests[req] = (waiter, ids)


def _wait(node: Any, shell: Any, wid: int, m: tuple) -> None:
    _tag, req, ids, num_returns, block = m
    w = node.workers.get(wid)
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
    w = node.workers.get(wid)
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
    shell.log(wid, m[1], m[2], m[3])


def _resources(node: Any, shell: Any, wid: int, m: tuple) -> None:
    shell.send(wid, ("reply", m[1], (node.resources.totals(), node.resources.availability())))


_HANDLERS = {
    "done": _done,
    "refs": _refs,
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
}
