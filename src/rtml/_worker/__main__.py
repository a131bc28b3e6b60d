"""Entry point of a worker process: ``python -m rtml._worker FD WID SESSION SHM_DIR``."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

ORPHAN_CHECK_S = 0.5


def _exit_with_node(session: str, shm_dir: str) -> None:
    """A worker never outlives its node: if the node process dies (SIGKILL, OOM), the worker
    is re-parented. It then removes the node's shared-memory segments, which nobody else
    would (the other workers race it harmlessly), and exits, even in the middle of a task."""
    parent = os.getppid()
    while True:
        time.sleep(ORPHAN_CHECK_S)
        if os.getppid() != parent:
            try:
                from rtml._object_store._segments import cleanup_session

                cleanup_session(session, shm_dir)
            finally:
                os._exit(70)


def main() -> None:
    fd, wid, session, shm_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    extra = json.loads(os.environ.pop("RTML_SYS_PATH", "[]"))
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)
    threading.Thread(
        target=_exit_with_node, args=(session, shm_dir), daemon=True, name="rtml-orphan-check"
    ).start()
    from rtml._worker._worker import run_worker

    run_worker(fd, wid, session, shm_dir)


if __name__ == "__main__":
    main()
