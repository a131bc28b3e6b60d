"""What every actor understands besides its class's own methods, and how it asks to end."""

from __future__ import annotations

# Methods every actor has, besides its class's own.
TERMINATE_METHODS = ("__rtml_terminate__", "__ray_terminate__")
READY_METHODS = ("__rtml_ready__", "__ray_ready__")


class ActorExitRequest(SystemExit):
    """Raised by ``rtml.actor.exit_actor()`` in a sync actor; the actor host catches it.

    A SystemExit, so that ``except Exception`` in user code does not swallow it.
    """
