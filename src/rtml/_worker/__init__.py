"""Worker processes: the task executor and the actor host.

Floor 3, beside the node (docs/architecture.md): imports floors 0-2, never ``_node``;
it speaks to the node in messages only.
"""
