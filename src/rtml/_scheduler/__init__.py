"""Resource accounting and placement decisions: pure functions and state, no I/O.

Floor 1, leaves (docs/architecture.md): imports only floor 0 and the other leaves.
"""

from rtml._scheduler._resources import Allocation, ResourcePool, normalize_request, shape_key

__all__ = ["Allocation", "ResourcePool", "normalize_request", "shape_key"]
