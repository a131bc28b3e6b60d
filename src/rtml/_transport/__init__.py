"""Message framing and connections between the node and the processes it serves.

Floor 1, leaves (docs/architecture.md): imports only floor 0 and the other leaves.
"""

from rtml._transport._channel import MAX_FRAME, BlockingChannel, FrameError, NodeChannel

__all__ = ["MAX_FRAME", "BlockingChannel", "FrameError", "NodeChannel"]
