"""Progress for many refs: ``progress(refs)`` yields them as they finish, with a bar.

::

    refs ──▶ wait(pending, num_returns=1, timeout=interval) ──▶ whatever else is ready now
              │ (timed out: redraw, so rate and ETA move)        (wait(..., timeout=0))
              ▼                                                           │
    bar.update(n) ◀───────────────────────── yield each finished ref ◀───┘

The bar is tqdm's when tqdm is installed (it is optional: ``pip install tqdm``), else one
self-drawn line on stderr: ``desc: 40/100 (40%) 12.5/s elapsed 0:03 eta 0:04``. A failed task
counts as finished; its error is raised by ``get`` as usual (``values=True`` and
``progress_get`` call it).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import rtml
from rtml import exceptions as exc

__all__ = ["format_line", "progress", "progress_get"]

_REDRAW_S = 0.1  # how long to wait for a result before redrawing (rate, elapsed, ETA)


def _clock_text(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_line(desc: str | None, n: int, total: int | None, elapsed: float) -> str:
    """The text of the fallback bar, e.g. ``train: 40/100 (40%) 12.5/s elapsed 0:03 eta 0:04``.

    Args:
        desc: label in front (None: none).
        n: finished so far.
        total: how many in all (None: unknown, no percentage or ETA).
        elapsed: seconds since the start.

    Returns:
        One line, without a line ending.
    """
    head = f"{desc}: " if desc else ""
    rate = n / elapsed if elapsed > 0 else 0.0
    if total is None:
        return f"{head}{n} {rate:.1f}/s elapsed {_clock_text(elapsed)}"
    pct = 100 * n // total if total else 100
    eta = _clock_text((total - n) / rate) if rate > 0 else "?"
    return f"{head}{n}/{total} ({pct}%) {rate:.1f}/s elapsed {_clock_text(elapsed)} eta {eta}"


class _TextBar:
    """The fallback bar: one line, redrawn in place on a terminal.

    On a terminal it redraws at most every 0.1 s; into a file or pipe it writes a new line at
    most every ``log_every`` seconds, so logs stay short. The first and last states are
    always written.
    """

    def __init__(
        self,
        total: int | None,
        desc: str | None,
        file: TextIO | None,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = 10.0,
    ) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.file = file if file is not None else sys.stderr
        try:
            self.tty = bool(self.file.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.clock = clock
        self.start = self.last = clock()
        self.every = 0.1 if self.tty else log_every
        self.width = 0
        self.closed = False
        self._write(force=True)

    def _write(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < self.every:
            return
        self.last = now
        line = format_line(self.desc, self.n, self.total, now - self.start)
        try:
            if self.tty:
                self.file.write("\r" + line.ljust(self.width))
                self.width = len(line)
            else:
                self.file.write(line + "\n")
            self.file.flush()
        except (OSError, ValueError):  # the stream was closed under us: drop the bar
            self.closed = True

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.closed:
            self._write()

    def refresh(self) -> None:
        if not self.closed:
            self._write()

    def close(self) -> None:
        if self.closed:
            return
        self._write(force=True)
        self.closed = True
        if self.tty:
            try:
                self.file.write("\n")
                self.file.flush()
            except (OSError, ValueError):
                pass


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _make_bar(total: int | None, desc: str | None, file: TextIO | None, disable: bool) -> Any:
    if disable:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(total, desc, file)
    return tqdm(total=total, desc=desc, file=file)


def _as_refs(refs: Any) -> list[rtml.ObjectRef]:
    if isinstance(refs, rtml.ObjectRef):
        return [refs]
    if isinstance(refs, (str, bytes)) or not isinstance(refs, Iterable):
        raise TypeError(
            f"progress() takes ObjectRefs (a list, or any iterable of them), got "
            f"{type(refs).__name__}"
        )
    out = list(refs)
    for r in out:
        if not isinstance(r, rtml.ObjectRef):
            raise TypeError(
                f"progress() takes ObjectRefs; the list holds a {type(r).__name__} ({r!r:.80})"
            )
    return out


def progress(
    refs: Any,
    *,
    desc: str | None = None,
    total: int | None = None,
    file: TextIO | None = None,
    disable: bool = False,
    values: bool = False,
    timeout: float | None = None,
) -> Iterator[Any]:
    """Yield refs as their tasks finish (in finishing order) while showing a progress bar.

    Works for a list of refs, a single ref, or an ObjectRefGenerator (each value counts once
    it is produced). The bar is tqdm's if tqdm is installed, else a line on ``file``.

    Example::

        for ref in rtml.util.progress(refs, desc="simulate"):
            handle(rtml.get(ref))

    Args:
        refs: the ObjectRefs to follow (a ref listed twice is yielded twice).
        desc: label of the bar.
        total: the number shown as the total (default: the number of refs; for a generator,
            unknown unless given).
        file: where the bar is drawn (default: stderr).
        disable: draw nothing, just yield.
        values: yield each ref's value instead of the ref (a failed task's error is raised
            when its turn comes, as ``get`` raises it).
        timeout: seconds to wait in all (None: no limit).

    Returns:
        An iterator; the bar closes when it is exhausted, closed or garbage collected.

    Raises:
        TypeError: ``refs`` is not made of ObjectRefs (raised by the call itself).
        GetTimeoutError: ``timeout`` passed before every ref finished.
        TaskError and the other ``get`` errors: with ``values=True``, for a failed ref.
    """
    if isinstance(refs, rtml.ObjectRefGenerator):
        return _follow_stream(refs, desc, total, file, disable, values, timeout)
    return _follow(_as_refs(refs), desc, total, file, disable, values, timeout)


def _follow(
    refs: list[rtml.ObjectRef],
    desc: str | None,
    total: int | None,
    file: TextIO | None,
    disable: bool,
    values: bool,
    timeout: float | None,
) -> Iterator[Any]:
    copies = Counter(refs)  # wait() takes each ref once
    pending = list(copies)
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = _make_bar(len(refs) if total is None else total, desc, file, disable)
    try:
        while pending:
            step = _REDRAW_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    raise exc.GetTimeoutError(
                        f"progress() timed out after {timeout} s with {len(pending)} of "
                        f"{len(copies)} refs unfinished; raise the timeout, or drop it to wait "
                        "for as long as they take"
                    )
            ready, pending = rtml.wait(pending, num_returns=1, timeout=step)
            if not ready:
                bar.refresh()  # nothing finished: move the elapsed time, rate and ETA
                continue
            if pending:  # take everything else that is done by now in the same round
                more, pending = rtml.wait(pending, num_returns=len(pending), timeout=0)
                ready += more
            for ref in ready:
                for _ in range(copies[ref]):
                    bar.update(1)
                    yield rtml.get(ref) if values else ref
    finally:
        bar.close()


def _follow_stream(
    gen: rtml.ObjectRefGenerator,
    desc: str | None,
    total: int | None,
    file: TextIO | None,
    disable: bool,
    values: bool,
    timeout: float | None,
) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = _make_bar(total, desc, file, disable)
    try:
        while True:
            step = _REDRAW_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    raise exc.GetTimeoutError(
                        f"progress() timed out after {timeout} s waiting for the generator's "
                        "next value"
                    )
            try:
                ref = gen._next_sync(step)
            except exc.GetTimeoutError:
                bar.refresh()
                continue
            except StopIteration:
                return
            bar.update(1)
            yield rtml.get(ref) if values else ref
    finally:
        bar.close()


def progress_get(
    refs: Any,
    *,
    desc: str | None = None,
    total: int | None = None,
    file: TextIO | None = None,
    disable: bool = False,
    timeout: float | None = None,
) -> Any:
    """``rtml.get(refs)`` with a progress bar while the tasks finish.

    Args:
        refs: an ObjectRef or a list of them (their values come back in this order).
        desc, total, file, disable, timeout: as for ``progress``.

    Returns:
        The value of ``refs`` (a ref) or the list of values (a list), as ``rtml.get``.

    Raises:
        GetTimeoutError: ``timeout`` passed before every ref finished.
        TaskError and the other ``get`` errors: a task failed (raised once all have finished,
            for the first failed ref in order, as ``rtml.get`` does).
    """
    single = isinstance(refs, rtml.ObjectRef)
    ref_list = _as_refs(refs)
    for _ in _follow(ref_list, desc, total, file, disable, False, timeout):
        pass
    result = rtml.get(ref_list)
    return result[0] if single else result
