"""Resource accounting and placement decisions: pure functions and state, no I/O."""

from rtml._scheduler._resources import Allocation, ResourcePool, normalize_request, shape_key

__all__ = ["Allocation", "ResourcePool", "normalize_request", "shape_key"]
