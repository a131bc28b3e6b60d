"""Utilities built on actors (as ``ray.util``): ``ActorPool`` and ``queue.Queue``."""

from rtml.util import queue
from rtml.util.actor_pool import ActorPool

__all__ = ["ActorPool", "queue"]
