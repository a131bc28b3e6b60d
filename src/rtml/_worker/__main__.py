"""Entry point of a worker process: ``python -m rtml._worker FD WID SESSION SHM_DIR``."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    fd, wid, session, shm_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    extra = json.loads(os.environ.pop("RTML_SYS_PATH", "[]"))
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)
    from rtml._worker._worker import run_worker

    run_worker(fd, wid, session, shm_dir)


if __name__ == "__main__":
    main()
