"""Public exception tree for rtml. The names say whose fault an error is.

    RtmlError (RayError)
    ├── TaskError (RayTaskError)              your code raised inside a task or actor method
    │     .as_instanceof_cause() -> "TaskError(ValueError)": also caught by ``except ValueError``
    ├── GetTimeoutError (also a TimeoutError)  get()/wait() ran out of time
    ├── TaskCancelledError                     the task was cancelled
    ├── WorkerCrashedError                     the worker process died (segfault, OOM kill, ...)
    ├── ActorError
    │   ├── ActorDiedError (RayActorError)     the actor is dead
    │   └── ActorUnavailableError              the actor can't be reached for now (e.g. restarting)
    ├── ObjectStoreFullError                   no room in the object store
    ├── ObjectLostError                        an object's value is gone
    │   ├── ObjectReconstructionFailedError
    │   │   ├── ObjectReconstructionFailedMaxAttemptsExceededError
    │   │   └── ObjectReconstructionFailedLineageEvictedError
    │   ├── OwnerDiedError
    │   ├── ObjectFetchTimedOutError
    │   └── ReferenceCountingAssertionError
    ├── NodeDiedError, OutOfMemoryError
    ├── RuntimeEnvSetupError
    │   └── WorkerStartError                  worker processes die before they are up
    ├── TaskUnschedulableError, ActorUnschedulableError
    ├── PendingCallsLimitExceeded, AsyncioActorExit
    └── RtmlSystemError (RaySystemError)       rtml itself broke: a bug, please report it

Every exception pickles with ``pickle`` and ``cloudpickle``, keeping class, message and
attributes. Classes that take only a message accept it as their first argument and have a
default message saying what happened and what to do.
"""

from __future__ import annotations

import os
import threading
import traceback
import types
from typing import Any

__all__ = [
    "ActorDiedError",
    "ActorError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "AsyncioActorExit",
    "GetTimeoutError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedLineageEvictedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "RtmlError",
    "RtmlSystemError",
    "RuntimeEnvSetupError",
    "TaskCancelledError",
    "TaskError",
    "TaskUnschedulableError",
    "WorkerCrashedError",
    "WorkerStartError",
]

# --- Pickling -------------------------------------------------------------------------------------
# Python's default exception pickling calls ``cls(*self.args)``, which breaks as soon as
# ``__init__`` has keyword-only or extra required parameters. We rebuild with ``cls.__new__``
# instead (no ``__init__``), then restore ``args``, the C-level fields of builtin bases
# (``OSError.errno``, ``StopIteration.value``, ...) and ``__dict__``.

_DESCRIPTORS = (types.MemberDescriptorType, types.GetSetDescriptorType)


def _builtin_fields(exc: BaseException) -> dict[str, Any]:
    """C-level attributes that builtin exception classes keep outside ``__dict__``."""
    fields: dict[str, Any] = {}
    for klass in type(exc).__mro__:
        if klass.__module__ != "builtins" or klass in (BaseException, object):
            continue
        for name, attr in vars(klass).items():
            if isinstance(attr, _DESCRIPTORS) and not name.startswith("__"):
                try:
                    fields.setdefault(name, getattr(exc, name))
                except AttributeError:  # e.g. OSError.characters_written when unset
                    pass
    return fields


def _set_fields(obj: BaseException, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if value is None:  # leave unset C fields NULL: OSError.__str__ treats None as set
            continue
        try:
            setattr(obj, name, value)
        except (AttributeError, TypeError):
            pass


def _rebuild_exception(
    cls: type[BaseException],
    args: tuple[Any, ...],
    state: dict[str, Any] | None,
    fields: dict[str, Any],
) -> BaseException:
    """Unpickle an exception without calling its ``__init__``."""
    try:
        obj = cls.__new__(cls, *args)
    except Exception:
        obj = cls.__new__(cls)
    obj.args = args
    _set_fields(obj, fields)
    if state:
        obj.__dict__.update(state)
    return obj


def _reduce_by_state(exc: BaseException) -> tuple[Any, ...]:
    return (_rebuild_exception, (type(exc), exc.args, _portable_state(exc), _builtin_fields(exc)))


class _ByState:  # pickles as the wrapped exception, rebuilt by _rebuild_exception
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> tuple[Any, ...]:
        return _reduce_by_state(self.exc)


def _portable(value: Any) -> Any:
    """``value``, wrapped if it is an exception relying on builtin (``cls(*args)``) pickling."""
    if isinstance(value, BaseException):
        for klass in type(value).__mro__:
            if "__reduce__" in vars(klass) or "__reduce_ex__" in vars(klass):
                return value if klass.__module__ != "builtins" else _ByState(value)
    return value


def _portable_state(exc: BaseException) -> dict[str, Any]:
    return {k: (v if v is exc else _portable(v)) for k, v in vars(exc).items()}


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__name__}>"


def _fmt_bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


class RtmlError(Exception):
    """Base class of every rtml exception: ``except RtmlError`` catches them all."""

    _default_message = ""

    def __init__(self, *args: Any) -> None:
        if not args and self._default_message:
            args = (self._default_message,)
        super().__init__(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return _reduce_by_state(self)


_dual_cache: dict[type, type[TaskError] | None] = {}
_dual_lock = threading.RLock()  # re-entrant: type() may run a user __init_subclass__


class TaskError(RtmlError):
    """Your code raised an exception inside a task or actor method.

    ``traceback_str`` is the formatted remote traceback; ``cause`` the original exception (or
    an ``RtmlError`` standing in for it when it could not be pickled). ``rtml.get`` raises
    ``err.as_instanceof_cause()`` so that ``except ValueError:`` still catches a remote one.
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int | None = None,
        node_id: str | None = None,
        task_id: str | None = None,
        actor_repr: str | None = None,
    ) -> None:
        self.function_name, self.traceback_str, self.cause = function_name, traceback_str, cause
        self.pid, self.node_id, self.task_id, self.actor_repr = pid, node_id, task_id, actor_repr
        # Not super(): in a dual class the next __init__ in the MRO is the cause's.
        Exception.__init__(self, self._format())

    def _format(self) -> str:
        where = [f"{k}={v}" for k, v in (("pid", self.pid), ("node", self.node_id)) if v]
        if self.actor_repr:
            where.append(f"actor={self.actor_repr}")
        kind = "actor method" if self.actor_repr else "task"
        header = f"TaskError: {kind} {self.function_name}() failed"
        header += f" ({', '.join(where)})" if where else ""
        body = (self.traceback_str or "").rstrip()
        if not body and self.cause is not None:
            body = f"{type(self.cause).__name__}: {_safe_str(self.cause)}"
        return f"{header}\n{body}" if body else header

    def __str__(self) -> str:
        return self._format()

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        function_name: str,
        pid: int | None = None,
        node_id: str | None = None,
        task_id: str | None = None,
        actor_repr: str | None = None,
    ) -> TaskError:
        """Wrap a live exception caught in a worker; ``pid`` defaults to this process's."""
        import cloudpickle  # lazily: only needed on this error path

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        cause: BaseException = exc
        try:
            cloudpickle.loads(cloudpickle.dumps(_portable(exc)))
        except Exception as err:
            cause = RtmlError(
                f"{type(exc).__name__}: {_safe_str(exc)} (the original exception could not be "
                f"pickled: {type(err).__name__}: {_safe_str(err)}. Its traceback is in the "
                "TaskError message, but it can't be caught by its own class; keep unpicklable "
                "objects such as locks, sockets and open files out of exceptions.)"
            )
        pid = os.getpid() if pid is None else pid
        return cls(function_name, tb, cause, pid, node_id, task_id, actor_repr)

    def as_instanceof_cause(self) -> TaskError:
        """Return a copy that is an instance of both ``TaskError`` and the cause's class.

        A task that failed because a task it waited for failed has that task's ``TaskError`` as
        its cause: the class combined is then the innermost original one, so that
        ``except ZeroDivisionError`` catches an error raised two tasks down (as in Ray), while
        the message keeps every task's traceback. Returns ``self`` if there is no cause, or its
        class can't be combined with ``TaskError`` (final class, layout or metaclass conflict).
        """
        cause = self.cause
        while isinstance(cause, TaskError) and isinstance(cause.cause, BaseException):
            cause = cause.cause
        if not isinstance(cause, BaseException) or isinstance(self, type(cause)):
            return self
        dual_cls = _dual_class(type(cause))
        if dual_cls is None:
            return self
        try:
            obj = dual_cls.__new__(dual_cls, *cause.args)
        except Exception:
            try:
                obj = dual_cls.__new__(dual_cls)
            except Exception:
                return self
        _set_fields(obj, _builtin_fields(cause))
        obj.args = cause.args
        obj.__dict__.update(self.__dict__)
        obj.__cause__, obj.__traceback__ = self.__cause__, self.__traceback__
        return obj


def _dual_getattr(self: TaskError, name: str) -> Any:
    # Only reached when normal lookup fails: fall through to the original exception.
    cause = self.__dict__.get("cause")
    if cause is None or (name.startswith("__") and name.endswith("__")):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
    return getattr(cause, name)


def _dual_reduce(self: TaskError) -> tuple[Any, ...]:
    return (_rebuild_dual, (_portable_state(self),))


def _rebuild_dual(state: dict[str, Any]) -> TaskError:
    """Unpickle a ``TaskError(<Cause>)``: its class is recreated, as it can't be imported."""
    plain = TaskError.__new__(TaskError)
    plain.__dict__.update(state)
    plain.args = (plain._format(),)
    return plain.as_instanceof_cause()


def _dual_class(cause_cls: type) -> type[TaskError] | None:
    """The cached ``TaskError(<cause_cls>)`` class, or None if it can't exist."""
    with _dual_lock:
        if cause_cls in _dual_cache:
            return _dual_cache[cause_cls]
        dual: type[TaskError] | None = None
        if not issubclass(cause_cls, TaskError):
            name = f"TaskError({cause_cls.__name__})"
            namespace = {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"A TaskError whose cause is a {cause_cls.__qualname__}.",
                "__getattr__": _dual_getattr,
                "__reduce__": _dual_reduce,
                "__reduce_ex__": lambda self, protocol: _dual_reduce(self),
                "__str__": TaskError.__str__,
            }
            try:
                dual = type(name, (TaskError, cause_cls), namespace)
            except Exception:  # TypeError: final class, layout or metaclass conflict
                dual = None
        _dual_cache[cause_cls] = dual
        return dual


class GetTimeoutError(RtmlError, TimeoutError):
    """``rtml.get`` / ``rtml.wait`` ran out of time. Also a builtin ``TimeoutError``."""

    _default_message = (
        "Timed out waiting for rtml.get()/rtml.wait(). The objects may still be computing: "
        "retry with a larger timeout, or poll with rtml.wait(refs, timeout=...)."
    )


class TaskCancelledError(RtmlError):
    """The task was cancelled (``rtml.cancel``) before it produced a result."""

    def __init__(self, message: str | None = None, *, task_id: str | None = None) -> None:
        self.task_id = task_id
        who = f"Task {task_id}" if task_id else "The task"
        super().__init__(
            message
            or f"{who} was cancelled with rtml.cancel() before it finished, so it has no "
            "result. Submit it again if you still need one."
        )


class WorkerCrashedError(RtmlError):
    """The worker process running the task died unexpectedly (not an exception in your code)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        task_id: str | None = None,
        function_name: str | None = None,
        retries: int | None = None,
    ) -> None:
        self.task_id, self.function_name, self.retries = task_id, function_name, retries
        what = f"task {function_name}()" if function_name else "the task"
        tried = "" if retries is None else f" It was retried {retries} times, failing each time."
        super().__init__(
            message
            or f"The worker process running {what} died unexpectedly (killed by the OS, e.g. for "
            f"using too much memory, a crash in native code, or os._exit()).{tried} If the crash "
            "is transient, allow more attempts with @rtml.remote(max_retries=N); otherwise check "
            "the worker logs."
        )


class ActorError(RtmlError):
    """Base class for problems with an actor itself (not errors raised by its methods)."""

    def __init__(self, message: str | None = None, *, actor_id: str | None = None) -> None:
        self.actor_id = actor_id
        super().__init__(*(() if message is None else (message,)))


class ActorDiedError(ActorError):
    """The actor is dead: its process exited, it was killed, or its constructor raised.

    ``cause`` is a string or an exception (e.g. the ``TaskError`` raised by ``__init__``).
    """

    def __init__(
        self,
        cause: str | BaseException | None = None,
        *,
        actor_id: str | None = None,
        class_name: str | None = None,
        actor_name: str | None = None,
    ) -> None:
        self.cause, self.class_name, self.actor_name = cause, class_name, actor_name
        details = [f"name={actor_name!r}"] if actor_name else []
        details += [f"id={actor_id}"] if actor_id else []
        who = f"The actor {class_name}" if class_name else "The actor"
        who += f" ({', '.join(details)})" if details else ""
        if isinstance(cause, BaseException) and not isinstance(cause, TaskError):
            why = f"{type(cause).__name__}: {_safe_str(cause)}"
        else:  # a TaskError's text already starts with "TaskError: ..."
            why = _safe_str(cause) if cause else "its process exited or it was killed"
        message = (
            f"{who} died; calls to it fail from now on. Create a new actor, or pass "
            f"max_restarts=N to @rtml.remote so rtml restarts it automatically. Cause: {why}"
        )
        super().__init__(message, actor_id=actor_id)


class ActorUnavailableError(ActorError):
    """The actor exists but can't be reached right now (e.g. it is restarting)."""

    _default_message = (
        "The actor is temporarily unreachable (it may be restarting, or its node overloaded). "
        "The call may or may not have run; retry it if running it twice is safe."
    )


class ObjectStoreFullError(RtmlError):
    """There is no room in the object store for a new object."""

    def __init__(
        self,
        message: str | None = None,
        *,
        capacity_bytes: int | None = None,
        needed_bytes: int | None = None,
        used_bytes: int | None = None,
    ) -> None:
        self.capacity_bytes, self.needed_bytes = capacity_bytes, needed_bytes
        self.used_bytes = used_bytes
        super().__init__(
            message
            or f"The object store is full: an object of {_fmt_bytes(needed_bytes)} did not fit "
            f"(store size {_fmt_bytes(capacity_bytes)}, {_fmt_bytes(used_bytes)} in use). "
            "Give the store more memory with rtml.init(object_store_memory=...), drop "
            "references (ObjectRefs) you no longer need so their objects can be freed, or let "
            "objects spill to disk."
        )


class ObjectLostError(RtmlError):
    """An object's value can no longer be retrieved."""

    _reason = (
        "All copies of it were lost (e.g. the node holding it died) and it could not be "
        "recovered. Submit the task that creates it again."
    )

    def __init__(
        self, object_ref_hex: str = "", message: str | None = None, *, call_site: str | None = None
    ) -> None:
        self.object_ref_hex, self.call_site = object_ref_hex, call_site
        if message is None:
            message = f"Failed to retrieve object {object_ref_hex or '<unknown>'}. {self._reason}"
            message += f" The object was created at: {call_site}" if call_site else ""
        super().__init__(message)


class ObjectReconstructionFailedError(ObjectLostError):
    _reason = (
        "It was lost, and re-running the task that created it (lineage reconstruction) "
        "failed. Check why that task failed."
    )


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    _reason = (
        "It was lost, and the task that created it has used up its retries. Raise max_retries "
        "on that task, or make the nodes holding the object more reliable."
    )


class ObjectReconstructionFailedLineageEvictedError(ObjectReconstructionFailedError):
    _reason = (
        "It was lost and can't be recomputed: its lineage (the record of the task that made "
        "it) was evicted to save memory. Keep fewer objects alive at once."
    )


class OwnerDiedError(ObjectLostError):
    _reason = (
        "The worker that owns it (the process that created the ObjectRef) died, and an object "
        "can't outlive its owner. Create objects you need from a process that stays alive."
    )


class ObjectFetchTimedOutError(ObjectLostError):
    _reason = "Fetching it from another node timed out; check that node's health and the network."


class ReferenceCountingAssertionError(ObjectLostError):
    _reason = (
        "It was deleted while a reference to it still existed. This is a bug in rtml's "
        "reference counting; please report it with the code that triggered it."
    )


class NodeDiedError(RtmlError):
    """A node of the cluster died while running work or holding objects."""

    def __init__(self, message: str | None = None, *, node_id: str | None = None) -> None:
        self.node_id = node_id
        super().__init__(
            message
            or f"Node {node_id or '<unknown>'} died (the machine or its rtml process went away). "
            "Its tasks are retried up to max_retries and its actors restarted up to "
            "max_restarts; raise those to survive node failures."
        )


class OutOfMemoryError(RtmlError):
    """A task or actor was killed because its node ran out of memory (the memory monitor
    killed its worker). ``task_name``, ``rss`` (its worker's resident bytes) and the node's
    ``used``/``total`` bytes and ``threshold`` say what happened, when known."""

    _default_message = (
        "A task or actor was killed because its node was running out of memory. Use less memory "
        "per task, declare memory=... in @rtml.remote so fewer run at once, or add memory."
    )

    def __init__(
        self,
        message: str | None = None,
        *,
        task_name: str | None = None,
        rss: int | None = None,
        used: int | None = None,
        total: int | None = None,
        threshold: float | None = None,
    ) -> None:
        self.task_name, self.rss = task_name, rss
        self.used, self.total, self.threshold = used, total, threshold
        if message is None and task_name is not None and used and total and threshold:
            message = (
                f"Task {task_name} was killed by the memory monitor: its worker used "
                f"{_fmt_bytes(rss)} while the node's memory was {used / total:.0%} used "
                f"({_fmt_bytes(used)} of {_fmt_bytes(total)}; threshold {threshold:.0%}). "
                + self._default_message.split(". ", 1)[1]
            )
        super().__init__(*(() if message is None else (message,)))


class RuntimeEnvSetupError(RtmlError):
    """The runtime environment of a task or actor could not be set up."""

    _default_message = (
        "Setting up the runtime_env of the task or actor failed. Check the runtime_env "
        "(package names, paths, environment variables) and the worker logs."
    )


class WorkerStartError(RuntimeEnvSetupError):
    """The node could not start worker processes: each one died before it was up (an import
    error in code on the workers' path, a broken environment or interpreter). ``stderr`` is
    what the last one printed; ``failures`` how many starts failed in a row."""

    def __init__(
        self, message: str | None = None, *, stderr: str = "", how: str = "", failures: int = 0
    ) -> None:
        self.stderr, self.how, self.failures = stderr, how, failures
        if message is None:
            message = (
                f"The node could not start a worker process: {failures} start(s) in a row died "
                f"before the worker was up (last: {how or 'unknown'}), so it stopped starting "
                "them and fails the work that waits for one. Fix the workers' environment "
                "(runtime_env env_vars such as PYTHONPATH, packages, the interpreter); the node "
                "tries again a little later."
            )
            if stderr:
                message += "\nThe last worker's stderr:\n" + stderr
        super().__init__(message)


class TaskUnschedulableError(RtmlError):
    """No node in the cluster can ever satisfy the task's resource request."""

    _default_message = (
        "The task can never be scheduled: no node has the resources it asks for. Lower "
        "num_cpus/num_gpus/resources in @rtml.remote or .options(), or add such a node."
    )


class ActorUnschedulableError(RtmlError):
    """No node in the cluster can ever satisfy the actor's resource request."""

    _default_message = TaskUnschedulableError._default_message.replace("task", "actor")


class PendingCallsLimitExceeded(RtmlError):
    """Too many calls are queued on an actor (``max_pending_calls``)."""

    _default_message = (
        "Too many calls are already queued on this actor (max_pending_calls). Wait for some to "
        "finish (rtml.get/rtml.wait) before submitting more, or raise max_pending_calls."
    )


class AsyncioActorExit(RtmlError):
    """Raised inside an async actor to make it exit (``exit_actor()``); not a failure."""

    _default_message = "exit_actor() was called: the async actor is exiting on purpose."


class RtmlSystemError(RtmlError):
    """rtml itself broke: this is a bug in rtml, not in your code."""

    _report = (
        "This is a bug in rtml, not in your code; please report it to the rtml developers with "
        "this message, the traceback and, if you can, code that reproduces it."
    )

    def __init__(self, message: str | None = None) -> None:
        super().__init__(f"{message or 'rtml internal error.'} {self._report}")


# Ray-compatible names: aliases bound to the same class objects.
RayError = RtmlError
RayTaskError = TaskError
RayActorError = ActorDiedError
RaySystemError = RtmlSystemError
