"""In-process sources: a Python sequence (or a function returning an iterable), optionally
paced at a fixed rate. Meant for tests, examples and benchmarks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rtml.stream._connector import Source, SourceReader
from rtml.stream._errors import StreamConfigError

__all__ = ["IterableSource"]


class IterableSource(Source):
    """The items of a sequence, or of the iterable a function returns, as a source.

    Args:
        data: a sequence (list, tuple, range...), or a function returning an iterable (called
            again to replay after a restart): with one partition it takes no argument, with
            several it is called with the partition's index. Generators cannot be replayed or
            sent to an actor: pass the function that makes one.
        partitions: the number of partitions (a sequence's item ``i`` goes to partition
            ``i % partitions``).
        rate: release items at this many per second per partition (the item's due time is
            ``start + i / rate``), e.g. to measure latency at a fixed load; None: as fast as
            they are read.

    The offset is the number of items of the partition already read.
    """

    def __init__(
        self,
        data: Sequence[Any] | Callable[[], Iterable[Any]],
        *,
        partitions: int = 1,
        rate: float | None = None,
    ) -> None:
        if hasattr(data, "__next__"):
            raise StreamConfigError(
                "IterableSource cannot replay an iterator or generator "
                "after a restart (nor send it to an actor): pass a list, "
                "or a function that returns the iterator"
            )
        if not callable(data) and not isinstance(data, Sequence):
            raise StreamConfigError(
                f"IterableSource takes a sequence or a function returning "
                f"an iterable, got {type(data).__name__}"
            )
        if not isinstance(partitions, int) or partitions < 1:
            raise StreamConfigError(f"partitions must be a positive int, got {partitions!r}")
        if rate is not None and not rate > 0:
            raise StreamConfigError(
                f"rate must be a positive number of items per second, got {rate!r}"
            )
        self.data, self.n, self.rate = data, partitions, rate

    def partitions(self) -> list[str]:
        return [str(i) for i in range(self.n)]

    def open(self, partition: str, offset: Any | None) -> SourceReader:
        i = int(partition)
        if callable(self.data):
            make: Any = self.data
            it = iter(make(i) if self.n > 1 else make())
            length = None
        else:
            seq = self.data[i :: self.n] if self.n > 1 else self.data
            it = iter(seq)
            length = len(seq)
        start = int(offset or 0)
        if start:
            it = itertools.islice(it, start, None)
        return _IterReader(it, start, length, self.rate)

    def describe(self) -> str:
        return f"IterableSource({self.n} partitions)"


class _IterReader(SourceReader):
    def __init__(self, it, pos: int, length: int | None, rate: float | None) -> None:
        self._it, self._pos, self._len, self._rate = it, pos, length, rate
        self._t0 = time.monotonic() - (pos / rate if rate else 0.0)
        self._done = False

    def read(self, max_records: int, timeout: float) -> list[Any]:
        if self._done:
            return []
        n = max_records
        if self._rate:
            due = int((time.monotonic() - self._t0) * self._rate) + 1 - self._pos
            if due <= 0:
                wait = (self._pos - (time.monotonic() - self._t0) * self._rate) / self._rate
                time.sleep(max(0.0, min(timeout, wait)))
                due = int((time.monotonic() - self._t0) * self._rate) + 1 - self._pos
                if due <= 0:
                    return []
            n = min(n, due)
        out = list(itertools.islice(self._it, n))
        self._pos += len(out)
        if len(out) < n:
            self._done = True
        return out

    def offset(self) -> int:
        return self._pos

    def done(self) -> bool:
        if not self._done and self._len is not None and self._pos >= self._len:
            self._done = True
        return self._done

    def lag(self) -> int | None:
        return None if self._len is None else self._len - self._pos

    def due_time(self, index: int) -> float:
        """When item ``index`` of this partition was released (monotonic clock)."""
        return self._t0 + index / self._rate if self._rate else self._t0
