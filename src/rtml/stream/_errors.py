"""The errors of ``rtml.stream``: each names what went wrong and what to do about it."""

from __future__ import annotations

__all__ = ["ConnectorError", "StreamConfigError", "StreamError", "UserFunctionError"]


class StreamError(Exception):
    """The root of every error ``rtml.stream`` raises."""


class StreamConfigError(StreamError, ValueError):
    """A dataflow, window, join, source or sink is configured inconsistently (raised when the
    dataflow is built or started, before any event flows)."""


class ConnectorError(StreamError):
    """A source or sink cannot reach or use its external system (an unreachable broker, a
    missing file, a rejected write). Raised within the connector's timeout, never a hang."""


class UserFunctionError(StreamError):
    """A user function raised on an event; the dataflow failed (give the operator
    ``dead_letter=True`` to route such events to its ``dead_letters`` stream instead).

    Attributes:
        operator: the operator's name.
        key: the event's key, or None on an unkeyed stream.
        offset: ``(partition, offset)`` of the source record the event came from, if known.
        event: ``repr`` of the event (cut to 500 characters).
        remote_traceback: the traceback of the exception in the operator's actor.
    """

    def __init__(self, operator: str, key, offset, event: str, remote_traceback: str) -> None:
        self.operator, self.key, self.offset, self.event = operator, key, offset, event
        self.remote_traceback = remote_traceback
        where = f" key={key!r}" if key is not None else ""
        if offset is not None:
            where += f" source offset={offset!r}"
        super().__init__(
            f"operator {operator!r} raised on event {event}{where}\n"
            f"{remote_traceback}\n(to route failing events aside instead, pass "
            f"dead_letter=True to the operator and read its .dead_letters stream)"
        )

    def __reduce__(self):
        return (
            type(self),
            (self.operator, self.key, self.offset, self.event, self.remote_traceback),
        )
