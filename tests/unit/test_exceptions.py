"""Unit tests for rtml.exceptions: hierarchy, aliases, messages, pickling, the dual TaskError."""

from __future__ import annotations

import copy
import errno
import os
import pickle
import sys
import threading
from pathlib import Path

import cloudpickle
import pytest

try:
    from rtml import exceptions as ex
except ImportError:  # running from a checkout without rtml installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from rtml import exceptions as ex

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]


def roundtrip(pickler, obj):
    return pickler.loads(pickler.dumps(obj))


# --- Module-level helper exceptions (importable, so plain pickle can find them) --------------


class ThreeArgError(Exception):
    """A user exception whose __init__ signature differs from its args."""

    def __init__(self, a, b, c):
        super().__init__(f"{a}/{b}/{c}")
        self.code = c


class KwOnlyError(Exception):
    """Default exception pickling calls cls(*args), which fails for this class."""

    def __init__(self, *, reason):
        super().__init__(f"because {reason}")
        self.reason = reason


class LockedError(Exception):
    """Holds a lock, so it cannot be pickled at all."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


class FinalError(Exception):
    """Refuses to be subclassed, like a final class."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("FinalError cannot be subclassed")


class CustomReduceExError(Exception):
    """Defines its own __reduce_ex__, which the dual class must not inherit."""

    def __reduce_ex__(self, protocol):
        return (CustomReduceExError, self.args)


class MyRtmlError(ex.RtmlError):
    """A user subclass with keyword-only constructor arguments."""

    def __init__(self, *, widget, size):
        super().__init__(f"widget {widget} is {size}")
        self.widget = widget
        self.size = size


def simulate(x):
    return helper_that_fails(x)


def helper_that_fails(x):
    raise ValueError(f"bad input {x}")


def capture(fn, *args, **kwargs) -> BaseException:
    try:
        fn(*args, **kwargs)
    except BaseException as e:
        return e
    raise AssertionError("expected an exception")


def task_error_from(fn, *args, **kwargs) -> ex.TaskError:
    exc = capture(fn, *args)
    return ex.TaskError.from_exception(exc, fn.__name__, **kwargs)


# --- Hierarchy, aliases, __all__ ---------------------------------------------------------------

EXPECTED_PUBLIC = {
    "RtmlError",
    "RayError",
    "TaskError",
    "RayTaskError",
    "GetTimeoutError",
    "TaskCancelledError",
    "WorkerCrashedError",
    "WorkerStartError",
    "ActorError",
    "ActorDiedError",
    "RayActorError",
    "ActorUnavailableError",
    "ObjectStoreFullError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError",
    "OwnerDiedError",
    "ObjectFetchTimedOutError",
    "ReferenceCountingAssertionError",
    "NodeDiedError",
    "OutOfMemoryError",
    "RuntimeEnvSetupError",
    "TaskUnschedulableError",
    "ActorUnschedulableError",
    "PendingCallsLimitExceeded",
    "AsyncioActorExit",
    "RtmlSystemError",
    "RaySystemError",
}


def test_all_lists_exactly_the_public_names():
    assert len(ex.__all__) == len(set(ex.__all__)), "duplicates in __all__"
    assert set(ex.__all__) == EXPECTED_PUBLIC
    for name in ex.__all__:
        obj = getattr(ex, name)
        assert isinstance(obj, type) and issubclass(obj, ex.RtmlError), name  # noqa: PT018
    public_classes = {
        name
        for name, obj in vars(ex).items()
        if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, BaseException)
    }
    assert public_classes == EXPECTED_PUBLIC


def test_star_import_exports_everything():
    namespace: dict = {}
    exec("from rtml.exceptions import *", namespace)
    assert set(namespace) >= EXPECTED_PUBLIC


@pytest.mark.parametrize(
    ("alias", "target"),
    [
        ("RayError", "RtmlError"),
        ("RayTaskError", "TaskError"),
        ("RayActorError", "ActorDiedError"),
        ("RaySystemError", "RtmlSystemError"),
    ],
)
def test_ray_aliases_are_the_same_class(alias, target):
    assert getattr(ex, alias) is getattr(ex, target)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (ex.RtmlError, Exception),
        (ex.TaskError, ex.RtmlError),
        (ex.GetTimeoutError, ex.RtmlError),
        (ex.GetTimeoutError, TimeoutError),
        (ex.TaskCancelledError, ex.RtmlError),
        (ex.WorkerCrashedError, ex.RtmlError),
        (ex.WorkerStartError, ex.RuntimeEnvSetupError),
        (ex.ActorError, ex.RtmlError),
        (ex.ActorDiedError, ex.ActorError),
        (ex.ActorUnavailableError, ex.ActorError),
        (ex.ObjectStoreFullError, ex.RtmlError),
        (ex.ObjectLostError, ex.RtmlError),
        (ex.ObjectReconstructionFailedError, ex.ObjectLostError),
        (ex.ObjectReconstructionFailedMaxAttemptsExceededError, ex.ObjectReconstructionFailedError),
        (ex.ObjectReconstructionFailedLineageEvictedError, ex.ObjectReconstructionFailedError),
        (ex.OwnerDiedError, ex.ObjectLostError),
        (ex.ObjectFetchTimedOutError, ex.ObjectLostError),
        (ex.ReferenceCountingAssertionError, ex.ObjectLostError),
        (ex.NodeDiedError, ex.RtmlError),
        (ex.OutOfMemoryError, ex.RtmlError),
        (ex.RuntimeEnvSetupError, ex.RtmlError),
        (ex.TaskUnschedulableError, ex.RtmlError),
        (ex.ActorUnschedulableError, ex.RtmlError),
        (ex.PendingCallsLimitExceeded, ex.RtmlError),
        (ex.AsyncioActorExit, ex.RtmlError),
        (ex.RtmlSystemError, ex.RtmlError),
    ],
)
def test_hierarchy(child, parent):
    assert issubclass(child, parent)


def test_hierarchy_negative_cases():
    assert not issubclass(ex.TaskError, ex.ActorError)
    assert not issubclass(ex.ActorDiedError, ex.ObjectLostError)
    assert not issubclass(ex.ObjectLostError, TimeoutError)
    assert not issubclass(ex.OutOfMemoryError, MemoryError)
    assert not issubclass(ex.RtmlSystemError, ex.TaskError)


def test_get_timeout_error_is_caught_as_builtin_timeout():
    with pytest.raises(TimeoutError, match="may still be computing"):
        raise ex.GetTimeoutError()
    with pytest.raises(ex.RtmlError, match=r"^custom$"):
        raise ex.GetTimeoutError("custom")


# --- Messages -----------------------------------------------------------------------------------

MESSAGE_ONLY = [
    ex.GetTimeoutError,
    ex.ActorUnavailableError,
    ex.OutOfMemoryError,
    ex.RuntimeEnvSetupError,
    ex.TaskUnschedulableError,
    ex.ActorUnschedulableError,
    ex.PendingCallsLimitExceeded,
    ex.AsyncioActorExit,
    ex.TaskCancelledError,
    ex.WorkerCrashedError,
    ex.WorkerStartError,
    ex.NodeDiedError,
    ex.ObjectStoreFullError,
    ex.ActorError,
]


@pytest.mark.parametrize("cls", MESSAGE_ONLY, ids=lambda c: c.__name__)
def test_user_code_can_raise_with_a_plain_message(cls):
    with pytest.raises(cls) as info:
        raise cls("something specific happened")
    assert str(info.value) == "something specific happened"
    assert info.value.args == ("something specific happened",)


@pytest.mark.parametrize(
    ("cls", "needle"),
    [
        (ex.GetTimeoutError, "timeout"),
        (ex.ActorUnavailableError, "retry"),
        (ex.OutOfMemoryError, "memory"),
        (ex.RuntimeEnvSetupError, "runtime_env"),
        (ex.TaskUnschedulableError, "num_cpus"),
        (ex.ActorUnschedulableError, "actor can never be scheduled"),
        (ex.PendingCallsLimitExceeded, "max_pending_calls"),
        (ex.AsyncioActorExit, "exit_actor"),
        (ex.TaskCancelledError, "cancel"),
        (ex.WorkerCrashedError, "max_retries"),
        (ex.WorkerStartError, "environment"),
        (ex.NodeDiedError, "max_restarts"),
        (ex.ObjectStoreFullError, "object_store_memory"),
        (ex.ObjectLostError, "Failed to retrieve object"),
        (ex.OwnerDiedError, "owns it"),
        (ex.ObjectFetchTimedOutError, "timed out"),
        (ex.ObjectReconstructionFailedError, "lineage reconstruction"),
        (ex.ObjectReconstructionFailedMaxAttemptsExceededError, "max_retries"),
        (ex.ObjectReconstructionFailedLineageEvictedError, "evicted"),
        (ex.ReferenceCountingAssertionError, "report"),
        (ex.ActorDiedError, "max_restarts"),
        (ex.RtmlSystemError, "bug in rtml"),
    ],
)
def test_default_messages_say_what_happened_and_what_to_do(cls, needle):
    assert needle in str(cls())


def test_worker_crashed_message_mentions_retries():
    e = ex.WorkerCrashedError(task_id="t1", function_name="train", retries=3)
    assert e.retries == 3
    assert e.task_id == "t1"
    assert e.function_name == "train"
    assert "train()" in str(e)
    assert "retried 3 times" in str(e)
    assert "max_retries" in str(e)
    assert "retried" not in str(ex.WorkerCrashedError())


def test_object_store_full_message_has_sizes_and_advice():
    e = ex.ObjectStoreFullError(
        capacity_bytes=2 * 2**30, needed_bytes=300 * 2**20, used_bytes=2**30
    )
    msg = str(e)
    assert "300.0 MiB" in msg
    assert "2048.0 MiB" in msg
    assert "1024.0 MiB" in msg
    assert "object_store_memory" in msg
    assert "rtml.init" in msg
    assert "spill" in msg


def test_actor_died_message_names_actor_and_cause():
    e = ex.ActorDiedError("killed by rtml.kill()", actor_id="a1b2", class_name="Counter")
    assert e.actor_id == "a1b2"
    assert e.cause == "killed by rtml.kill()"
    assert "Counter" in str(e)
    assert "a1b2" in str(e)
    assert "killed by rtml.kill()" in str(e)
    e2 = ex.ActorDiedError(ZeroDivisionError("div"), actor_name="acc")
    assert "ZeroDivisionError: div" in str(e2)
    assert "'acc'" in str(e2)
    te = ex.TaskError("Counter.__init__", "Traceback ...\nValueError: bad\n", ValueError("bad"))
    e3 = ex.ActorDiedError(te, class_name="Counter")
    assert e3.cause is te
    assert "Cause: TaskError: task Counter.__init__() failed" in str(e3)
    assert "TaskError: TaskError" not in str(e3)
    with pytest.raises(ex.RayActorError):
        raise ex.ActorDiedError("gone")


def test_object_lost_attributes_and_message():
    e = ex.OwnerDiedError("ffee01", call_site="driver.py:10")
    assert e.object_ref_hex == "ffee01"
    assert e.call_site == "driver.py:10"
    assert "ffee01" in str(e)
    assert "driver.py:10" in str(e)
    assert isinstance(e, ex.ObjectLostError)


def test_task_cancelled_and_node_died_attributes():
    assert ex.TaskCancelledError(task_id="t9").task_id == "t9"
    assert "t9" in str(ex.TaskCancelledError(task_id="t9"))
    assert ex.NodeDiedError(node_id="n7").node_id == "n7"
    assert "n7" in str(ex.NodeDiedError(node_id="n7"))


def test_system_error_asks_for_a_report_even_with_a_message():
    e = ex.RtmlSystemError("scheduler invariant violated")
    assert str(e).startswith("scheduler invariant violated")
    assert "report" in str(e)


# --- Pickle round trips of every class ---------------------------------------------------------


def make_samples() -> list[ex.RtmlError]:
    te = ex.TaskError("f", "Traceback...\nValueError: x\n", ValueError("x"), 42, "node1", "t1")
    return [
        ex.RtmlError("root"),
        te,
        ex.GetTimeoutError("waited 5s"),
        ex.GetTimeoutError(),
        ex.TaskCancelledError(task_id="t1"),
        ex.WorkerCrashedError(task_id="t2", function_name="g", retries=2),
        ex.WorkerStartError(stderr="ImportError: x", how="exit code 1", failures=3),
        ex.ActorError("generic", actor_id="a0"),
        ex.ActorDiedError(te, actor_id="a1", class_name="Counter", actor_name="c"),
        ex.ActorUnavailableError(actor_id="a2"),
        ex.ObjectStoreFullError(capacity_bytes=100, needed_bytes=200, used_bytes=50),
        ex.ObjectLostError("aa", call_site="x.py:1"),
        ex.ObjectReconstructionFailedError("bb"),
        ex.ObjectReconstructionFailedMaxAttemptsExceededError("cc"),
        ex.ObjectReconstructionFailedLineageEvictedError("dd"),
        ex.OwnerDiedError("ee"),
        ex.ObjectFetchTimedOutError("ff"),
        ex.ReferenceCountingAssertionError("00"),
        ex.NodeDiedError(node_id="n1"),
        ex.OutOfMemoryError(),
        ex.RuntimeEnvSetupError("pip failed"),
        ex.TaskUnschedulableError(),
        ex.ActorUnschedulableError(),
        ex.PendingCallsLimitExceeded(),
        ex.AsyncioActorExit(),
        ex.RtmlSystemError("oops"),
    ]


def comparable(value):
    """Exceptions compare by type, args and attributes; everything else by value."""
    if isinstance(value, BaseException):
        return (type(value), value.args, {k: comparable(v) for k, v in vars(value).items()})
    return value


def test_samples_cover_every_public_class():
    covered = {type(e) for e in make_samples()}
    assert covered == {getattr(ex, name) for name in ex.__all__}


@pytest.mark.parametrize("pickler", PICKLERS)
@pytest.mark.parametrize("index", range(len(make_samples())))
def test_every_exception_round_trips(pickler, index):
    original = make_samples()[index]
    original.__notes__ = ["a note added by user code"]  # what add_note() does (3.11+)
    original.user_attr = {"set": "by user code"}
    restored = roundtrip(pickler, original)
    assert type(restored) is type(original)
    assert str(restored) == str(original)
    assert restored.args == original.args
    assert comparable(restored) == comparable(original)
    assert restored.__notes__ == ["a note added by user code"]
    assert restored.user_attr == {"set": "by user code"}


def test_round_trip_keeps_specific_attributes():
    e = roundtrip(pickle, ex.WorkerCrashedError(task_id="t2", function_name="g", retries=2))
    assert (e.task_id, e.function_name, e.retries) == ("t2", "g", 2)
    e = roundtrip(cloudpickle, ex.ObjectStoreFullError(capacity_bytes=1, needed_bytes=2))
    assert (e.capacity_bytes, e.needed_bytes, e.used_bytes) == (1, 2, None)
    e = roundtrip(pickle, ex.ActorDiedError("x", actor_id="a1", class_name="C"))
    assert (e.actor_id, e.cause, e.class_name, e.actor_name) == ("a1", "x", "C", None)
    e = roundtrip(pickle, ex.TaskError("f", "tb", KeyError("k"), 7, "n", "t", "Actor(1)"))
    assert (e.function_name, e.traceback_str, e.pid, e.node_id, e.task_id, e.actor_repr) == (
        "f",
        "tb",
        7,
        "n",
        "t",
        "Actor(1)",
    )
    assert type(e.cause) is KeyError
    assert e.cause.args == ("k",)


def test_system_error_message_is_not_doubled_by_pickling():
    e = ex.RtmlSystemError("oops")
    assert str(roundtrip(pickle, roundtrip(pickle, e))) == str(e)
    assert str(e).count("bug in rtml") == 1


@pytest.mark.parametrize("pickler", PICKLERS)
def test_user_subclass_with_keyword_only_init_round_trips(pickler):
    e = roundtrip(pickler, MyRtmlError(widget="w", size=3))
    assert type(e) is MyRtmlError
    assert (e.widget, e.size, str(e)) == ("w", 3, "widget w is 3")


@pytest.mark.parametrize("pickler", PICKLERS)
def test_actor_died_with_awkward_cause_round_trips(pickler):
    e = roundtrip(pickler, ex.ActorDiedError(ThreeArgError(1, 2, 3), actor_id="a"))
    assert type(e.cause) is ThreeArgError
    assert e.cause.code == 3
    assert e.cause.args == ("1/2/3",)


# --- TaskError text -----------------------------------------------------------------------------


def test_task_error_str_has_header_and_remote_traceback():
    te = task_error_from(simulate, 5, pid=123, node_id="abc")
    text = str(te)
    first_line = text.splitlines()[0]
    assert first_line == "TaskError: task simulate() failed (pid=123, node=abc)"
    assert "Traceback (most recent call last)" in text
    assert "in helper_that_fails" in text
    assert 'raise ValueError(f"bad input {x}")' in text
    assert text.rstrip().endswith("ValueError: bad input 5")
    assert te.traceback_str.rstrip() in text
    assert (te.function_name, te.pid, te.node_id, te.task_id) == ("simulate", 123, "abc", None)


def test_task_error_str_for_actor_and_without_traceback():
    te = ex.TaskError("Counter.incr", "", RuntimeError("nope"), actor_repr="Counter(id=1)")
    assert str(te).splitlines() == [
        "TaskError: actor method Counter.incr() failed (actor=Counter(id=1))",
        "RuntimeError: nope",
    ]
    assert str(ex.TaskError("f", "", None)) == "TaskError: task f() failed"


def test_from_exception_keeps_picklable_cause_and_defaults_pid():
    exc = capture(simulate, 1)
    te = ex.TaskError.from_exception(exc, "simulate", task_id="t5")
    assert te.cause is exc
    assert te.pid == os.getpid()
    assert te.task_id == "t5"


def test_from_exception_keeps_cause_whose_default_pickling_would_fail():
    exc = KwOnlyError(reason="disk full")
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(exc))  # the stdlib path really is broken for this class
    te = ex.TaskError.from_exception(exc, "f")
    assert te.cause is exc
    for pickler in (pickle, cloudpickle):
        dual = roundtrip(pickler, te.as_instanceof_cause())
        assert isinstance(dual, KwOnlyError)
        assert dual.reason == "disk full"
        assert dual.cause.reason == "disk full"


@pytest.mark.parametrize("pickler", PICKLERS)
def test_unpicklable_cause_is_replaced_with_a_clear_substitute(pickler):
    te = task_error_from(lambda: (_ for _ in ()).throw(LockedError("held a lock")))
    assert type(te.cause) is ex.RtmlError
    msg = str(te.cause)
    assert msg.startswith("LockedError: held a lock")
    assert "could not be pickled" in msg
    assert "lock" in msg
    assert "LockedError: held a lock" in te.traceback_str  # the real traceback survives
    restored = roundtrip(pickler, te)
    assert type(restored) is ex.TaskError
    assert str(restored) == str(te)
    assert str(restored.cause) == msg
    assert restored.as_instanceof_cause() is restored  # nothing to be a dual of


# --- The dual TaskError(<Cause>) class ----------------------------------------------------------


def test_dual_is_caught_by_the_cause_class():
    te = task_error_from(simulate, 2)
    dual = te.as_instanceof_cause()
    with pytest.raises(ValueError) as info:
        raise dual
    caught = info.value
    assert isinstance(caught, ex.TaskError)
    assert isinstance(caught, ex.RayTaskError)
    assert isinstance(caught, ValueError)
    assert type(caught).__name__ == "TaskError(ValueError)"
    assert issubclass(type(caught), ex.TaskError)
    assert issubclass(type(caught), ValueError)
    assert caught.cause is te.cause
    assert str(caught) == str(te)
    assert caught.args == te.cause.args
    assert (caught.function_name, caught.pid) == ("simulate", te.pid)
    assert not isinstance(te, ValueError)  # the plain one is untouched


def test_dual_class_is_cached_per_cause_class():
    a = ex.TaskError("f", "", ValueError(1)).as_instanceof_cause()
    b = ex.TaskError("g", "", ValueError(2)).as_instanceof_cause()
    c = ex.TaskError("h", "", TypeError(3)).as_instanceof_cause()
    assert type(a) is type(b)
    assert type(a) is not type(c)


def test_dual_attribute_fall_through():
    dual = ex.TaskError("f", "", ThreeArgError("x", "y", 404)).as_instanceof_cause()
    assert isinstance(dual, ThreeArgError)
    assert dual.code == 404  # from the cause
    assert dual.function_name == "f"  # TaskError's own attributes win
    with pytest.raises(AttributeError):
        _ = dual.no_such_attribute
    assert not hasattr(dual, "__no_such_dunder__")


@pytest.mark.parametrize("pickler", PICKLERS)
def test_dual_pickle_round_trip_stays_dual(pickler):
    dual = ex.TaskError("f", "tb text", ThreeArgError(1, 2, 3), 11, "n", "t").as_instanceof_cause()
    restored = roundtrip(pickler, dual)
    assert type(restored).__name__ == "TaskError(ThreeArgError)"
    assert type(restored) is type(dual)  # rebuilt through the cache
    assert isinstance(restored, ThreeArgError)
    assert isinstance(restored, ex.TaskError)
    assert restored.code == 3
    assert type(restored.cause) is ThreeArgError
    assert restored.cause.args == ("1/2/3",)
    assert (restored.pid, restored.node_id, restored.task_id) == (11, "n", "t")
    assert str(restored) == str(dual)
    with pytest.raises(ThreeArgError):
        raise restored


@pytest.mark.parametrize("pickler", PICKLERS)
def test_dual_pickling_ignores_the_cause_class_reduce_ex(pickler):
    dual = ex.TaskError("f", "", CustomReduceExError("r")).as_instanceof_cause()
    restored = roundtrip(pickler, dual)
    assert isinstance(restored, ex.TaskError)
    assert isinstance(restored, CustomReduceExError)
    assert type(restored.cause) is CustomReduceExError
    assert restored.cause.args == ("r",)


def test_dual_deepcopy_stays_dual():
    dual = ex.TaskError("f", "", KeyError("k")).as_instanceof_cause()
    clone = copy.deepcopy(dual)
    assert isinstance(clone, KeyError)
    assert clone.cause.args == ("k",)


@pytest.mark.parametrize("pickler", PICKLERS)
def test_dual_of_oserror_keeps_errno(pickler):
    cause = OSError(errno.ENOENT, "No such file or directory", "/nope")
    assert type(cause) is FileNotFoundError
    dual = ex.TaskError("open_it", "", cause).as_instanceof_cause()
    for e in (dual, roundtrip(pickler, dual)):
        assert isinstance(e, FileNotFoundError)
        assert isinstance(e, OSError)
        assert e.errno == errno.ENOENT
        assert e.strerror == "No such file or directory"
        assert e.filename == "/nope"
        assert isinstance(e, ex.TaskError)
        assert e.cause.errno == errno.ENOENT


def test_dual_of_key_error():
    dual = ex.TaskError("lookup", "", KeyError("missing")).as_instanceof_cause()
    try:
        raise dual
    except KeyError as e:
        assert e.args[0] == "missing"
        assert str(e).startswith("TaskError: task lookup() failed")
    with pytest.raises(LookupError):
        raise roundtrip(cloudpickle, dual)


def test_dual_of_zero_division_from_real_exception():
    te = task_error_from(lambda: 1 / 0, pid=9)
    with pytest.raises(ArithmeticError) as info:
        raise te.as_instanceof_cause()
    assert isinstance(info.value, ZeroDivisionError)
    assert "ZeroDivisionError: division by zero" in str(info.value)


def test_dual_of_local_class_round_trips_with_cloudpickle():
    class LocalError(Exception):
        def __init__(self, a, b, c):
            super().__init__(a + b + c)

    dual = ex.TaskError("f", "", LocalError(1, 2, 3)).as_instanceof_cause()
    restored = roundtrip(cloudpickle, dual)
    assert type(restored).__name__ == "TaskError(LocalError)"
    assert type(restored.cause).__name__ == "LocalError"
    assert restored.cause.args == (6,)
    assert isinstance(restored, type(restored.cause))


def test_dual_of_an_rtml_error_cause():
    dual = ex.TaskError("f", "", ex.GetTimeoutError("inner get timed out")).as_instanceof_cause()
    assert isinstance(dual, ex.GetTimeoutError)
    assert isinstance(dual, TimeoutError)
    assert isinstance(roundtrip(pickle, dual), ex.GetTimeoutError)


def test_dual_degrades_when_cause_class_cannot_be_subclassed():
    te = ex.TaskError("f", "", FinalError("final"))
    assert te.as_instanceof_cause() is te
    assert te.as_instanceof_cause() is te  # the failure is cached, still no exception


@pytest.mark.parametrize(
    "cause",
    [
        None,
        Exception("plain"),
        ex.RtmlError("root"),
    ],
    ids=["none", "exception", "rtml-error"],
)
def test_dual_returns_self_when_nothing_to_add(cause):
    te = ex.TaskError("outer", "", cause)
    assert te.as_instanceof_cause() is te


@pytest.mark.parametrize("dual_inner", [False, True], ids=["task-error", "dual-task-error"])
def test_a_task_failed_by_a_failed_task_is_an_instance_of_the_innermost_cause(dual_inner):
    inner = ex.TaskError("inner", "inner tb", ValueError("v"))
    if dual_inner:
        inner = inner.as_instanceof_cause()
    outer = ex.TaskError("outer", "outer tb", inner).as_instanceof_cause()
    assert isinstance(outer, ValueError)
    assert isinstance(outer, ex.TaskError)
    assert outer.cause is inner  # the chain of tasks stays in the error
    assert pickle.loads(pickle.dumps(outer)).cause.function_name == "inner"


def test_as_instanceof_cause_on_a_dual_is_idempotent():
    dual = ex.TaskError("f", "", ValueError("v")).as_instanceof_cause()
    assert dual.as_instanceof_cause() is dual
