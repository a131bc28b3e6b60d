"""Per-process client and runtimes: object references, the core client, the three runtimes.

Two floors (docs/architecture.md): ``_refs``, ``_payload``, ``_client``, ``_context`` and
``_async`` are the client core (floor 2), which every process holding refs runs, the
worker's included; the rest is the runtime (floor 4), above the node and the worker.
Nothing here imports ``rtml._api``: auto-init goes through ``_context.client()``.
"""
