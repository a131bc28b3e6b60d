"""One adapter per framework: start, stop, and the comparison workloads in its own API.

Every adapter runs with 2 worker slots (``--num-cpus``). Workloads follow Ray's microbenchmark
(python/ray/_private/ray_perf.py); where a framework's API differs, the closest equivalent is
used and said below. A workload a framework has no counterpart for is simply absent (N/A).

  workload                       rtml / Ray          Dask distributed            Pool / PPE
  single client tasks sync       get(f.remote())     submit(f).result()          apply / submit
  single client tasks async      1000 x, get all     1000 submit, gather         apply_async / submit
  single client put calls        put(0)              scatter(0, hash=False)      N/A
  single client get calls        get(ref)            future.result()             N/A
  single client put gigabytes    put(800 MB array)   scatter(800 MB array)       N/A
  single client wait 1k refs     wait() x1000        wait(FIRST_COMPLETED) x1000 PPE: futures.wait
  1:1 actor calls sync / async   actor method        Dask actor (actor=True)     N/A
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import multiprocessing
from collections.abc import Callable
from typing import Any

Workload = Callable[[], tuple[Callable[[], Any], float, str]]


def small_value() -> bytes:
    return b"ok"


def big_array() -> Any:
    import numpy as np

    return np.zeros(100 * 1024 * 1024, dtype=np.int64)  # 800 MiB, as Ray's put_large


class ActorClass:
    def small_value(self) -> bytes:
        return b"ok"


class Framework:
    name = ""

    def __init__(self, num_cpus: int) -> None:
        self.num_cpus = num_cpus

    def start(self) -> None:
        raise NotImplementedError

    def first_result(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def workloads(self) -> dict[str, Workload]:
        return {}


class RayLike(Framework):
    """rtml and Ray: the same code, ``import rtml as ray``."""

    def __init__(self, num_cpus: int, module: str) -> None:
        super().__init__(num_cpus)
        self.name = module
        self.ray = importlib.import_module(module)

    def start(self) -> None:
        import cloudpickle

        # Ship this module's functions by value: Ray's workers may not have bench/ on sys.path.
        cloudpickle.register_pickle_by_value(importlib.import_module(__name__))
        self.ray.init(num_cpus=self.num_cpus, include_dashboard=False)
        self.f = self.ray.remote(small_value)

    def first_result(self) -> Any:
        return self.ray.get(self.f.remote())

    def stop(self) -> None:
        self.ray.shutdown()

    def _actor(self) -> Any:
        # Ray's microbenchmark Actor is declared with num_cpus=0.
        return self.ray.remote(num_cpus=0)(ActorClass).remote()

    def workloads(self) -> dict[str, Workload]:
        ray, f = self.ray, self.f

        def tasks_sync():
            return (lambda: ray.get(f.remote())), 1, "per second"

        def tasks_async():
            return (lambda: ray.get([f.remote() for _ in range(1000)])), 1000, "per second"

        def get_batch():
            return (lambda: ray.get([f.remote() for _ in range(1000)])), 1, "per second"

        def put_calls():
            return (lambda: ray.put(0)), 1, "per second"

        def get_calls():
            ref = ray.put(0)
            return (lambda: ray.get(ref)), 1, "per second"

        def put_gb():
            arr = big_array()
            return (lambda: ray.put(arr)), 0.8, "GB/s"

        def wait_1k():
            def run():
                not_ready = [f.remote() for _ in range(1000)]
                fetch_local = True
                for _ in range(1000):
                    _, not_ready = ray.wait(not_ready, fetch_local=fetch_local)
                    fetch_local = False

            return run, 1, "per second"

        def actor_sync():
            a = self._actor()
            return (lambda: ray.get(a.small_value.remote())), 1, "per second"

        def actor_async():
            a = self._actor()
            return (
                (lambda: ray.get([a.small_value.remote() for _ in range(1000)])),
                1000,
                "per second",
            )

        return {
            "single client tasks sync": tasks_sync,
            "single client tasks async": tasks_async,
            "single client tasks and get batch": get_batch,
            "single client put calls": put_calls,
            "single client get calls": get_calls,
            "single client put gigabytes": put_gb,
            "single client wait 1k refs": wait_1k,
            "1:1 actor calls sync": actor_sync,
            "1:1 actor calls async": actor_async,
        }


class Dask(Framework):
    name = "dask"

    def __init__(self, num_cpus: int) -> None:
        super().__init__(num_cpus)
        import distributed

        self.distributed = distributed

    def start(self) -> None:
        import cloudpickle

        cloudpickle.register_pickle_by_value(importlib.import_module(__name__))
        self.cluster = self.distributed.LocalCluster(
            n_workers=self.num_cpus, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = self.distributed.Client(self.cluster)

    def first_result(self) -> Any:
        return self.client.submit(small_value, pure=False).result()

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def workloads(self) -> dict[str, Workload]:
        from distributed import wait

        c = self.client

        def submit_many(n: int) -> Callable[[], Any]:
            return lambda: c.gather([c.submit(small_value, pure=False) for _ in range(n)])

        def tasks_sync():
            return (lambda: c.submit(small_value, pure=False).result()), 1, "per second"

        def get_calls():
            fut = c.scatter(0, hash=False)
            return fut.result, 1, "per second"

        def put_gb():
            arr = big_array()
            return (lambda: c.scatter(arr, hash=False)), 0.8, "GB/s"

        def wait_1k():
            def run():
                not_ready = [c.submit(small_value, pure=False) for _ in range(1000)]
                while not_ready:
                    done, _ = wait(not_ready, return_when="FIRST_COMPLETED")
                    first = next(iter(done))  # like ray.wait(num_returns=1): take one
                    not_ready = [x for x in not_ready if x is not first]

            return run, 1, "per second"

        def actor():
            return c.submit(ActorClass, actor=True).result()

        def actor_sync():
            a = actor()
            return (lambda: a.small_value().result()), 1, "per second"

        def actor_async():
            a = actor()
            return (
                (lambda: [x.result() for x in [a.small_value() for _ in range(1000)]]),
                1000,
                "per second",
            )

        return {
            "single client tasks sync": tasks_sync,
            "single client tasks async": lambda: (submit_many(1000), 1000, "per second"),
            "single client tasks and get batch": lambda: (submit_many(1000), 1, "per second"),
            "single client put calls": lambda: (
                (lambda: c.scatter(0, hash=False)),
                1,
                "per second",
            ),
            "single client get calls": get_calls,
            "single client put gigabytes": put_gb,
            "single client wait 1k refs": wait_1k,
            "1:1 actor calls sync": actor_sync,
            "1:1 actor calls async": actor_async,
        }


class Pool(Framework):
    name = "mp.Pool"

    def start(self) -> None:
        self.pool = multiprocessing.Pool(self.num_cpus)

    def first_result(self) -> Any:
        return self.pool.apply(small_value)

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()

    def workloads(self) -> dict[str, Workload]:
        p = self.pool

        def many() -> Any:
            return [r.get() for r in [p.apply_async(small_value) for _ in range(1000)]]

        return {
            "single client tasks sync": lambda: ((lambda: p.apply(small_value)), 1, "per second"),
            "single client tasks async": lambda: (many, 1000, "per second"),
            "single client tasks and get batch": lambda: (many, 1, "per second"),
        }


class PPE(Framework):
    name = "ProcessPool"

    def start(self) -> None:
        self.ex = cf.ProcessPoolExecutor(self.num_cpus)

    def first_result(self) -> Any:
        return self.ex.submit(small_value).result()

    def stop(self) -> None:
        self.ex.shutdown(wait=True)

    def workloads(self) -> dict[str, Workload]:
        ex = self.ex

        def many() -> Any:
            return [f.result() for f in [ex.submit(small_value) for _ in range(1000)]]

        def wait_1k():
            def run():
                not_ready = [ex.submit(small_value) for _ in range(1000)]
                while not_ready:
                    done, _ = cf.wait(not_ready, return_when=cf.FIRST_COMPLETED)
                    first = next(iter(done))
                    not_ready = [x for x in not_ready if x is not first]

            return run, 1, "per second"

        return {
            "single client tasks sync": lambda: (
                (lambda: ex.submit(small_value).result()),
                1,
                "per second",
            ),
            "single client tasks async": lambda: (many, 1000, "per second"),
            "single client tasks and get batch": lambda: (many, 1, "per second"),
            "single client wait 1k refs": wait_1k,
        }


FRAMEWORKS = ("rtml", "ray", "dask", "mp.Pool", "ProcessPool")


def make(name: str, num_cpus: int) -> Framework:
    if name in ("rtml", "ray"):
        return RayLike(num_cpus, name)
    return {"dask": Dask, "mp.Pool": Pool, "ProcessPool": PPE}[name](num_cpus)
