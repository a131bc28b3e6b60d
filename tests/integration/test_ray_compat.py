"""Ray programs that ran on Ray and stopped on rtml (issue 20), each checked in the three
runtimes where it applies: embedded (``rtml.init()``), local mode, and a cluster driver."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

import rtml
from conftest import wait_for
from rtml import exceptions as exc
from rtml.testing import Cluster

MODES = ["embedded", "local", "cluster"]


@pytest.fixture(scope="module", params=MODES)
def mode(request):
    if request.param == "cluster":
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        try:
            c.connect()
            yield request.param
        finally:
            c.shutdown()
    else:
        rtml.init(num_cpus=2, local_mode=request.param == "local")
        try:
            yield request.param
        finally:
            rtml.shutdown()


# ---------------------------------------------------------------- item 5: pickling as Ray does
def test_rtml_cloudpickle_is_importable():
    import cloudpickle

    import rtml.cloudpickle as rcp

    assert rtml.cloudpickle is rcp
    assert rcp.dumps is cloudpickle.dumps
    assert rcp.register_pickle_by_value is cloudpickle.register_pickle_by_value


def test_register_pickle_by_value_reaches_workers_that_cannot_import_the_module(mode, tmp_path):
    import cloudpickle

    name = f"rtml_byvalue_{mode}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
            class Thing:
                def __init__(self, v):
                    self.v = v

            def bump(x):
                return x + 1
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    (tmp_path / f"{name}.py").unlink()  # no worker can import it by name now
    cloudpickle.register_pickle_by_value(mod)
    try:

        @rtml.remote
        def use(thing, fn):
            return fn(thing.v), type(thing).__name__

        assert rtml.get(use.remote(mod.Thing(1), mod.bump), timeout=30) == (2, "Thing")
    finally:
        cloudpickle.unregister_pickle_by_value(mod)
        sys.modules.pop(name, None)


def test_actor_whose_arguments_cannot_be_unpickled_dies_with_the_cause(mode):
    def refuse():
        raise ValueError("this value refuses to be rebuilt")

    class Unbuildable:  # (local: pickled by value, so every worker can run its __reduce__)
        def __reduce__(self):
            return (refuse, ())

    @rtml.remote(num_cpus=0)
    class Holder:
        def __init__(self, value):
            self.value = value

        def ping(self):
            return 1

    h = Holder.remote(Unbuildable())
    with pytest.raises(exc.ActorDiedError, match="refuses to be rebuilt"):
        rtml.get(h.ping.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError):
        rtml.get(h.ping.remote(), timeout=30)


# ---------------------------------------------------------------- item 2: arguments checked at the call
def test_wrong_arguments_raise_type_error_at_remote(mode):
    @rtml.remote
    def f(a, b, *, c=0):
        return a + b + c

    with pytest.raises(TypeError, match="'b'"):
        f.remote(1)
    with pytest.raises(TypeError, match="too many"):
        f.remote(1, 2, 3)
    with pytest.raises(TypeError, match="'d'"):
        f.options(num_cpus=0).remote(1, 2, d=4)
    assert rtml.get(f.remote(1, rtml.put(2), c=3), timeout=30) == 6

    @rtml.remote(num_cpus=0)
    class K:
        def __init__(self, start):
            self.start = start

        def m(self, x):
            return self.start + x

        @staticmethod
        def s(y):
            return y

        @classmethod
        def c(cls, z):
            return z

    with pytest.raises(TypeError, match="'start'"):
        K.remote()
    with pytest.raises(TypeError, match="'start'"):
        K.options(name=None).remote()
    k = K.remote(1)
    with pytest.raises(TypeError, match="'x'"):
        k.m.remote()
    with pytest.raises(TypeError, match="too many"):
        k.s.remote(1, 2)
    with pytest.raises(TypeError, match="'z'"):
        k.c.remote()
    assert rtml.get([k.m.remote(2), k.s.remote(3), k.c.remote(4)], timeout=30) == [3, 3, 4]


# ---------------------------------------------------------------- item 8: Ray's documentation examples
@rtml.remote
def _count(n):
    yield from range(n)


def test_async_for_over_a_streaming_generator_ends_after_its_last_item(mode):
    import asyncio

    async def main():
        return [await r async for r in _count.remote(3)]

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [0, 1, 2]


def test_wait_accepts_generators(mode):
    g = _count.remote(2)
    ready, not_ready = rtml.wait([g], timeout=30)
    assert ready == [g]
    assert not_ready == []
    assert rtml.get(list(g), timeout=30) == [0, 1]


def test_object_ref_hex_round_trips_through_bytes(mode):
    ref = rtml.put(7)
    again = rtml.ObjectRef(bytes.fromhex(ref.hex()))
    assert again == ref
    assert rtml.get(again, timeout=30) == 7
    assert again.binary() == ref.binary()
    assert len(rtml.put(8).hex()) == len(ref.hex())


@pytest.mark.parametrize("key", ["pip", "conda", "uv", "worker_process_setup_hook", "working_dir"])
def test_runtime_env_options_rtml_lacks_are_rejected(mode, key):
    @rtml.remote
    def f():
        return 1

    with pytest.raises(ValueError, match=key):
        f.options(runtime_env={key: "x"}).remote()

    @rtml.remote(num_cpus=0)
    class A:
        pass

    with pytest.raises(ValueError, match=key):
        A.options(runtime_env={key: "x"}).remote()
    assert rtml.get(f.options(runtime_env={"env_vars": {"A": "1"}}).remote(), timeout=30) == 1


def test_numpy_arguments_arrive_read_only_whatever_their_size(mode):
    np = pytest.importorskip("numpy")

    @rtml.remote
    def flags(a, b):
        return a.flags.writeable, b.flags.writeable

    assert rtml.get(flags.remote(np.zeros(3), np.zeros(1_000_000)), timeout=30) == (False, False)


def test_sys_exit_in_an_actor_method_ends_the_actor(mode):
    if mode == "local":
        pytest.skip("local mode runs actors in the driver: sys.exit ends the driver, as in Ray")

    @rtml.remote(num_cpus=0)
    class Quitter:
        def quit(self):
            sys.exit(0)

        def ping(self):
            return 1

    q = Quitter.remote()
    assert rtml.get(q.ping.remote(), timeout=30) == 1
    with pytest.raises(exc.RayActorError):
        rtml.get(q.quit.remote(), timeout=30)
    with pytest.raises(exc.RayActorError):
        rtml.get(q.ping.remote(), timeout=30)


def test_dag_bind_and_execute(mode):
    from rtml.dag import InputNode, MultiOutputNode

    @rtml.remote
    def double(x):
        return 2 * x

    @rtml.remote
    def add(a, b):
        return a + b

    @rtml.remote(num_cpus=0)
    class Acc:
        def __init__(self, start):
            self.total = start

        def plus(self, x):
            self.total += x
            return self.total

    with InputNode() as inp:
        dag = add.bind(double.bind(inp), 1)
    assert rtml.get(dag.execute(20), timeout=30) == 41
    assert rtml.get(dag.execute(1), timeout=30) == 3  # the same graph runs again

    with InputNode() as inp:
        both = MultiOutputNode([double.bind(inp[0]), add.options(num_cpus=0).bind(inp[0], inp[1])])
    assert rtml.get(both.execute(3, 4), timeout=30) == [6, 7]

    acc = Acc.bind(10)
    assert rtml.get(acc.plus.bind(double.bind(5)).execute(), timeout=30) == 20
    live = Acc.remote(1)
    assert rtml.get(live.plus.bind(2).execute(), timeout=30) == 3


# ---------------------------------------------------------------- item 4: actor classes look like classes
def _tagged():
    @rtml.remote(num_cpus=0)
    class Tagged:
        X = 5

        @staticmethod
        def s(v):
            return v * 3

        def inside(self):
            return Tagged.X, Tagged.s(2)

    return Tagged


def test_actor_class_attributes_and_dir(mode):
    _Tagged = _tagged()
    assert _Tagged.X == 5
    assert _Tagged.s(2) == 6
    h = _Tagged.remote()
    assert rtml.get(h.inside.remote(), timeout=30) == (5, 6)
    assert {"inside", "s", "remote", "options"} <= set(dir(_Tagged))
    assert "inside" in dir(h)
    with pytest.raises(AttributeError):
        _ = _Tagged.missing


def test_subclassing_an_actor_class_raises_rays_type_error():
    with pytest.raises(TypeError, match="Inheriting from actor classes is not currently supported"):

        class Sub(_tagged()):  # type: ignore[misc]
            pass


def test_options_name_get_or_create(mode):
    @rtml.remote(num_cpus=0)
    class Named:
        def __init__(self, v):
            self.v = v

        def get(self):
            return self.v

    a = Named.options(name=f"goc-{mode}").get_or_create(1)
    b = Named.options(name=f"goc-{mode}").get_or_create(2)
    assert rtml.get([a.get.remote(), b.get.remote()], timeout=30) == [1, 1]
    rtml.kill(a)


# ---------------------------------------------------------------- item 3: generators as Ray has them
def test_num_returns_dynamic_gives_one_ref_of_a_dynamic_generator(mode):
    @rtml.remote(num_returns="dynamic")
    def split(n):
        for i in range(n):
            yield i * 10

    ref = split.remote(3)
    assert isinstance(ref, rtml.ObjectRef)
    gen = rtml.get(ref, timeout=30)
    assert isinstance(gen, rtml.DynamicObjectRefGenerator)
    assert len(gen) == 3
    assert rtml.get(list(gen), timeout=30) == [0, 10, 20]

    @rtml.remote
    def plain(n):
        yield from range(n)

    again = rtml.get(plain.options(num_returns="dynamic").remote(2), timeout=30)
    assert rtml.get(list(again), timeout=30) == [0, 1]


def test_generator_with_num_returns_k_keeps_what_it_yielded(mode):
    @rtml.remote(num_returns=2)
    def more():
        yield 1
        yield 2
        yield 3

    assert rtml.get(more.remote(), timeout=30) == [1, 2]

    @rtml.remote(num_returns=3)
    def boom():
        yield 1
        raise ValueError("stopped early")

    first, second, third = boom.remote()
    assert rtml.get(first, timeout=30) == 1
    for r in (second, third):
        with pytest.raises(ValueError, match="stopped early"):
            rtml.get(r, timeout=30)

    @rtml.remote(num_returns=1)
    def one():
        yield 7
        yield 8

    assert rtml.get(one.remote(), timeout=30) == 7


def test_object_id_is_the_object_ref():
    assert rtml.ObjectID is rtml.ObjectRef


# ---------------------------------------------------------------- item 6: smaller gaps
def test_as_future_and_done_callbacks(mode):
    import asyncio

    ref = rtml.put(5)

    async def main():
        fut = ref.as_future()
        seen = []
        fut.add_done_callback(lambda f: seen.append(f.result()))
        value = await asyncio.wait_for(fut, 30)
        await asyncio.sleep(0)  # callbacks run on the next turn of the loop
        return value, seen

    assert asyncio.run(main()) == (5, [5])


def test_decorator_misuse_raises_as_in_ray():
    with pytest.raises(TypeError, match="empty parentheses"):

        @rtml.remote()
        def f():
            return 1


def test_actor_pool_get_next_unordered_ignore_if_timedout(mode, tmp_path):
    from rtml.util import ActorPool

    gate = tmp_path / "gate"

    @rtml.remote(num_cpus=0)
    class Waiter:
        def wait(self, path):
            import os
            import time

            deadline = time.monotonic() + 30
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.01)
            return "done"

    if mode == "local":
        gate.touch()  # local mode runs the call at submission
    pool = ActorPool([Waiter.remote()])
    pool.submit(lambda a, v: a.wait.remote(v), str(gate))
    if mode != "local":
        assert pool.get_next_unordered(timeout=0.2, ignore_if_timedout=True) is None
        with pytest.raises(TimeoutError):
            pool.get_next_unordered(timeout=0.1)
    gate.touch()
    assert pool.get_next_unordered(timeout=30) == "done"


def test_readme_ray_compatibility_example_runs_as_written(tmp_path):
    from conftest import readme_block

    script = tmp_path / "example.py"
    script.write_text(readme_block("### Ray compatibility"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused: shift(): missing a required argument: 'dx'")
    assert lines[1:] == ["Point(x=11, y=0)", "3 [3, 2, 1]"]


def test_async_init_runs_on_the_actors_event_loop(mode):
    import asyncio

    @rtml.remote(num_cpus=0)
    class Server:
        async def __init__(self, greeting):
            self.loop = asyncio.get_running_loop()
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.greeting = greeting

        async def _serve(self, reader, writer):
            writer.write(self.greeting.encode())
            await writer.drain()
            writer.close()

        async def fetch(self):
            assert asyncio.get_running_loop() is self.loop  # the constructor's loop
            port = self.server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            data = await reader.read()
            writer.close()
            return data.decode()

        async def close(self):
            self.server.close()
            await self.server.wait_closed()

    s = Server.remote("hello")
    assert rtml.get(s.fetch.remote(), timeout=30) == "hello"
    rtml.get(s.close.remote(), timeout=30)
    rtml.kill(s)


# ---------------------------------------------------------------- items 6 and 8: smaller gaps
def _file_waiter():
    def wait_file(path, timeout=60):
        import os
        import time

        deadline = time.monotonic() + timeout
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.path.exists(path)

    return wait_file


# Made in a function, so that cloudpickle sends it by value: a cluster's workers cannot import
# this test module.
_wait_file = _file_waiter()


def test_async_def_remote_functions_run(mode):
    # Ray refuses @remote on an async def; rtml runs the coroutine (a recorded decision:
    # rtml programs rely on it).
    import asyncio

    @rtml.remote
    async def add_one(x):
        await asyncio.sleep(0)
        return x + 1

    assert rtml.get([add_one.remote(1), add_one.remote(2)], timeout=60) == [2, 3]


def test_is_canceled_outside_any_task_raises_as_in_ray(mode):
    with pytest.raises(RuntimeError, match="only available inside a task or an actor call"):
        rtml.get_runtime_context().is_canceled()

    @rtml.remote
    def check():
        return rtml.get_runtime_context().is_canceled()

    assert rtml.get(check.remote(), timeout=60) is False


def test_cancel_of_a_running_sync_actor_call(mode, tmp_path):
    if mode == "local":
        pytest.skip("local mode runs each call when it is submitted: none is running")
    started = tmp_path / "started"

    @rtml.remote
    class Worker:
        def __init__(self):
            self.stopped_at = None
            self.finished = False

        def loop(self, started):
            import time

            open(started, "w").close()
            for i in range(6000):  # 60 s at most
                if rtml.get_runtime_context().is_canceled():
                    self.stopped_at = i
                    return "noticed"
                time.sleep(0.01)
            return "ran to the end"

        def wait_then_finish(self, started, gate):
            open(started, "w").close()
            _wait_file(gate)
            self.finished = True  # not interrupted: runs to its end, as in Ray
            return "finished"

        def state(self):
            return self.stopped_at, self.finished, rtml.get_runtime_context().is_canceled()

    w = Worker.remote()
    ref = w.loop.remote(str(started))
    wait_for(started.exists, 60, what="the call to start")
    rtml.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(ref, timeout=60)
    stopped_at, finished, canceled_now = rtml.get(w.state.remote(), timeout=60)
    assert stopped_at is not None
    assert not finished
    assert canceled_now is False

    # A call that never checks is not interrupted either; its caller still sees the cancel.
    started2, gate = tmp_path / "started2", tmp_path / "gate"
    ref = w.wait_then_finish.remote(str(started2), str(gate))
    queued = w.state.remote()  # behind it: cancelled before it starts, so it never runs
    wait_for(started2.exists, 60, what="the second call to start")
    rtml.cancel(ref)
    rtml.cancel(queued)
    gate.touch()
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(ref, timeout=60)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(queued, timeout=60)
    assert rtml.get(w.state.remote(), timeout=60)[1] is True  # the method did finish


def test_cancel_of_a_running_threaded_actor_call(mode, tmp_path):
    if mode == "local":
        pytest.skip("local mode runs each call when it is submitted: none is running")
    started = tmp_path / "started"

    @rtml.remote(max_concurrency=2)
    class Threaded:
        def loop(self, started):
            import time

            open(started, "w").close()
            for _ in range(6000):
                if rtml.get_runtime_context().is_canceled():
                    return "noticed"
                time.sleep(0.01)
            return "ran to the end"

        def other(self):
            return rtml.get_runtime_context().is_canceled()

    t = Threaded.remote()
    ref = t.loop.remote(str(started))
    wait_for(started.exists, 60, what="the call to start")
    rtml.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        rtml.get(ref, timeout=60)
    assert rtml.get(t.other.remote(), timeout=60) is False


def test_available_resources_leave_out_what_is_used_up(mode, tmp_path):
    if mode == "local":
        pytest.skip("local mode runs each call when it is submitted: nothing stays in use")
    started, gate = tmp_path / "started", tmp_path / "gate"

    @rtml.remote(num_cpus=2)
    def hold(started, gate):
        open(started, "w").close()
        return _wait_file(gate)

    assert rtml.available_resources()["CPU"] == 2
    ref = hold.remote(str(started), str(gate))
    wait_for(lambda: "CPU" not in rtml.available_resources(), 60, what="CPUs in use")
    assert rtml.cluster_resources()["CPU"] == 2
    assert "memory" in rtml.available_resources()
    gate.touch()
    assert rtml.get(ref, timeout=60) is True
    wait_for(lambda: rtml.available_resources().get("CPU") == 2, 60, what="CPUs back")


def test_memory_is_accounted_as_a_resource(mode, tmp_path):
    total = rtml.cluster_resources()["memory"]
    assert total > 0
    share = int(total * 0.6)  # two of these cannot run at once

    @rtml.remote(memory=share, num_cpus=0)
    def hold(started, gate):
        open(started, "w").close()
        return _wait_file(gate)

    if mode == "local":
        (tmp_path / "gate").touch()
        assert rtml.get(hold.remote(str(tmp_path / "s"), str(tmp_path / "gate"))) is True
        return
    first_started, second_started, gate = (tmp_path / n for n in ("s1", "s2", "gate"))
    first = hold.remote(str(first_started), str(gate))
    wait_for(first_started.exists, 60, what="the first task to start")
    wait_for(
        lambda: rtml.available_resources().get("memory", 0) <= total - share + 1,
        60,
        what="memory reserved",
    )
    second = hold.remote(str(second_started), str(gate))
    ready, _ = rtml.wait([second], timeout=1)
    assert not ready  # waits for memory, not for CPUs
    assert not second_started.exists()
    gate.touch()
    assert rtml.get([first, second], timeout=60) == [True, True]

    @rtml.remote(memory=share)
    class Holder:
        def ping(self):
            return "pong"

    h = Holder.remote()
    assert rtml.get(h.ping.remote(), timeout=60) == "pong"
    wait_for(
        lambda: rtml.available_resources().get("memory", 0) <= total - share + 1,
        60,
        what="memory held by the actor",
    )
    rtml.kill(h)
    wait_for(lambda: rtml.available_resources().get("memory") == total, 60, what="memory back")


_TOO_BIG = b"x" * (2 * 1024 * 1024)


def test_a_too_large_function_is_refused_at_remote_naming_what_it_captures(mode, monkeypatch):
    if mode == "local":
        pytest.skip("local mode runs the function itself and never pickles it")
    monkeypatch.setattr("rtml._serialization._code.FUNCTION_SIZE_WARN_THRESHOLD", 1024 * 1024)
    monkeypatch.setenv("RTML_FUNCTION_SIZE_ERROR_THRESHOLD", str(1024 * 1024 + 1))

    @rtml.remote
    def uses_big():
        return len(_TOO_BIG)

    with pytest.raises(ValueError, match=r"remote function .*uses_big is too large") as info:
        uses_big.remote()
    assert "'_TOO_BIG'" in str(info.value)

    @rtml.remote
    class Big:
        table = _TOO_BIG

        def n(self):
            return len(self.table)

    with pytest.raises(ValueError, match=r"The actor Big is too large .*Big\.table"):
        Big.remote()
    monkeypatch.setenv("RTML_FUNCTION_SIZE_ERROR_THRESHOLD", str(10**8))
    with pytest.warns(UserWarning, match=r"uses_big is very large .*'_TOO_BIG'"):
        ref = uses_big.remote()
    assert rtml.get(ref, timeout=60) == len(_TOO_BIG)


def test_an_actor_created_by_an_actor_dies_with_it_unless_detached(mode):
    @rtml.remote
    class Child:
        def ping(self):
            return "pong"

    @rtml.remote
    class Parent:
        def make(self, detached):
            opts = {"lifetime": "detached", "name": f"detached-child-{mode}"} if detached else {}
            self.child = Child.options(**opts).remote()
            rtml.get(self.child.ping.remote(), timeout=60)
            return [self.child]  # the driver holds a handle too: it is not what ends it

        def leave(self):
            rtml.actor.exit_actor()

    parent = Parent.remote()
    [child] = rtml.get(parent.make.remote(False), timeout=60)
    assert rtml.get(child.ping.remote(), timeout=60) == "pong"
    rtml.kill(parent)
    with pytest.raises(exc.RayActorError, match="owner has died") as info:
        wait_for(lambda: rtml.get(child.ping.remote(), timeout=60) and False, 60, what="death")
    assert isinstance(info.value, exc.ActorDiedError)

    parent = Parent.remote()  # ended by exit_actor(): its children go with it too
    [child] = rtml.get(parent.make.remote(False), timeout=60)
    with pytest.raises(exc.RayActorError):
        rtml.get(parent.leave.remote(), timeout=60)
    with pytest.raises(exc.ActorDiedError, match="owner has died"):
        wait_for(lambda: rtml.get(child.ping.remote(), timeout=60) and False, 60, what="death")

    parent = Parent.remote()
    [detached] = rtml.get(parent.make.remote(True), timeout=60)
    [witness] = rtml.get(parent.make.remote(False), timeout=60)
    rtml.kill(parent)
    with pytest.raises(exc.ActorDiedError, match="owner has died"):  # the parent's end is seen
        wait_for(lambda: rtml.get(witness.ping.remote(), timeout=60) and False, 60, what="death")
    assert rtml.get(detached.ping.remote(), timeout=60) == "pong"
    rtml.kill(detached)


def test_an_actor_created_by_a_task_outlives_the_task(mode):
    @rtml.remote
    class Child:
        def ping(self):
            return "pong"

    @rtml.remote
    def make():
        child = Child.remote()
        rtml.get(child.ping.remote(), timeout=60)
        return [child]

    [child] = rtml.get(make.remote(), timeout=60)
    assert rtml.get(child.ping.remote(), timeout=60) == "pong"  # its worker lives on
