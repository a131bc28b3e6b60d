"""Payload kinds: how an object's value is held, in the node's table and in every message.

::

    INLINE  pickled bytes, carried in the message itself
    SHM     a path of a shared-memory segment on this machine (``_object_store``)
    ERR     a pickled exception: reading the object raises it
    REMOTE  cluster: the value is on another node; payload = (node id, size or None)
    OOB     local mode only: (pickle bytes, [out-of-band buffer bytes]), never leaves the driver

``PayloadKind`` names the set. Messages and tables carry the plain ``int`` values (the
constants below): an int pickles in two bytes and compares at C speed, an Enum member would be
pickled as a call; ``PayloadKind(kind)`` turns one back into its name.
"""

from __future__ import annotations

import enum


@enum.unique
class PayloadKind(enum.IntEnum):
    INLINE = 0
    SHM = 1
    ERR = 2
    REMOTE = 3
    OOB = 4


INLINE: int = PayloadKind.INLINE.value
SHM: int = PayloadKind.SHM.value
ERR: int = PayloadKind.ERR.value
REMOTE: int = PayloadKind.REMOTE.value
OOB: int = PayloadKind.OOB.value
