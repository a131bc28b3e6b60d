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

    _restore_stderr()
    run_worker(fd, wid, session, shm_dir)


def _restore_stderr() -> None:
    """The worker is about to be up: stderr goes back to the node's (RTML_STDERR_FD), with
    what start-up wrote to the file the node gave as stderr (read by the node only if the
    worker dies before this point)."""
    ours = os.environ.pop("RTML_STDERR_FD", None)
    if ours is None:
        return
    sys.stderr.flush()
    early = b""
    try:
        os.lseek(2, 0, os.SEEK_SET)
        early = os.read(2, 1 << 16)
        os.ftruncate(2, 0)
    except OSError:
        pass
    os.dup2(int(ours), 2)
    os.close(int(ours))
    if early:
        os.write(2, early)


if __name__ == "__main__":
    main()
