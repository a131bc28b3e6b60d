"""What PPO and ES share: a progress line, atomic checkpoint files, a returns window."""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from typing import Any, TextIO

__all__ = ["ProgressLine", "load_state", "save_state"]


class ProgressLine:
    """One line of training progress on stderr, redrawn in place on a terminal.

    ``PPO it 12 | env steps 24,576/300,000 (8%) | return 178.3 | 9,870 steps/s | eta 0:31``.
    Into a file or pipe a new line is written at most every ``log_every`` seconds (and the
    last state when closed).
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        file: TextIO | None = None,
        enabled: bool = True,
        log_every: float = 10.0,
    ) -> None:
        self.desc, self.total, self.enabled = desc, total, enabled
        self.file = file if file is not None else sys.stderr
        try:
            self.tty = bool(self.file.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.every = 0.1 if self.tty else log_every
        self.start = time.monotonic()
        self.last = -1e9
        self.width = 0
        self.text = ""

    def update(
        self, it: int, done: int, ret: float | None, rate: float, force: bool = False
    ) -> None:
        """Redraw with iteration ``it``, ``done`` env steps so far, mean return ``ret``."""
        if not self.enabled:
            return
        parts = [f"{self.desc} it {it}"]
        if self.total:
            parts.append(f"env steps {done:,}/{self.total:,} ({100 * done // self.total}%)")
        else:
            parts.append(f"env steps {done:,}")
        parts.append("return ?" if ret is None else f"return {ret:.1f}")
        parts.append(f"{rate:,.0f} steps/s")
        if self.total and rate > 0:
            s = int(max(0, self.total - done) / rate)
            parts.append(f"eta {s // 60}:{s % 60:02d}")
        self.text = " | ".join(parts)
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        self._write()

    def _write(self) -> None:
        try:
            if self.tty:
                self.file.write("\r" + self.text.ljust(self.width))
                self.width = len(self.text)
            else:
                self.file.write(self.text + "\n")
            self.file.flush()
        except (OSError, ValueError):
            self.enabled = False

    def close(self) -> None:
        """Write the last state (and end the line on a terminal)."""
        if not self.enabled or not self.text:
            return
        if not self.tty and time.monotonic() - self.last < 1e-3:
            return  # just written
        self._write()
        if self.tty:
            try:
                self.file.write("\n")
                self.file.flush()
            except (OSError, ValueError):
                pass
        self.enabled = False


def save_state(state: dict[str, Any], path: str) -> None:
    """Pickle ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rl-ckpt-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(state, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_state(path_or_state: str | dict[str, Any], kind: str) -> dict[str, Any]:
    """A state dict from ``save_state``'s file or the dict itself; checks it is a ``kind``.

    Raises:
        ValueError: the checkpoint is of another algorithm or not an rtml.rl checkpoint.
    """
    if isinstance(path_or_state, dict):
        state = path_or_state
    else:
        with open(path_or_state, "rb") as f:
            state = pickle.load(f)
    if not isinstance(state, dict) or state.get("kind") != kind:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"not a {kind} checkpoint (found {got!r}); restore it with the class that saved it"
        )
    return state
