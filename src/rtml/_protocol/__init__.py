"""The vocabulary every process speaks (floor 0, beside ``exceptions`` and ``_serialization``).

::

    _ids       task and object ids: who made an object, which task, which node
    _spec      TaskSpec and the task states
    _payload   PayloadKind: how a value is held (INLINE, SHM, ERR, REMOTE, OOB)
    _events    task event kinds (FINISHED, FAILED, RETRIED, CANCELLED, FORWARDED)
    _actor     the methods every actor has, ActorExitRequest

Plain data and pure functions: nothing here imports from rtml above ``exceptions`` and
``_serialization``, so every floor may use it (see ``docs/architecture.md``).
"""
