"""``@rtml.remote`` on a class: ActorClass, ActorHandle, ActorMethod, get_actor, kill, method.

::

    Cls.remote(args) ──▶ client.actor_op("create", spec, class blob, info) ──▶ node's ActorManager
           │                                 (name taken: ValueError here, at once)
           ▼
    ActorHandle(actor id, method table, ObjectRef to the actor's handle object)
           │  handle.method.remote(args) ──▶ client.submit_task(..., actor_id=...) ──▶ refs
           │  pickled into a task or actor: the ObjectRef inside travels too, so the node
           ▼  counts every copy of the handle; the actor exits when the last one is dropped

The class is pickled once per ActorClass (cloudpickle, by value when the module attribute is
the ActorClass itself, as with ``@rtml.remote`` on a module-level class).

Every actor gets checkpoint settings at creation (``info["checkpoint"]``: interval, directory,
and a key unique to this actor instance, see ``rtml._checkpoint``), so that it can be
checkpointed on demand and a restart, on whichever node, finds the same file.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from typing import Any

from rtml import _checkpoint
from rtml._protocol._actor import READY_METHODS, TERMINATE_METHODS
from rtml._protocol._ids import return_id, to_hex
from rtml._protocol._spec import STREAMING, TaskSpec
from rtml._runtime import _context
from rtml._runtime._options import (
    ACTOR_OPTIONS,
    check_options,
    env_vars_of,
    in_group,
    with_accelerator,
)
from rtml._runtime._refs import ObjectRef
from rtml._runtime._signature import check_call, method_signatures, signature_of
from rtml._scheduler import normalize_request
from rtml._scheduler._strategy import normalize_strategy
from rtml._serialization._code import check_size, dumps_code

SPECIAL_METHODS = (*TERMINATE_METHODS, *READY_METHODS, _checkpoint.SAVE_METHOD)
_METHOD_OPTIONS = {
    "num_returns",
    "concurrency_group",
    "retry_exceptions",
    "max_task_retries",
    "name",
    "enable_task_events",
    "_generator_backpressure_num_objects",
}


_client = _context.client


def _op(op: str, args: tuple) -> Any:
    status, value = _client().actor_op(op, args)
    if status == "err":
        raise value
    return value


def _check_int(name: str, v: Any, low: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


def _num_returns(nr: Any, is_generator: bool) -> int:
    if nr is None:
        return STREAMING if is_generator else 1
    if nr in ("streaming", "dynamic"):
        return STREAMING
    if not isinstance(nr, int) or isinstance(nr, bool) or nr < 0:
        raise ValueError(f"num_returns must be a non-negative int or 'streaming', got {nr!r}")
    return nr


def _method_table(cls: type) -> tuple[dict[str, tuple], bool]:
    """({method name: (num_returns, retry_exceptions, max_task_retries)}, is_async)."""
    methods: dict[str, tuple] = {}
    is_async = False
    for name, fn in inspect.getmembers(cls, lambda f: inspect.isfunction(f) or inspect.ismethod(f)):
        if name.startswith("__") and name != "__call__":
            continue
        opts = getattr(fn, "__rtml_method_options__", {})
        gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        methods[name] = (
            _num_returns(opts.get("num_returns"), gen),
            opts.get("retry_exceptions", False),
            opts.get("max_task_retries"),
        )
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            is_async = True
    if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
        is_async = True  # async def __init__ makes an async actor, as in Ray
    for name in SPECIAL_METHODS:
        methods[name] = (1, False, None)
    return methods, is_async


class ActorOptions:
    """Resolved options of an actor class, computed once per options() call.

    Besides Ray's actor options: ``checkpoint_interval=N`` (int >= 0, default 0) saves the
    actor's state after every N calls of its own methods, and a restarted actor
    (``max_restarts``) resumes from its latest checkpoint instead of from its constructor's
    state; with 0 it saves only when asked (``handle.__rtml_checkpoint__.remote()``).
    ``checkpoint_dir`` (a path) is where the files go instead of the per-user state directory
    (``$RTML_STATE_DIR`` or ``/tmp/rtml-<uid>``); a cluster spread over several machines
    needs one that every machine mounts at the same path. The state is what the class's
    ``__rtml_checkpoint__(self)`` returns, given back to ``__rtml_restore__(self, state)``, or
    by default the instance's ``__dict__``.
    """

    __slots__ = (
        "checkpoint_dir",
        "checkpoint_interval",
        "detached",
        "env_vars",
        "get_if_exists",
        "max_concurrency",
        "max_restarts",
        "max_task_retries",
        "name",
        "namespace",
        "placement",
        "raw",
        "resources",
        "strategy",
    )

    def __init__(self, raw: dict[str, Any], is_async: bool) -> None:
        check_options(raw, ACTOR_OPTIONS, "an actor class")
        self.raw = raw
        # As Ray: an actor holds no CPU while it lives unless it asks for CPUs explicitly.
        self.resources = with_accelerator(
            normalize_request(
                raw.get("num_cpus"),
                raw.get("num_gpus"),
                raw.get("resources"),
                default_cpus=0,
                memory=raw.get("memory"),
            ),
            raw.get("accelerator_type"),
        )
        mc = raw.get("max_concurrency")
        self.max_concurrency = (
            (1000 if is_async else 1) if mc is None else _check_int("max_concurrency", mc, 1)
        )
        self.max_restarts = _check_int("max_restarts", raw.get("max_restarts", 0), -1)
        self.max_task_retries = _check_int("max_task_retries", raw.get("max_task_retries", 0), -1)
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"an actor's name must be a non-empty string, got {name!r}")
        self.name = name
        ns = raw.get("namespace")
        if ns is not None and (not isinstance(ns, str) or not ns):
            raise ValueError(f"namespace must be a non-empty string, got {ns!r}")
        self.namespace = ns
        self.get_if_exists = bool(raw.get("get_if_exists", False))
        if self.get_if_exists and name is None:
            raise ValueError(
                "get_if_exists=True needs a name: Cls.options(name='x', "
                "get_if_exists=True).remote()"
            )
        lifetime = raw.get("lifetime")
        if lifetime not in (None, "detached", "non_detached"):
            raise ValueError(
                f"lifetime must be 'detached', 'non_detached' or None, got {lifetime!r}"
            )
        self.detached = lifetime == "detached"
        self.strategy = normalize_strategy(raw.get("scheduling_strategy"))
        self.resources, self.placement = in_group(raw, self.resources)
        self.env_vars = env_vars_of(raw.get("runtime_env"))
        self.checkpoint_interval = _checkpoint.check_interval(raw.get("checkpoint_interval", 0))
        self.checkpoint_dir = _checkpoint.check_dir(raw.get("checkpoint_dir"))


class ActorClass:
    """A class made remote with ``@rtml.remote``. ``Cls.remote(...)`` starts an actor."""

    def __init__(self, cls: type, options: dict[str, Any], fn_id: str | None = None) -> None:
        self._cls = cls
        self._default = options
        self._fn_id = fn_id or uuid.uuid4().hex
        self._methods, self._is_async = _method_table(cls)
        self._init_sig = signature_of(cls)
        self._sigs = method_signatures(cls, self._methods)
        self._opts = ActorOptions(options, self._is_async)
        self._blob: bytes | None = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self.__name__} cannot be instantiated directly; use "
            f"{self.__name__}.remote(...) to start an actor (it returns an ActorHandle), or "
            "use the original class through its __wrapped__ attribute"
        )

    @property
    def __wrapped__(self) -> type:
        return self._cls

    def __getattr__(self, name: str) -> Any:
        # Class attributes and static/class methods reach through, as on Ray's actor classes
        # (``T.X``, ``T.s()``), also from inside the actor's own methods.
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        static = inspect.getattr_static(cls, name)
        if isinstance(static, staticmethod):
            # A new callable, not the function itself: cloudpickle would otherwise find it at
            # ``module.Cls.name`` and pickle the class's methods by reference (workers that
            # cannot import the module then fail to load the class).
            return functools.partial(static.__func__)
        if inspect.isfunction(static):
            raise AttributeError(
                f"actor class {cls.__name__} has no attribute {name!r}: methods are called "
                f"on a handle ({cls.__name__}.remote().{name}.remote(...))"
            )
        return getattr(cls, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._cls)) | {"remote", "options", "bind"})

    def __mro_entries__(self, bases: tuple) -> tuple:
        raise TypeError(
            "Inheriting from actor classes is not currently supported. You can instead inherit "
            f"from a non-actor base class ({self.__name__}.__wrapped__ is the original class) "
            "and make the derived class an actor class with @rtml.remote."
        )

    def _get_blob(self) -> bytes:
        if self._blob is None:
            blob = dumps_code(self._cls)
            check_size(blob, self._cls, "actor", self.__name__)
            self._blob = blob
        return self._blob

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Start an actor running ``Cls(*args, **kwargs)`` in its own worker process.

        Returns at once with a handle; calls made through it wait for the constructor.

        Raises:
            ValueError: the actor's name is taken (and get_if_exists is False).
        """
        return self._create(args, kwargs, self._opts)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A lazy actor of a task graph (``rtml.dag``): created when the graph is executed."""
        from rtml._runtime._dag import ClassNode

        return ClassNode(self, args, kwargs)

    def options(self, **options: Any) -> _BoundActorClass:
        """The same class with some options overridden for the actors created through it."""
        merged = {**self._default, **options}
        return _BoundActorClass(self, ActorOptions(merged, self._is_async))

    def _create(self, args: tuple, kwargs: dict, o: ActorOptions) -> ActorHandle:
        check_call(self._init_sig, self.__name__, args, kwargs)
        client = _client()
        register = getattr(client, "register_class", None)
        if register is not None:  # local mode: instances are of the class itself, not a copy
            register(self._fn_id, self._cls)
        name = self.__name__
        # (pickled, and its size checked, before the constructor's arguments are packed)
        fn_blob = None if self._fn_id in client.registered_fns else self._get_blob()
        blob, deps, contained, keep = client.pack_args(f"{name}.__init__", args, kwargs)
        task_id = client.ids.next_task_id()
        env_vars = {**client.job_env, **(o.env_vars or {})} if client.job_env else o.env_vars
        spec = TaskSpec(
            task_id,
            self._fn_id,
            f"{name}.__init__",
            blob,
            deps,
            contained,
            1,
            o.resources,
            0,
            False,
            client.proc,
            env_vars,
            actor_id=task_id,
            job=client.job,
            strategy=o.strategy,
            placement=o.placement,
        )
        meta = {
            "class_name": name,
            "methods": self._methods,
            "max_task_retries": o.max_task_retries,
            "is_async": self._is_async,
        }
        checkpoint = _checkpoint.new_config(
            o.checkpoint_interval, o.checkpoint_dir, client.session, task_id, o.detached
        )
        info = {
            "class_name": name,
            "name": o.name,
            "namespace": o.namespace or client.namespace,
            "get_if_exists": o.get_if_exists,
            "detached": o.detached,
            "max_restarts": o.max_restarts,
            "max_concurrency": o.max_concurrency,
            "is_async": self._is_async,
            "env_vars": env_vars,
            "meta": meta,
            "checkpoint": checkpoint,
        }
        kind, aid, existing = _op("create", (spec, fn_blob, info))
        client.registered_fns.add(self._fn_id)
        del keep
        if kind == "existing":
            h = ActorHandle(aid, existing, ObjectRef(return_id(aid, 1), _registered=False))
        else:
            if existing:  # in a cluster: the node the actor lives on
                meta = {**meta, **existing}
            h = ActorHandle(aid, meta, ObjectRef(return_id(aid, 1)))
        if h._meta["class_name"] == name:  # (this process only: not pickled with the handle)
            h.__dict__["_sigs"] = self._sigs
        return h

    def __reduce__(self) -> Any:
        return (ActorClass, (self._cls, self._default, self._fn_id))

    def __repr__(self) -> str:
        return f"<rtml actor class {self.__name__}>"


class _BoundActorClass:
    __slots__ = ("_cls", "_opts")

    def __init__(self, cls: ActorClass, opts: ActorOptions) -> None:
        self._cls = cls
        self._opts = opts

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._cls._create(args, kwargs, self._opts)

    def get_or_create(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """The named actor if it exists (in its namespace), else a new one from these
        arguments: ``Cls.options(name="x").get_or_create(...)``."""
        if self._opts.name is None:
            raise ValueError("get_or_create needs a name: Cls.options(name='x').get_or_create()")
        opts = ActorOptions({**self._opts.raw, "get_if_exists": True}, self._cls._is_async)
        return self._cls._create(args, kwargs, opts)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A lazy actor of a task graph (``rtml.dag``): created when the graph is executed."""
        from rtml._runtime._dag import ClassNode

        return ClassNode(self, args, kwargs)

    def options(self, **options: Any) -> _BoundActorClass:
        return _BoundActorClass(
            self._cls, ActorOptions({**self._opts.raw, **options}, self._cls._is_async)
        )


class ActorID:
    """The id of an actor (``handle._actor_id``), printable as hex like Ray's."""

    __slots__ = ("_id",)

    def __init__(self, actor_id: int) -> None:
        self._id = actor_id

    def hex(self) -> str:
        return to_hex(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorID) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ActorID({self.hex()})"


class ActorHandle:
    """A reference to a running actor: call methods with ``handle.method.remote(...)``.

    Handles can be passed to tasks and other actors (they pickle); the actor lives while any
    handle to it exists, unless it has a name or ``lifetime="detached"``.
    """

    _aid: int
    _meta: dict[str, Any]
    _ref: ObjectRef

    def __init__(self, actor_id: int, meta: dict[str, Any], ref: ObjectRef) -> None:
        self.__dict__.update(_aid=actor_id, _meta=meta, _ref=ref)

    @property
    def _actor_id(self) -> ActorID:
        return ActorID(self._aid)

    def __getattr__(self, name: str) -> ActorMethod:
        meta = self.__dict__.get("_meta")
        if meta is None or name not in meta["methods"]:
            cls = meta["class_name"] if meta else "actor"
            raise AttributeError(f"actor {cls} has no method {name!r}")
        # Not cached on the handle: method -> handle -> method would be a reference cycle,
        # and the actor must end as soon as its last handle is dropped, not at the next GC.
        return ActorMethod(self, name, *meta["methods"][name])

    def _call(
        self,
        method: str,
        args: tuple,
        kwargs: dict,
        num_returns: int,
        retry_exceptions: Any,
        max_task_retries: int | None,
    ) -> Any:
        meta = self._meta
        retries = meta["max_task_retries"] if max_task_retries is None else max_task_retries
        home = meta.get("node")
        return _client().submit_task(
            method,
            None,
            f"{meta['class_name']}.{method}",
            args,
            kwargs,
            num_returns,
            {},
            retries,
            retry_exceptions,
            None,
            self._aid,
            strategy=None if home is None else ("actor", home),
        )

    def __reduce__(self) -> Any:
        return (ActorHandle, (self._aid, self._meta, self._ref))

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._meta["methods"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._aid == self._aid

    def __hash__(self) -> int:
        return hash(("actor", self._aid))

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {to_hex(self._aid)})"


class ActorMethod:
    """``handle.method``: call ``.remote(...)`` to run it on the actor; returns ObjectRef(s)."""

    __slots__ = ("_handle", "_max_task_retries", "_name", "_num_returns", "_retry_exceptions")

    def __init__(
        self,
        handle: ActorHandle,
        name: str,
        num_returns: int,
        retry_exceptions: Any,
        max_task_retries: int | None = None,
    ) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._retry_exceptions = retry_exceptions
        self._max_task_retries = max_task_retries

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        sigs = self._handle.__dict__.get("_sigs")
        if sigs is not None:
            check_call(
                sigs.get(self._name),
                f"{self._handle._meta['class_name']}.{self._name}",
                args,
                kwargs,
            )
        return self._handle._call(
            self._name,
            args,
            kwargs,
            self._num_returns,
            self._retry_exceptions,
            self._max_task_retries,
        )

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A lazy call of this live actor's method in a task graph (``rtml.dag``)."""
        from rtml._runtime._dag import ClassMethodNode

        return ClassMethodNode(self._handle, self._name, args, kwargs)

    def options(self, **options: Any) -> ActorMethod:
        """Override ``num_returns``, ``retry_exceptions`` or ``max_task_retries`` for calls
        made through the returned method."""
        for key in options:
            if key not in _METHOD_OPTIONS:
                raise ValueError(
                    f"invalid option {key!r} for an actor method; valid options "
                    f"are {', '.join(sorted(_METHOD_OPTIONS))}"
                )
        nr = self._num_returns
        if "num_returns" in options:
            nr = _num_returns(options["num_returns"], False)
        rx = options.get("retry_exceptions", self._retry_exceptions)
        if not isinstance(rx, bool) and not (
            isinstance(rx, (list, tuple))
            and all(isinstance(c, type) and issubclass(c, BaseException) for c in rx)
        ):
            raise ValueError(
                f"retry_exceptions must be a bool or a list of exception classes, got {rx!r}"
            )
        mtr = options.get("max_task_retries", self._max_task_retries)
        if mtr is not None:
            _check_int("max_task_retries", mtr, -1)
        return ActorMethod(self._handle, self._name, nr, rx, mtr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly; use handle.{self._name}.remote(...) "
            "(it returns an ObjectRef)"
        )

    def __repr__(self) -> str:
        return f"<actor method {self._handle._meta['class_name']}.{self._name}>"


# ---------------------------------------------------------------------- public functions
def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a live named actor.

    Args:
        name: the name given with ``Cls.options(name=...)``.
        namespace: its namespace (default: the one given to ``rtml.init(namespace=)``).

    Raises:
        ValueError: no live actor has that name in that namespace.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs a non-empty actor name, got {name!r}")
    aid, meta = _op("get", (name, namespace or _client().namespace))
    return ActorHandle(aid, meta, ObjectRef(return_id(aid, 1), _registered=False))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process at once; its pending and running calls fail with
    ActorDiedError. With ``no_restart=False`` it is restarted if it has restarts left.

    Raises:
        TypeError: ``actor`` is not an actor handle (use ``rtml.cancel`` for tasks).
    """
    if not isinstance(actor, ActorHandle):
        raise TypeError(
            f"kill() takes an actor handle, got {type(actor).__name__}; to stop a "
            "task, use rtml.cancel(ref)"
        )
    _op("kill", (actor._aid, bool(no_restart), actor._meta.get("node")))


def method(*args: Any, **options: Any) -> Any:
    """Decorate an actor method with options, e.g. ``@rtml.method(num_returns=2)``."""
    for key in options:
        if key not in _METHOD_OPTIONS:
            raise ValueError(
                f"invalid option {key!r} for @method; valid options are "
                f"{', '.join(sorted(_METHOD_OPTIONS))}"
            )
    if "num_returns" in options:
        _num_returns(options["num_returns"], False)

    def decorate(fn: Any) -> Any:
        fn.__rtml_method_options__ = dict(options)
        return fn

    if len(args) == 1 and callable(args[0]) and not options:
        return decorate(args[0])
    if args:
        raise TypeError("@method takes only keyword options, e.g. @rtml.method(num_returns=2)")
    return decorate
