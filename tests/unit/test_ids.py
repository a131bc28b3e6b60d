"""Object ids: the producing task and the index are recoverable, and ids of consecutive tasks
spread over a hash table's low bits."""

from __future__ import annotations

from rtml._protocol._ids import (
    IdGenerator,
    index_of,
    is_put,
    node_of_object,
    put_id,
    return_id,
    task_of,
)


def test_task_index_and_owner_round_trip():
    proc = (5 << 20) | 3  # node 5, local process 3
    gen = IdGenerator(proc)
    for _ in range(100):
        tid = gen.next_task_id()
        assert task_of(put_id(tid)) == tid
        assert is_put(put_id(tid))
        assert index_of(put_id(tid)) == 0
        for i in (1, 2, 7, 1 << 20):
            oid = return_id(tid, i)
            assert task_of(oid) == tid
            assert index_of(oid) == i
            assert not is_put(oid)
            assert node_of_object(oid) == 5
    assert return_id(tid, 1) != return_id(tid, 2) != put_id(tid)


def test_ids_of_one_process_spread_over_hash_slots():
    gen = IdGenerator(1)
    oids = [return_id(gen.next_task_id(), 1) for _ in range(1024)]
    # dicts and sets index by the hash's low bits: they must not be the same for every id
    assert len({hash(o) & 1023 for o in oids}) > 900
