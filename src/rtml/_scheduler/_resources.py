"""Resource accounting for one node.

Quantities are kept in fixed point (1/10,000 of a unit, as Ray does) so fractional CPUs and GPUs
add and subtract exactly. GPUs are also tracked per device, so every task using GPUs gets device
ids (fractional requests share one device; whole requests get whole devices).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SCALE = 10_000


def _fx(x: float) -> int:
    return round(x * _SCALE)


def normalize_request(
    num_cpus: float | None,
    num_gpus: float | None,
    resources: Mapping[str, float] | None,
    default_cpus: float = 1.0,
    memory: float | None = None,
) -> dict[str, float]:
    """Validate and merge resource options into one request dict (zero entries dropped).

    ``memory`` (bytes, Ray's ``memory=`` option) is the resource ``"memory"``, as in Ray.

    Raises:
        ValueError: a quantity is negative, not a number, finer than 0.0001 (Ray's precision),
            or a whole-GPU request is fractional above one, or ``resources`` names CPU/GPU
            (use num_cpus/num_gpus).
        TypeError: ``memory`` is not a number.
    """
    req: dict[str, float] = {}
    cpus = default_cpus if num_cpus is None else num_cpus
    for name, val in (("num_cpus", cpus), ("num_gpus", num_gpus or 0)):
        if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
            raise ValueError(f"{name} must be a non-negative number, got {val!r}")
        _check_precision(name, val)
    if num_gpus and num_gpus > 1 and num_gpus != int(num_gpus):
        raise ValueError(f"num_gpus above 1 must be a whole number, got {num_gpus}")
    if cpus:
        req["CPU"] = float(cpus)
    if num_gpus:
        req["GPU"] = float(num_gpus)
    for name, val in (resources or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"resource names must be non-empty strings, got {name!r}")
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus instead of resources={{{name!r}: ...}}")
        if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
            raise ValueError(f"resource {name!r} must be a non-negative number, got {val!r}")
        _check_precision(name, val)
        if val:
            req[name] = float(val)
    if memory is not None:
        if not isinstance(memory, (int, float)) or isinstance(memory, bool):
            raise TypeError(
                f"The type of keyword 'memory' must be a number of bytes (int or float), "
                f"got {type(memory).__name__} {memory!r}"
            )
        if not memory >= 0 or memory == float("inf"):  # (also refuses NaN)
            raise ValueError(
                f"The quantity of resource memory must be a finite, non-negative number of "
                f"bytes, got {memory!r}"
            )
        _check_precision("memory", memory)
        if memory:
            req["memory"] = float(memory)
    return req


def _check_precision(name: str, val: float) -> None:
    """As Ray: a fractional amount that rounds to no fixed-point unit at all is refused."""
    if isinstance(val, float) and val != 0.0 and int(val * _SCALE) == 0:
        raise ValueError(
            f"The precision of the fractional quantity of resource {name} cannot go beyond "
            f"0.0001 (got {val!r})"
        )


def shape_key(req: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(req.items()))


@dataclass
class Allocation:
    """What one lease holds: fixed-point amounts and the GPU ids it was given."""

    amounts: dict[str, int]
    gpu_ids: list[int] = field(default_factory=list)
    gpu_shares: dict[int, int] = field(default_factory=dict)


class ResourcePool:
    """Totals and availability of one node's resources."""

    def __init__(self, total: Mapping[str, float]) -> None:
        self.total = {k: _fx(v) for k, v in total.items() if v > 0}
        self.available = dict(self.total)
        ngpu = self.total.get("GPU", 0) // _SCALE
        self.gpu_free = [_SCALE] * ngpu  # per device, fixed point
        self._fx_cache: dict[tuple[Any, ...], tuple[tuple[str, int], ...]] = {}

    def _fixed(self, req: Mapping[str, float]) -> tuple[tuple[str, int], ...]:
        # Requests come from a few resource shapes reused by every task: convert each once.
        key = tuple(req.items())
        fx = self._fx_cache.get(key)
        if fx is None:
            fx = self._fx_cache[key] = tuple((k, _fx(v)) for k, v in key)
        return fx

    def feasible(self, req: Mapping[str, float]) -> bool:
        """Could this request ever be satisfied on this node (against totals)?"""
        total = self.total
        return all(total.get(k, 0) >= v for k, v in self._fixed(req))

    def fits(self, req: Mapping[str, float]) -> bool:
        av = self.available
        for k, v in self._fixed(req):
            if av.get(k, 0) < v:
                return False
        if "GPU" in req:
            return self._pick_gpus(_fx(req["GPU"])) is not None
        return True

    def room_for(self, req: Mapping[str, float]) -> int:
        """How many more leases of this shape fit now (a large number for empty requests)."""
        room = 1 << 30
        av = self.available
        for k, need in self._fixed(req):
            if need:
                room = min(room, max(av.get(k, 0), 0) // need)
        return room

    def _pick_gpus(self, amount: int) -> dict[int, int] | None:
        if amount < _SCALE:  # fractional: one device with enough left, fullest first
            best = None
            for i, free in enumerate(self.gpu_free):
                if free >= amount and (best is None or free < self.gpu_free[best]):
                    best = i
            return None if best is None else {best: amount}
        need = amount // _SCALE
        whole = [i for i, free in enumerate(self.gpu_free) if free == _SCALE]
        if len(whole) < need:
            return None
        return {i: _SCALE for i in whole[:need]}

    def acquire(self, req: Mapping[str, float]) -> Allocation | None:
        """Take the request if it fits now; None otherwise."""
        if not self.fits(req):
            return None
        amounts = dict(self._fixed(req))
        for k, v in amounts.items():
            self.available[k] -= v
        alloc = Allocation(amounts)
        if "GPU" in amounts:
            shares = self._pick_gpus(amounts["GPU"])
            assert shares is not None
            for i, s in shares.items():
                self.gpu_free[i] -= s
            alloc.gpu_shares = shares
            alloc.gpu_ids = sorted(shares)
        return alloc

    def release(self, alloc: Allocation) -> None:
        for k, v in alloc.amounts.items():
            self.available[k] += v
        for i, s in alloc.gpu_shares.items():
            self.gpu_free[i] += s

    def release_cpu(self, alloc: Allocation) -> int:
        """A worker blocked in get lends its CPUs back; returns the amount lent."""
        cpu = alloc.amounts.get("CPU", 0)
        self.available["CPU"] = self.available.get("CPU", 0) + cpu
        return cpu

    def reacquire_cpu(self, amount: int) -> None:
        """Take lent CPUs back even if that oversubscribes briefly (as Ray does)."""
        self.available["CPU"] = self.available.get("CPU", 0) - amount

    def totals(self) -> dict[str, float]:
        return {k: v / _SCALE for k, v in self.total.items()}

    def availability(self) -> dict[str, float]:
        return {k: max(v, 0) / _SCALE for k, v in self.available.items() if k in self.total}

    def validate(self) -> None:
        for k, v in self.available.items():
            assert v <= self.total.get(k, 0), f"{k}: available {v} > total"
        for free in self.gpu_free:
            assert 0 <= free <= _SCALE
        if self.gpu_free:
            assert sum(self.gpu_free) == self.available.get("GPU", 0), "GPU ids out of sync"
