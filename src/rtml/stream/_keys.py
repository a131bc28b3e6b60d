"""Key groups: how keys are spread over an operator's actors, the same way in every process.

A key maps to one of ``KEY_GROUPS`` groups by a hash that does not change between processes
or runs (Python's ``hash`` of a str does), and a group to an actor by range. State is kept and
checkpointed per group, so a dataflow restarted with another parallelism hands whole groups to
their new owners.
"""

from __future__ import annotations

import zlib
from typing import Any

KEY_GROUPS = 256


def key_group(key: Any) -> int:
    if type(key) is int:
        return key % KEY_GROUPS
    if type(key) is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % KEY_GROUPS
    if type(key) is bytes:
        return zlib.crc32(key) % KEY_GROUPS
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass")) % KEY_GROUPS


def owner(kg: int, n: int) -> int:
    """The index of the actor (of ``n``) that owns key group ``kg``."""
    return kg * n // KEY_GROUPS


def owned(index: int, n: int) -> range:
    """The key groups actor ``index`` of ``n`` owns (a contiguous range)."""
    lo = -(-index * KEY_GROUPS // n)
    hi = -(-(index + 1) * KEY_GROUPS // n)
    return range(lo, hi)
