"""The node's stream table on its own: items counted, readers woken, dropped items handed back."""

from __future__ import annotations

import pytest

from rtml._node._streams import StreamTable
from rtml._protocol._ids import return_id

T = 7 << 40 | 1


def test_items_are_read_in_order_and_the_stream_is_forgotten_once_read_to_the_end():
    table = StreamTable()
    table.open(T, owner=3)
    woken = []
    assert table.next(T, 0) == (False, None)
    table.wait(T, lambda: woken.append(1))
    s, oid = table.produce(T)
    assert s is not None
    assert oid == return_id(T, 1)
    table.wake(s)
    assert woken == [1]
    assert table.next(T, 0) == (True, return_id(T, 1))
    table.validate({T: "live"})
    table.end(T)
    table.validate({})
    assert table.next(T, 1) == (True, None)
    assert T not in table


def test_dropping_hands_back_the_unread_items_and_forgets_a_finished_stream():
    table = StreamTable()
    table.open(T, owner=3)
    for _ in range(3):
        table.produce(T)
    table.end(T)
    assert table.drop(T, 1) == (3, [return_id(T, 2), return_id(T, 3)])
    assert T not in table
    assert table.produce(T) == (None, return_id(T, 1))  # late items: no stream, nothing held
    table.validate({})


def test_validate_finds_a_stream_that_outlived_its_task():
    table = StreamTable()
    table.open(T, owner=3)
    with pytest.raises(AssertionError, match="outlived"):
        table.validate({})
