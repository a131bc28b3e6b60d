"""Serve's exceptions (Ray Serve's names): who is at fault is in the name and the message."""

from __future__ import annotations

from rtml.exceptions import RtmlError


class RayServeException(RtmlError):
    """A serve API call failed (a bad application, an unknown name, serve not running)."""


class BackPressureError(RayServeException):
    """Every replica is at ``max_ongoing_requests`` and the router's queue is full
    (``max_queued_requests``): retry later, or add replicas."""

    def __init__(
        self, num_queued_requests: int = 0, max_queued_requests: int = 0, message: str = ""
    ) -> None:
        self.num_queued_requests = num_queued_requests
        self.max_queued_requests = max_queued_requests
        super().__init__(
            message
            or (
                f"request dropped: {num_queued_requests} requests are already queued, the limit "
                f"(max_queued_requests) is {max_queued_requests}; retry later or add replicas"
            )
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (BackPressureError, (self.num_queued_requests, self.max_queued_requests, str(self)))


class DeploymentUnavailableError(RayServeException):
    """The deployment was deleted or has no replica that can take the request."""


class RequestCancelledError(RayServeException):
    """The request was cancelled before it finished."""
