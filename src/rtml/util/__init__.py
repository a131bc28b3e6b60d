"""Utilities (as ``ray.util``): ``ActorPool``, ``queue.Queue``, ``progress`` /
``progress_get`` to watch many refs finish, and ``state`` to list tasks, actors and objects."""

from rtml.util import queue, state
from rtml.util.actor_pool import ActorPool
from rtml.util.progress import progress, progress_get

__all__ = ["ActorPool", "progress", "progress_get", "queue", "state"]
