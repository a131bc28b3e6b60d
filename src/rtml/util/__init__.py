"""Utilities (as ``ray.util``): ``ActorPool``, ``queue.Queue``, and ``progress`` /
``progress_get`` to watch many refs finish."""

from rtml.util import queue
from rtml.util.actor_pool import ActorPool
from rtml.util.progress import progress, progress_get

__all__ = ["ActorPool", "progress", "progress_get", "queue"]
