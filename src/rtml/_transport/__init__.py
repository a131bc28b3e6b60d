"""Message framing and connections between the node and the processes it serves."""

from rtml._transport._channel import MAX_FRAME, BlockingChannel, FrameError, NodeChannel

__all__ = ["MAX_FRAME", "BlockingChannel", "FrameError", "NodeChannel"]
