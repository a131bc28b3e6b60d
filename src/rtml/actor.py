"""Actor helpers (``rtml.actor``, as ``ray.actor``): ``exit_actor`` and the handle classes."""

from __future__ import annotations

from rtml import exceptions as exc
from rtml._protocol._actor import ActorExitRequest
from rtml._runtime import _context
from rtml._runtime._actor import ActorClass, ActorHandle, ActorMethod


def exit_actor() -> None:
    """Exit the current actor once the method that calls this returns.

    The calling method's ref raises ActorDiedError (RayActorError), as in Ray; calls queued behind it, and any made later, fail with
    ActorDiedError saying that the actor exited. The actor is not restarted, and its process
    runs its atexit handlers before exiting.

    Raises:
        TypeError: called outside an actor (in the driver or a task).
    """
    client = _context.get_client()
    if client is None or getattr(client, "current_actor_id", None) is None:
        raise TypeError(
            "exit_actor() can only be called inside an actor's method; to stop "
            "an actor from outside, use rtml.kill(handle) or "
            "handle.__rtml_terminate__.remote()"
        )
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ActorExitRequest(0) from None
    raise exc.AsyncioActorExit()


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]
