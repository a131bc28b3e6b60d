"""The per-process reference counter: which transitions the node hears about, and in what order."""

from __future__ import annotations

import pickle

from rtml._runtime._refs import ObjectRef, RefCounter, counter
from rtml._serialization import dumps


def test_transitions_are_reported_once_with_acquisitions_first():
    c = RefCounter()
    c.incr(1, registered=True)  # created by submit/put: the node already counts it
    c.incr(2, registered=False)  # deserialized: the node must hear about it
    c.incr(2, registered=False)
    c.decr(1)
    c.decr(2)
    assert c.take_updates() == ([2], [1])
    c.decr(2)
    assert c.take_updates() == ([], [2])
    assert c.take_updates() == ([], [])
    assert c.held() == {}


def test_refs_pickled_inside_values_are_recorded_and_counted():
    counter.reset()
    counter.enabled = True
    try:
        ref = ObjectRef(7 << 32)
        s = dumps({"a": [ref], "b": ref})
        assert s.contained == [7 << 32]  # pickle memoizes the second occurrence: one pin
        value = pickle.loads(s.data)
        again = value["a"][0]
        assert again is value["b"]
        assert again == ref
        assert counter.held()[7 << 32] == 2
        del value
        del ref
        assert counter.take_updates() == ([], [])  # still held by the unpickled copies
        del again
        assert counter.take_updates() == ([], [7 << 32])
    finally:
        counter.reset()
