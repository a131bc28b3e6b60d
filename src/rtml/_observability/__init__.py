"""Observability: task events, the timeline, state listings and the dashboard's data.

Everything here reads a ``StateSource`` (``_source.py``): the embedded runtime's in-process
node, or a cluster's control plane and nodes; nothing here changes the runtime's state.

Floor 5 (docs/architecture.md): imports the node, the runtime and the floors below,
never ``_api``; the process floor hands it its source (``set_current_source``).
"""
