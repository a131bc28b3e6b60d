"""Lineage bookkeeping (pure state): specs live exactly as long as a reference reaches one of
their results or a result downstream of them."""

from __future__ import annotations

import random

from rtml._node._lineage import Lineage, is_put
from rtml._protocol._ids import put_id, return_id
from rtml._protocol._spec import TaskSpec


def spec(tid, deps=(), n=1, retries=3, contained=()):
    return TaskSpec(
        tid, "f", f"t{tid}", b"", tuple(deps), tuple(contained), n, {}, retries, False, 1, None
    )


def owned(_oid):
    return True


def test_is_put():
    assert is_put(put_id(5))
    assert not is_put(return_id(5, 1))


def test_chain_lives_while_its_tail_is_referenced():
    lin = Lineage()
    lin.record(spec(1), owned)
    lin.record(spec(2, [return_id(1, 1)]), owned)
    lin.record(spec(3, [return_id(2, 1)]), owned)
    assert lin.return_freed(return_id(1, 1)) == []
    assert lin.return_freed(return_id(2, 1)) == []
    assert 1 in lin
    assert 2 in lin
    assert 3 in lin
    lin.validate()
    lin.return_freed(return_id(3, 1))
    assert len(lin) == 0
    assert sorted(lin.take_dropped()) == [1, 2, 3]
    assert lin.take_dropped() == []


def test_put_inputs_are_pinned_until_the_lineage_goes():
    lin = Lineage()
    p = put_id(9)
    assert lin.record(spec(1, [p, p]), owned) == [p, p]
    assert lin.record(spec(2, [put_id(10)]), lambda o: False) == []  # borrowed: not pinned
    assert lin.return_freed(return_id(1, 1)) == [p, p]


def test_recreated_returns_count_again():
    lin = Lineage()
    lin.record(spec(1, n=2), owned)
    lin.record(spec(2, [return_id(1, 1)]), owned)
    lin.return_freed(return_id(1, 1))
    lin.return_freed(return_id(1, 2))
    lin.return_created(return_id(1, 1))  # rebuilt for task 2
    lin.return_freed(return_id(2, 1))
    assert 1 in lin
    lin.return_freed(return_id(1, 1))
    assert len(lin) == 0


def test_retries_are_spent_per_rebuild():
    lin = Lineage()
    lin.record(spec(1, retries=1), owned)
    lin.record(spec(2, retries=-1), owned)
    lin.record(spec(3, retries=0), owned)
    assert lin.spend_retry(1)
    assert not lin.spend_retry(1)
    assert all(lin.spend_retry(2) for _ in range(100))
    assert not lin.spend_retry(3)
    assert not lin.spend_retry(99)


def test_random_dags_drop_everything_once_all_results_are_freed():
    rng = random.Random(7)
    for _ in range(50):
        lin = Lineage()
        live = []
        for tid in range(1, 60):
            deps = [o for o in rng.sample(live, min(len(live), rng.randint(0, 3)))]
            n = rng.randint(1, 2)
            lin.record(spec(tid, deps, n=n), owned)
            live.extend(return_id(tid, i) for i in range(1, n + 1))
            lin.validate()
        rng.shuffle(live)
        for oid in live:
            lin.return_freed(oid)
            lin.validate()
        assert len(lin) == 0
        assert not lin.live
        assert not lin.parents
        assert not lin.pins
        assert sorted(lin.take_dropped()) == list(range(1, 60))
