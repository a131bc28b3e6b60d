"""``rtml.serve.exceptions`` (as ``ray.serve.exceptions``)."""

from rtml.serve._errors import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
    RequestCancelledError,
)

__all__ = [
    "BackPressureError",
    "DeploymentUnavailableError",
    "RayServeException",
    "RequestCancelledError",
]
