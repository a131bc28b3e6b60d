"""Task event kinds: the state a task attempt's event records (``_observability`` builds the
events, the node records which kind happened)."""

from __future__ import annotations

FINISHED, FAILED, RETRIED, CANCELLED, FORWARDED = (
    "FINISHED",
    "FAILED",
    "RETRIED",
    "CANCELLED",
    "FORWARDED",
)
