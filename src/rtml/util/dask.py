"""Dask on rtml (as ``ray.util.dask``): a Dask scheduler that runs a graph's tasks as rtml tasks.

::

    x.compute(scheduler=ray_dask_get)            # or: enable_dask_on_ray(); x.compute()
      dask ── graph (Task / DataNode / Alias or legacy tuples) + keys ──▶ ray_dask_get
        1. convert_legacy_graph, cull to the keys asked for, order topologically
        2. DataNode: a value given inline (large arrays: rtml.put once); an ObjectRef in the
           graph (a persisted result), as a key's value or inside a task's arguments, is
           passed as an argument (resolved in the worker); Alias: resolved on the driver
        3. linear chains (a task whose only dependent has no other task dependency) are fused
           into one rtml task
        4. one rtml task per fused group, submitted at once in topological order; each
           dependency is passed as an ObjectRef argument, so values go from worker to worker
           through the object store and never through the driver
        5. rtml.get of the keys asked for (or their ObjectRefs: ``ray_persist=True``)

Errors raised by a task come back as the ``TaskError`` rtml raises, which is also an instance
of the original exception's class (``except ValueError:`` catches a remote ValueError).

Needs ``dask`` (``pip install 'rtml[frontends]'``). Uses only rtml's public API.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import rtml
from rtml.exceptions import GetTimeoutError

__all__ = [
    "disable_dask_on_ray",
    "enable_dask_on_ray",
    "ray_dask_get",
    "ray_dask_get_sync",
    "rtml_dask_get",
    "rtml_dask_get_sync",
]

# A DataNode's value of at least this many bytes (``nbytes`` of an array) goes to the object
# store once, rather than inline into the spec of every task that reads it.
_PUT_BYTES = 64 * 1024


def _dask() -> Any:
    try:
        return importlib.import_module("dask")
    except ImportError as e:
        raise ImportError(
            "rtml.util.dask needs the 'dask' package: pip install 'rtml[frontends]'"
        ) from e


_dask()
from dask._task_spec import Alias, DataNode, Task, convert_legacy_graph  # noqa: E402


def ray_dask_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Dask's ``get``: compute ``keys`` of the graph ``dsk`` with rtml tasks.

    Args:
        dsk: a Dask graph (a dict, a HighLevelGraph, or a collection).
        keys: a key, or a (nested) list of keys; the result has the same shape (lists become
            tuples, as with Dask's own schedulers).
        ray_remote_args: options for every task (``num_cpus``, ``resources``, ...), as
            ``remote(...).options`` takes them.
        ray_persist: return the ObjectRefs of the results instead of the values (a graph
            holding them computes on them without fetching them).
        timeout: seconds to wait for the results (None: no limit).
        fuse: fuse linear chains of tasks into one rtml task (default True).

    Other keyword arguments that Dask passes to schedulers (``num_workers``, ``pool``, ...)
    are accepted and ignored.

    Raises:
        KeyError: a key that is not in the graph.
        TaskError: a task raised (also an instance of the original exception's class).
        GetTimeoutError: ``timeout`` passed.
    """
    return _get(dsk, keys, sync=False, **kwargs)


def ray_dask_get_sync(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """:func:`ray_dask_get`, but each task waits until the one before has finished: one task
    at a time, in Dask's order (to debug, or to bound the memory a graph takes)."""
    return _get(dsk, keys, sync=True, **kwargs)


rtml_dask_get = ray_dask_get
rtml_dask_get_sync = ray_dask_get_sync


def enable_dask_on_ray(shuffle: str | None = "tasks") -> Any:
    """Make rtml Dask's default scheduler (``dask.config.set(scheduler=ray_dask_get)``).

    Args:
        shuffle: Dask's dataframe shuffle method (``"tasks"``: shuffles as tasks, which rtml
            runs); None leaves it as it is.

    Returns:
        the ``dask.config.set`` object: used in a ``with`` block, it sets things back on exit.
    """
    dask = _dask()
    opts: dict[str, Any] = {"scheduler": ray_dask_get}
    if shuffle is not None:
        opts["dataframe.shuffle.method"] = shuffle
    return dask.config.set(opts)


def disable_dask_on_ray() -> Any:
    """Put Dask's scheduler (and shuffle method) back to Dask's defaults."""
    dask = _dask()
    return dask.config.set({"scheduler": None, "dataframe.shuffle.method": None})


# ObjectRefs inside a task's arguments (Dask's optimizer inlines a persisted key's ref into
# the tasks that read it): found in containers up to this deep and this long.
_SCAN_DEPTH = 8
_SCAN_LEN = 10_000
_NESTED = "rtml-nested-ref"


def _nested_refs(obj: Any, out: dict[str, Any], depth: int = 0) -> None:
    if isinstance(obj, rtml.ObjectRef):
        out[obj.hex()] = obj
    elif depth >= _SCAN_DEPTH:
        return
    elif isinstance(obj, Task):
        for a in obj.args:
            _nested_refs(a, out, depth + 1)
        for a in obj.kwargs.values():
            _nested_refs(a, out, depth + 1)
    elif isinstance(obj, DataNode):
        _nested_refs(obj.value, out, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)) and len(obj) <= _SCAN_LEN:
        for a in obj:
            _nested_refs(a, out, depth + 1)
    elif isinstance(obj, dict) and len(obj) <= _SCAN_LEN:
        for a in obj.values():
            _nested_refs(a, out, depth + 1)


def _swap_refs(obj: Any, vals: Mapping[str, Any], depth: int = 0) -> Any:
    """``obj`` with every ObjectRef that :func:`_nested_refs` finds replaced by its value."""
    if isinstance(obj, rtml.ObjectRef):
        return vals[obj.hex()]
    if depth >= _SCAN_DEPTH:
        return obj
    if isinstance(obj, Task):
        t = copy.copy(obj)
        t.args = tuple(_swap_refs(a, vals, depth + 1) for a in obj.args)
        t.kwargs = {k: _swap_refs(a, vals, depth + 1) for k, a in obj.kwargs.items()}
        return t
    if isinstance(obj, DataNode):
        return DataNode(obj.key, _swap_refs(obj.value, vals, depth + 1))
    if type(obj) in (list, tuple, set, frozenset) and len(obj) <= _SCAN_LEN:
        return type(obj)(_swap_refs(a, vals, depth + 1) for a in obj)
    if type(obj) is dict and len(obj) <= _SCAN_LEN:
        return {k: _swap_refs(a, vals, depth + 1) for k, a in obj.items()}
    return obj


def _run_group(spec: tuple[Any, ...], *args: Any) -> Any:
    """Run one fused group of Dask tasks in a worker: ``spec`` is ``(members, names,
    consts)``; ``args`` the values of the ObjectRefs named ``names`` (rtml resolved them)."""
    members, names, consts = spec
    values: dict[Any, Any] = dict(consts)
    values.update(zip(names, args, strict=True))
    result: Any = None
    for key, node, renames, done, nested in members:
        for orig, real in renames:
            values[orig] = values[real]
        if nested:
            node = _swap_refs(node, {h: values[(_NESTED, h)] for h in nested})
        result = values[key] = node(values)
        for k in done:  # members read only by this one
            values.pop(k, None)
    return result


_remote_group = rtml.remote(_run_group)


def _flat_keys(keys: Any) -> list[Any]:
    out: list[Any] = []
    work = [keys]
    while work:
        k = work.pop()
        if isinstance(k, list):
            work.extend(reversed(k))
        else:
            out.append(k)
    return out


def _pack(keys: Any, values: Mapping[Any, Any]) -> Any:
    if isinstance(keys, list):
        return tuple(_pack(k, values) for k in keys)
    return values[keys]


def _nbytes(value: Any) -> int:
    n = getattr(value, "nbytes", 0)
    if isinstance(n, int):
        return n
    return len(value) if isinstance(value, (bytes, bytearray)) else 0


def _toposort(graph: Mapping[Any, Any], roots: Iterable[Any]) -> list[Any]:
    """Keys needed for ``roots``, dependencies first (iterative: graphs can be deep)."""
    order: list[Any] = []
    state: dict[Any, int] = {}  # 1: on the stack, 2: placed
    for root in roots:
        if state.get(root) == 2:
            continue
        stack: list[tuple[Any, Iterable[Any]]] = [(root, iter(graph[root].dependencies))]
        state[root] = 1
        while stack:
            key, deps = stack[-1]
            for d in deps:
                s = state.get(d)
                if s is None:
                    if d not in graph:
                        raise KeyError(d)
                    state[d] = 1
                    stack.append((d, iter(graph[d].dependencies)))
                    break
                if s == 1:
                    raise RuntimeError(f"the Dask graph has a cycle through {d!r}")
            else:
                stack.pop()
                state[key] = 2
                order.append(key)
    return order


class _Group:
    __slots__ = ("inputs", "members", "ref", "users")

    def __init__(self) -> None:
        self.members: list[Any] = []
        self.inputs: dict[Hashable, Any] = {}  # dep key as the tasks name it -> real key
        self.ref: Any = None
        self.users = 0  # groups not yet submitted that read this one's result


def _get(
    dsk: Any,
    keys: Any,
    *,
    sync: bool,
    ray_remote_args: Mapping[str, Any] | None = None,
    ray_persist: bool = False,
    timeout: float | None = None,
    fuse: bool = True,
    **_ignored: Any,
) -> Any:
    if not isinstance(dsk, Mapping):
        if not hasattr(dsk, "__dask_graph__"):
            raise TypeError(f"ray_dask_get needs a Dask graph (a mapping), not {type(dsk)!r}")
        dsk = dsk.__dask_graph__()
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
    graph = convert_legacy_graph(dsk)
    wanted = _flat_keys(keys)
    for k in wanted:
        if k not in graph:
            raise KeyError(k)
    order = _toposort(graph, wanted)
    wanted_set = set(wanted)

    # Where each key's value comes from: ("const", v) inline, ("ref", r) an ObjectRef, or
    # ("task", k) the task k (aliases resolved).
    source: dict[Any, tuple[str, Any]] = {}
    for k in order:
        node = graph[k]
        if isinstance(node, Alias):
            source[k] = source[node.target]
        elif isinstance(node, DataNode):
            v = node.value
            if isinstance(v, rtml.ObjectRef):
                source[k] = ("ref", v)
            elif _nbytes(v) >= _PUT_BYTES:
                source[k] = ("ref", rtml.put(v))
            else:
                source[k] = ("const", v)
        else:
            source[k] = ("task", k)

    tasks = [k for k in order if source[k][0] == "task"]
    # How many task nodes read each task's result (through aliases too); asked-for keys
    # (and the tasks an asked-for alias names) can't be fused away.
    readers: dict[Any, int] = dict.fromkeys(tasks, 0)
    pinned = {source[k][1] for k in wanted_set if source[k][0] == "task"}
    for k in tasks:
        for d in graph[k].dependencies:
            kind, real = source[d]
            if kind == "task":
                readers[real] += 1

    group_of: dict[Any, _Group] = {}
    groups: list[_Group] = []
    for k in tasks:
        node = graph[k]
        task_deps = {source[d][1] for d in node.dependencies if source[d][0] == "task"}
        g = None
        if fuse and len(task_deps) == 1:
            (p,) = task_deps
            if p not in pinned and readers[p] == 1 and group_of[p].members[-1] == p:
                g = group_of[p]
        if g is None:
            g = _Group()
            groups.append(g)
        g.members.append(k)
        group_of[k] = g

    # Each group's spec; ObjectRef inputs become top-level arguments.
    specs: list[tuple[Any, ...]] = []
    for g in groups:
        inside = set(g.members)
        members = []
        names: list[Any] = []
        refs: list[Any] = []
        consts: list[tuple[Any, Any]] = []
        seen: set[Any] = set()
        for k in g.members:
            node = graph[k]
            renames = []
            done = []
            for d in node.dependencies:
                kind, real = source[d]
                if kind == "task" and real in inside:
                    if d != real:
                        renames.append((d, real))
                    done.append(real)
                    continue
                if d in seen:
                    continue
                seen.add(d)
                if kind == "const":
                    consts.append((d, real))
                elif kind == "ref":
                    names.append(d)
                    refs.append(real)
                else:
                    names.append(d)
                    refs.append(group_of[real])
            inner: dict[str, Any] = {}
            _nested_refs(node, inner)
            for h, ref in inner.items():
                if (_NESTED, h) not in seen:
                    seen.add((_NESTED, h))
                    names.append((_NESTED, h))
                    refs.append(ref)
            members.append((k, node, tuple(renames), tuple(done), tuple(inner)))
        specs.append((tuple(members), tuple(names), tuple(consts), refs))
    for _, _, _, refs in specs:
        for r in refs:
            if isinstance(r, _Group):
                r.users += 1

    remote = _remote_group.options(**ray_remote_args) if ray_remote_args else _remote_group
    out_groups = {id(group_of[source[k][1]]) for k in wanted_set if source[k][0] == "task"}
    for g, (spec_members, spec_names, spec_consts, spec_refs) in zip(groups, specs, strict=True):
        args = []
        for r in spec_refs:
            if isinstance(r, _Group):
                args.append(r.ref)
                r.users -= 1
                if r.users == 0 and id(r) not in out_groups:
                    r.ref = None  # the last reader is submitted: rtml frees it once run
            else:
                args.append(r)
        g.ref = remote.remote((spec_members, spec_names, spec_consts), *args)
        if sync:
            ready, _ = rtml.wait([g.ref], num_returns=1, timeout=timeout)
            if not ready:
                raise GetTimeoutError(
                    f"ray_dask_get_sync: a task did not finish within {timeout} s"
                )
    del specs

    found: dict[Any, Any] = {}
    fetch: list[tuple[Any, Any]] = []
    for k in wanted_set:
        kind, real = source[k]
        if kind == "task":
            fetch.append((k, group_of[real].ref))
        elif kind == "ref":
            fetch.append((k, real))
        else:
            found[k] = rtml.put(real) if ray_persist else real
    if ray_persist:
        found.update(fetch)
    elif fetch:
        values = rtml.get([r for _, r in fetch], timeout=timeout)
        found.update(zip((k for k, _ in fetch), values, strict=True))
    return _pack(keys, found)
