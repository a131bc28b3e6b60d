"""Streams: dataflows over live event sources, on rtml (or Ray) actors.

::

    flow = Dataflow("name")
    flow.source(Source) ─▶ map / filter / flat_map ─▶ with_event_time ─▶ key_by
        ─▶ window(Tumbling|Sliding|Session).fold / join_as_of(Table) / join / interval_join
        / stateful_map ─▶ sink(Sink)
    run = flow.run(parallelism=, checkpoint_every=, checkpoint_dir=, resume=)
    run.metrics() · run.wait() · run.stop()

Operators run in actors, partitioned by key; stateless operators are fused into the actor of
their input; checkpoints are aligned barriers, and a lost actor or node is recovered from the
last one by itself. See the README's "Streams" section.
"""

from rtml.stream._checkpoint import CheckpointStore
from rtml.stream._connector import Malformed, Sink, SinkWriter, Source, SourceReader
from rtml.stream._errors import ConnectorError, StreamConfigError, StreamError, UserFunctionError
from rtml.stream._exec import DeadLetter
from rtml.stream._file import FileSink, FileSource
from rtml.stream._graph import Dataflow, KeyedStream, Stream, WindowedStream
from rtml.stream._join import Table
from rtml.stream._kafka import KafkaSink, KafkaSource
from rtml.stream._redis import RedisStreamSink, RedisStreamSource
from rtml.stream._registry import list_streams
from rtml.stream._run import Run
from rtml.stream._sink import ActorSink, CallableSink, CollectSink
from rtml.stream._source import IterableSource
from rtml.stream._time import Session, Sliding, Tumbling
from rtml.stream._window import WindowResult

__all__ = [
    "ActorSink",
    "CallableSink",
    "CheckpointStore",
    "CollectSink",
    "ConnectorError",
    "Dataflow",
    "DeadLetter",
    "FileSink",
    "FileSource",
    "IterableSource",
    "KafkaSink",
    "KafkaSource",
    "KeyedStream",
    "Malformed",
    "RedisStreamSink",
    "RedisStreamSource",
    "Run",
    "Session",
    "Sink",
    "SinkWriter",
    "Sliding",
    "Source",
    "SourceReader",
    "Stream",
    "StreamConfigError",
    "StreamError",
    "Table",
    "Tumbling",
    "UserFunctionError",
    "WindowResult",
    "WindowedStream",
    "list_streams",
]
