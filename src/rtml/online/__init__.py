"""Online learning: River models that keep learning from a stream, on rtml (or Ray) actors.

::

    samples (calls, iterables, a dataflow via LearnerSink)
        ─▶ Learner actor: test-then-train metrics, delayed labels, drift, dead letters
        ─▶ ModelRegistry (a directory or "redis://host:port/db"; versions: position, newest
           event time, metrics; pin / unpin / rollback; keep=)
        ─▶ Subscriber in a server: swaps in new versions without blocking a prediction,
           answers with its version (response(x): x-model-version), stats() / prometheus()
           (freshness p50/p99, version lag, load time)

River is needed only once a model is used (``pip install 'rtml[online]'``).
"""

from rtml.online._core import Drift, OnlineState
from rtml.online._learner import Learner, LearnerSink
from rtml.online._parallel import AveragedState, DataParallelLearner, average
from rtml.online._partition import PartitionedLearner, PartitionedSink, ShardedState
from rtml.online._registry import ModelRegistry, PublishError, Subscriber, Version

__all__ = [
    "AveragedState",
    "DataParallelLearner",
    "Drift",
    "Learner",
    "LearnerSink",
    "ModelRegistry",
    "OnlineState",
    "PartitionedLearner",
    "PartitionedSink",
    "PublishError",
    "ShardedState",
    "Subscriber",
    "Version",
    "average",
]
