"""What every kind of runtime does when it starts and stops in this process.

``Runtime`` (embedded node), ``RemoteRuntime`` (a cluster's driver) and ``LocalRuntime`` (local
mode) differ only in what they start and stop around this: the process-wide reference
counter, the current client, the await-resolver thread and the exit hook.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from rtml._runtime import _context
from rtml._runtime._refs import counter


class Session:
    """Subclasses set ``self.client`` and implement ``_start_parts`` / ``_stop_parts``."""

    client: Any

    def __init__(self) -> None:
        self._stopped = False
        self._lock = threading.Lock()

    def _start_parts(self) -> None:
        pass

    def _stop_parts(self) -> None:
        pass

    def start(self) -> None:
        counter.reset()
        counter.enabled = True
        self._start_parts()
        _context.set_client(self.client)
        atexit.register(self.shutdown)

    def shutdown(self) -> None:
        """Stop everything this runtime started; idempotent (also runs at exit)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        counter.enabled = False
        if _context.get_client() is self.client:
            _context.set_client(None)
        from rtml._runtime._async import stop_resolver

        stop_resolver()
        try:
            self._stop_parts()
        finally:
            counter.reset()
            atexit.unregister(self.shutdown)
