"""Publish/subscribe for control-plane changes: pure bookkeeping, no I/O.

::

    subscribe(sub, channel) ──▶ channel → {subscribers}   sub → {channels}
    publish(channel, msg)   ──▶ [(sub, channel, msg) for every subscriber of channel]
                                  └─▶ the server sends each as ("pub", channel, msg)

Subscribers are opaque, hashable handles (the server uses its connection ids). Deliveries come
out in subscription order, so tests and logs are deterministic. Channels in use:

- ``"nodes"``: ``("node_added" | "node_updated" | "node_dead", NodeInfo)``
- ``"jobs"``: ``("job_added" | "job_finished", JobInfo)``
- ``"actors"`` and ``"actor:<id>"``: ``("actor_state", ActorInfo)``, ``("actor_removed", id)``
- ``"obj:<oid>"``: ``("location_added" | "location_removed", ObjectEntry)``,
  ``("object_removed", oid)``; an entry with no ``nodes`` left means every copy is lost.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from rtml._control._records import Ident, key_of

NODES = "nodes"
JOBS = "jobs"
ACTORS = "actors"
_MAX_CHANNEL = 256

Delivery = tuple[Hashable, str, Any]


def object_channel(oid: Ident) -> str:
    """The channel of one object's location changes."""
    return "obj:" + key_of(oid)


def actor_channel(actor_id: Ident) -> str:
    """The channel of one actor's state changes (also published on ``"actors"``)."""
    return "actor:" + key_of(actor_id)


class PubSub:
    """Who listens to what; ``publish`` says who gets a message, the caller delivers it."""

    def __init__(self) -> None:
        self._subs: dict[str, dict[Hashable, None]] = {}  # ordered sets
        self._channels: dict[Hashable, dict[str, None]] = {}

    @staticmethod
    def _check(channel: Any) -> str:
        if not isinstance(channel, str) or not channel or len(channel) > _MAX_CHANNEL:
            raise ValueError(
                f"a channel is a non-empty str of at most {_MAX_CHANNEL} "
                f"characters, got {channel!r}"
            )
        return channel

    def subscribe(self, subscriber: Hashable, channel: str) -> bool:
        """Returns False if ``subscriber`` already listened to ``channel``."""
        self._check(channel)
        subs = self._subs.setdefault(channel, {})
        if subscriber in subs:
            return False
        subs[subscriber] = None
        self._channels.setdefault(subscriber, {})[channel] = None
        return True

    def unsubscribe(self, subscriber: Hashable, channel: str) -> bool:
        """Returns False if ``subscriber`` did not listen to ``channel``."""
        subs = self._subs.get(channel)
        if subs is None or subscriber not in subs:
            return False
        del subs[subscriber]
        if not subs:
            del self._subs[channel]
        chans = self._channels[subscriber]
        del chans[channel]
        if not chans:
            del self._channels[subscriber]
        return True

    def drop(self, subscriber: Hashable) -> int:
        """Forget a subscriber (its connection closed); returns how many channels it had."""
        chans = list(self._channels.get(subscriber, ()))
        for channel in chans:
            self.unsubscribe(subscriber, channel)
        return len(chans)

    def publish(self, channel: str, message: Any) -> list[Delivery]:
        subs = self._subs.get(channel)
        if not subs:
            return []
        return [(s, channel, message) for s in subs]

    def subscribers(self, channel: str) -> list[Hashable]:
        return list(self._subs.get(channel, ()))

    def channels(self, subscriber: Hashable) -> list[str]:
        return list(self._channels.get(subscriber, ()))

    def __len__(self) -> int:
        """Number of subscribers with at least one channel."""
        return len(self._channels)

    def validate(self) -> None:
        pairs = {(s, c) for c, subs in self._subs.items() for s in subs}
        assert pairs == {(s, c) for s, chans in self._channels.items() for c in chans}
        assert all(self._subs.values()) and all(self._channels.values()), "empty entries kept"
