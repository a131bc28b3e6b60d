"""Streams: dataflows over live event sources (work in progress; see the README)."""

from rtml.stream._connector import Malformed, Sink, SinkWriter, Source, SourceReader
from rtml.stream._errors import ConnectorError, StreamConfigError, StreamError, UserFunctionError

__all__ = ["ConnectorError", "Malformed", "Sink", "SinkWriter", "Source", "SourceReader",
           "StreamConfigError", "StreamError", "UserFunctionError"]
