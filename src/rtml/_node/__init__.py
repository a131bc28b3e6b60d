"""The node manager: one per machine, owning its tasks, objects, workers and actors.

::

    clients (driver, workers) ──messages──▶ NodeShell (selector thread, _shell.py)
        ──▶ dispatch (_dispatch.py: one handler per message tag)
            ──▶ Node (_node.py): tasks (_tasks.py), objects (_objects.py), scheduling
                ├─ TaskQueue (_queue.py): ready tasks per shape, pipelining rules
                ├─ WorkerPool (_workers.py): workers, idle ones, leases
                ├─ ActorManager (_actors.py)
                └─ ClusterState (_cluster/, a cluster node only; lineage in _lineage.py):
                   membership, ownership, recovery, forwarding, remote actors
        ◀── io.send / spawn / kill: the shell carries out what the core decided
    observers ──"state", "read_log"──▶ _readers.py (live records, worker log files)
    _build.py assembles store + shell + node; _server.py is a cluster node's process
    (``python -m rtml._node``, which hands it its dashboard and event flusher).

Floor 3, beside the worker (docs/architecture.md): imports floors 0-2 (``_protocol``, the
leaves, the client core), never ``_worker``, the runtime, observability or the dashboard.
"""
