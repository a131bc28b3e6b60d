"""Placement groups on the embedded runtime: reservation, placement in bundles, removal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tests.conftest import readme_block, wait_for

import rtml
from rtml.util.placement_group import (
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from rtml.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@rtml.remote
def pid() -> int:
    return os.getpid()


@rtml.remote
def hold(path: str) -> int:
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return 1


def test_the_readme_example_runs_as_written() -> None:
    out = subprocess.run(
        [sys.executable, "-c", readme_block("### Placement groups")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_create_place_and_remove(runtime) -> None:
    rtml.init(num_cpus=4, include_dashboard=False)
    pg = placement_group([{"CPU": 1}, {"CPU": 2}], strategy="STRICT_PACK", name="g1")
    assert rtml.get(pg.ready(), timeout=30) is True
    assert pg.wait(5)
    rec = placement_group_table()[pg.id.hex()]
    assert rec["state"] == "CREATED"
    assert rec["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 2.0}}
    assert get_placement_group("g1") == pg
    assert rtml.available_resources()["CPU"] == 1.0  # three of four reserved
    strat = PlacementGroupSchedulingStrategy(pg, 1)
    assert len(rtml.get([pid.options(scheduling_strategy=strat).remote() for _ in range(6)])) == 6
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    wait_for(lambda: rtml.available_resources().get("CPU") == 4.0, 10, what="CPUs back")
    with pytest.raises(ValueError, match="g1"):
        get_placement_group("g1")


def test_errors_at_submit(runtime) -> None:
    rtml.init(num_cpus=2, include_dashboard=False)
    with pytest.raises(ValueError, match="no resources"):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError, match="strategy"):
        placement_group([{"CPU": 1}], strategy="CLOSE")
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(ValueError, match="out of range"):
        pid.options(placement_group=pg, placement_group_bundle_index=1).remote()
    with pytest.raises(ValueError, match="more than bundle 0"):
        pid.options(
            num_cpus=2, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)
        ).remote()
    remove_placement_group(pg)


def test_pending_until_resources_return_and_work_waits_with_it(runtime) -> None:
    rtml.init(num_cpus=2, include_dashboard=False)
    first = placement_group([{"CPU": 2}])
    assert first.wait(30)
    second = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert not second.wait(0.3)
    assert placement_group_table(second)["state"] == "PENDING"
    waiting = pid.options(placement_group=second).remote()  # waits, does not fail
    done, _ = rtml.wait([waiting], timeout=0.3)
    assert done == []
    remove_placement_group(first)
    assert second.wait(30)
    assert isinstance(rtml.get(waiting, timeout=30), int)
    remove_placement_group(second)


def test_removing_a_group_kills_its_actor_and_tasks(runtime, gate_path) -> None:
    rtml.init(num_cpus=2, include_dashboard=False)
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)

    @rtml.remote(num_cpus=1)
    class A:
        def ping(self) -> str:
            return "pong"

    a = A.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    assert rtml.get(a.ping.remote(), timeout=30) == "pong"
    remove_placement_group(pg)
    with pytest.raises(rtml.exceptions.RayActorError):
        wait_for(lambda: rtml.get(a.ping.remote(), timeout=10) and False, 20, what="actor dead")
    wait_for(lambda: rtml.available_resources().get("CPU") == 2.0, 10, what="CPUs back")
    pg2 = placement_group([{"CPU": 1}])
    assert pg2.wait(30)
    ref = hold.options(placement_group=pg2, max_retries=0).remote(str(gate_path))
    wait_for(lambda: f"CPU_group_{pg2.id.hex()}" not in rtml.available_resources(), 20)
    remove_placement_group(pg2)
    with pytest.raises(rtml.exceptions.RayError):
        rtml.get(ref, timeout=30)


@rtml.remote
def child_group() -> str | None:
    from rtml.util.placement_group import get_current_placement_group

    pg = get_current_placement_group()
    return None if pg is None else pg.id.hex()


@rtml.remote
def parent() -> tuple:
    from rtml.util.placement_group import get_current_placement_group

    here = get_current_placement_group()
    return (None if here is None else here.id.hex(), rtml.get(child_group.remote(), timeout=30))


def test_child_tasks_are_captured_only_when_asked(runtime) -> None:
    rtml.init(num_cpus=3, include_dashboard=False)  # one CPU left outside the group
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    me = pg.id.hex()
    assert rtml.get(child_group.remote(), timeout=30) is None
    captured = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    assert rtml.get(parent.options(scheduling_strategy=captured).remote(), timeout=60) == (me, me)
    free = PlacementGroupSchedulingStrategy(pg)
    assert rtml.get(parent.options(scheduling_strategy=free).remote(), timeout=60) == (me, None)
    remove_placement_group(pg)


def test_not_available_in_local_mode(runtime) -> None:
    rtml.init(local_mode=True)
    with pytest.raises(NotImplementedError, match="embedded runtime"):
        placement_group([{"CPU": 1}])


def test_an_actor_waits_for_its_pending_group(runtime) -> None:
    rtml.init(num_cpus=2, include_dashboard=False)
    first = placement_group([{"CPU": 2}], strategy="STRICT_PACK")
    assert first.wait(30)
    later = placement_group([{"CPU": 1}], name="later")

    @rtml.remote(num_cpus=1)
    class B:
        def where(self) -> str | None:
            return "placed"

    b = B.options(placement_group=later).remote()  # waits with its group, does not die
    done, _ = rtml.wait([b.where.remote()], timeout=0.3)
    assert done == []
    remove_placement_group(first)
    assert rtml.get(b.where.remote(), timeout=30) == "placed"
    assert placement_group_table(get_placement_group("later"))["state"] == "CREATED"
    remove_placement_group(later)
