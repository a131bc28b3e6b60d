"""Observability: task events, the timeline, state listings and the dashboard's data.

Everything here reads a ``StateSource`` (``_source.py``): the embedded runtime's in-process
node, or a cluster's control plane and nodes; nothing here changes the runtime's state.
"""
