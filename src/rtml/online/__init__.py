"""Online learning: River models that keep learning from a stream, on rtml (or Ray) actors.

::

    samples (calls, iterables, a dataflow via LearnerSink)
        ─▶ Learner actor: test-then-train metrics, delayed labels, drift, dead letters
        ─▶ ModelRegistry (versions: position, newest event time, metrics; pin / rollback)
        ─▶ Subscriber in a server: swaps in new versions without blocking a prediction

River is needed only once a model is used (``pip install 'rtml[online]'``).
"""

from rtml.online._core import Drift, OnlineState
from rtml.online._learner import Learner, LearnerSink
from rtml.online._parallel import AveragedState, DataParallelLearner, average
from rtml.online._partition import PartitionedLearner, PartitionedSink, ShardedState
from rtml.online._registry import ModelRegistry, PublishError, Subscriber, Version

__all__ = ["AveragedState", "DataParallelLearner", "Drift", "Learner", "LearnerSink", "ModelRegistry", "OnlineState", "PartitionedLearner", "PartitionedSink",
           "PublishError", "ShardedState",
           "Subscriber", "Version", "average"]
