"""Serialization of values, task arguments and results.

::

    value ──dumps──▶ Serialized(pickle bytes, out-of-band buffers, contained ref ids)
                          │ small: bytes travel inline in messages
                          │ large: written once into a shared-memory segment
    value ◀──loads── pickle bytes + buffer views (zero-copy for numpy)

Values are pickled with cloudpickle (functions, closures, lambdas) at protocol 5, so large
contiguous buffers (numpy arrays, bytes-like objects) are kept out of band and can be written
straight into shared memory. While a value is pickled, every ``ObjectRef`` inside it is recorded,
so the node can keep the referenced objects alive as long as the containing value exists.

Floor 0, vocabulary (docs/architecture.md): imports nothing of rtml above ``exceptions``.
"""

from rtml._serialization._serializer import (
    INLINE_THRESHOLD,
    SerializationError,
    Serialized,
    dumps,
    loads,
)

__all__ = [
    "INLINE_THRESHOLD",
    "SerializationError",
    "Serialized",
    "dumps",
    "loads",
]
