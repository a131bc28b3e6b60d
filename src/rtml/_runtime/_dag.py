"""Ray's lazy DAG API: ``f.bind(...)`` builds a node, ``node.execute(...)`` submits the graph.

::

    with InputNode() as inp:              f.bind(inp) ──▶ FunctionNode(f, (InputNode,), {})
        dag = g.bind(f.bind(inp), 2)      g.bind(...) ──▶ FunctionNode(g, (FunctionNode, 2), {})
    dag.execute(5)  ──▶ each node submitted once, children first; a node's argument that is a
                        node becomes that node's ObjectRef (the task waits for it, as usual)

Nodes are immutable descriptions: ``execute`` may run the same graph many times, each run
with fresh tasks (and fresh actors for ``Cls.bind(...)`` nodes).
"""

from __future__ import annotations

from typing import Any


class DAGNode:
    """A node of a lazily built task graph."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the graph with these inputs; the ObjectRef(s) of this node's result."""
        return self._run({}, args, kwargs)

    def _run(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        key = id(self)
        if key not in done:
            done[key] = self._submit(done, args, kwargs)
        return done[key]

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    @staticmethod
    def _resolve(value: Any, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        if isinstance(value, DAGNode):
            return value._run(done, args, kwargs)
        if type(value) in (list, tuple):
            return type(value)(DAGNode._resolve(v, done, args, kwargs) for v in value)
        if type(value) is dict:
            return {k: DAGNode._resolve(v, done, args, kwargs) for k, v in value.items()}
        return value

    def _bound(self, done: dict[int, Any], args: tuple, kwargs: dict) -> tuple[list, dict]:
        a = [self._resolve(v, done, args, kwargs) for v in self._args]  # type: ignore[attr-defined]
        kw = {k: self._resolve(v, done, args, kwargs) for k, v in self._kwargs.items()}  # type: ignore[attr-defined]
        return a, kw


class InputNode(DAGNode):
    """The graph's input: ``execute(x)`` puts ``x`` here (``inp[i]`` / ``inp.name`` pick one
    of several inputs). Use as a context manager, as in Ray."""

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __getitem__(self, key: Any) -> InputAttributeNode:
        return InputAttributeNode(self, key, "item")

    def __getattr__(self, name: str) -> InputAttributeNode:
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name, "attr")

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        if kwargs and not args:
            return kwargs
        if len(args) == 1 and not kwargs:
            return args[0]
        if not args and not kwargs:
            raise ValueError("this graph has an InputNode: pass its value to execute(value)")
        return args


class InputAttributeNode(DAGNode):
    """One of several inputs: ``inp[0]`` (positional or key) or ``inp.x`` (keyword)."""

    def __init__(self, parent: InputNode, key: Any, how: str) -> None:
        self._parent, self._key, self._how = parent, key, how

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        if self._how == "attr" or (isinstance(self._key, str) and self._key in kwargs):
            if self._key in kwargs:
                return kwargs[self._key]
            return getattr(self._parent._run(done, args, kwargs), self._key)
        if isinstance(self._key, int) and self._key < len(args) and (len(args) > 1 or kwargs):
            return args[self._key]
        return self._parent._run(done, args, kwargs)[self._key]


class FunctionNode(DAGNode):
    """``f.bind(*args, **kwargs)`` of a remote function (or its ``.options(...)``)."""

    def __init__(self, fn: Any, args: tuple, kwargs: dict) -> None:
        self._fn, self._args, self._kwargs = fn, args, kwargs

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        a, kw = self._bound(done, args, kwargs)
        return self._fn.remote(*a, **kw)


class ClassNode(DAGNode):
    """``Cls.bind(...)``: an actor created when the graph runs; ``node.method.bind(...)``
    calls it."""

    def __init__(self, cls: Any, args: tuple, kwargs: dict) -> None:
        self._cls, self._args, self._kwargs = cls, args, kwargs

    def __getattr__(self, name: str) -> _MethodBinder:
        if name.startswith("_"):
            raise AttributeError(name)
        return _MethodBinder(self, name)

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        a, kw = self._bound(done, args, kwargs)
        return self._cls.remote(*a, **kw)


class _MethodBinder:
    __slots__ = ("_name", "_node")

    def __init__(self, node: ClassNode, name: str) -> None:
        self._node, self._name = node, name

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        return ClassMethodNode(self._node, self._name, args, kwargs)


class ClassMethodNode(DAGNode):
    """``actor_node.method.bind(...)`` (or ``handle.method.bind(...)`` on a live actor)."""

    def __init__(self, actor: Any, method: str, args: tuple, kwargs: dict) -> None:
        self._actor, self._method, self._args, self._kwargs = actor, method, args, kwargs

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        handle = self._resolve(self._actor, done, args, kwargs)
        a, kw = self._bound(done, args, kwargs)
        return getattr(handle, self._method).remote(*a, **kw)


class MultiOutputNode(DAGNode):
    """Several results at once: ``MultiOutputNode([a, b]).execute()`` is a list of refs."""

    def __init__(self, nodes: list[Any]) -> None:
        self._args = tuple(nodes)
        self._kwargs: dict[str, Any] = {}

    def _submit(self, done: dict[int, Any], args: tuple, kwargs: dict) -> Any:
        return self._bound(done, args, kwargs)[0]
