"""rtml: a pure-Python, Ray-compatible distributed execution engine for real-time ML.

``import rtml as ray`` runs Ray core programs: remote functions and actors, ObjectRefs,
``get``/``put``/``wait``/``cancel``, resources and the exception names.

The package is built in floors, each importing only those below it (docs/architecture.md):
vocabulary (``_protocol``, ``exceptions``, ``_serialization``) < leaves (``_object_store``,
``_control``, ``_scheduler``, ``_transport``) < client core < node | worker < runtime <
observability < dashboard < process (``_api``) < this public API < its users (``util``,
``cli``, ``stream``, ``online``, ``serve``, ``rl``). ``tests/unit/test_layers.py`` keeps it so.
"""

from rtml import actor, exceptions, util
from rtml._api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_gpu_ids,
    get_runtime_context,
    init,
    is_initialized,
    nodes,
    put,
    remote,
    shutdown,
    timeline,
    wait,
)
from rtml._runtime._actor import get_actor, kill, method
from rtml._runtime._refs import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator

ObjectID = ObjectRef  # Ray's older name for it

__version__ = "0.1.0"

# The real-time ML subpackages load on first use (``rtml.serve``, as ``ray.serve``): workers
# import rtml at start and must not pay for them.
_SUBPACKAGES = ("cloudpickle", "online", "rl", "serve", "stream")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"rtml.{name}")
    raise AttributeError(f"module 'rtml' has no attribute {name!r}")


__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "__version__",
    "actor",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "util",
    "wait",
]
