"""``rtml.serve``: Ray Serve's API on rtml (``from rtml import serve`` as ``from ray import
serve``): deployments, composition, HTTP ingress, batching, multiplexing, autoscaling and hot
swaps that never block a request. See ``rtml.serve._api`` for how requests flow."""

from rtml.serve import exceptions
from rtml.serve._api import (
    Application,
    ApplicationStatusOverview,
    Deployment,
    DeploymentStatusOverview,
    ServeStatus,
    delete,
    deployment,
    get_app_handle,
    get_deployment_handle,
    ingress,
    reconfigure,
    run,
    shutdown,
    start,
    status,
)
from rtml.serve._batch import batch
from rtml.serve._handle import DeploymentHandle, DeploymentResponse
from rtml.serve._multiplex import get_multiplexed_model_id, multiplexed

__all__ = [
    "Application",
    "ApplicationStatusOverview",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentStatusOverview",
    "ServeStatus",
    "batch",
    "delete",
    "deployment",
    "exceptions",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "ingress",
    "multiplexed",
    "reconfigure",
    "run",
    "shutdown",
    "start",
    "status",
]
