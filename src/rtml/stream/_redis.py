"""Redis Streams as a source (consumer groups: XREADGROUP, XACK once a checkpoint holds the
entries) and as a sink (XADD; exactly-once through MULTI/EXEC with a per-writer epoch)."""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from rtml.stream._connector import Malformed, Sink, SinkWriter, Source, SourceReader
from rtml.stream._errors import ConnectorError, StreamConfigError
from rtml.util.engine import optional_import

__all__ = ["RedisStreamSink", "RedisStreamSource"]


def _connect(address: str, connect_timeout: float, socket_timeout: float, who: str):
    redis = optional_import("redis", "stream", f"rtml.stream's {who}")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no silent retries: an unreachable server is reported within connect_timeout
    opts = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    try:
        if "://" in address:
            client = redis.Redis.from_url(address, **opts)
        else:
            host, _, port = address.rpartition(":")
            client = redis.Redis(host=host or "127.0.0.1", port=int(port), **opts)
    except ValueError as e:
        raise StreamConfigError(
            f"{who}: bad Redis address {address!r} (use 'host:port' or a redis:// URL): {e}"
        ) from e
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        raise ConnectorError(
            f"{who} cannot reach Redis at {address} within "
            f"{connect_timeout} s: {e}; check that redis-server runs there "
            f"(and the address)"
        ) from e
    return client


@contextlib.contextmanager
def _errors(who: str, address: str, what: str) -> Iterator[None]:
    redis = optional_import("redis", "stream", f"rtml.stream's {who}")
    try:
        yield
    except redis.ResponseError as e:
        raise ConnectorError(f"{who}: Redis at {address} rejected {what}: {e}") from e
    except redis.RedisError as e:
        raise ConnectorError(
            f"{who} lost Redis at {address} during {what}: {e}; check that redis-server runs there"
        ) from e


def _id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamSource(Source):
    """Entries of Redis streams, read through a consumer group; one partition per stream key.

    Args:
        streams: a stream key or a list of keys.
        address: ``"host:port"`` or a ``redis://`` URL.
        group: the consumer group (created on the stream, and the stream too, if missing).
            Give each dataflow reading the same stream its own group.
        consumer: the consumer name within the group (default: ``"rtml-<partition>"``).
        start: where a partition starts without a checkpointed offset: an entry id to read
            after (``"0"``: from the first entry) or ``"$"`` (only entries added from now on).
        binary: records as ``dict[bytes, bytes]`` instead of decoded ``dict[str, str]``.
        connect_timeout: seconds to wait for the server before raising ConnectorError.

    A record is the entry's field dict, fields and values decoded as UTF-8 to ``str`` (an entry
    that does not decode is a :class:`Malformed` with ``where="<key>@<id>"``); numbers written
    by :class:`RedisStreamSink` come back as their decimal strings, JSON-encoded values as
    JSON text. The offset is the id of the last entry read (str). ``open`` moves the group to
    the offset (XGROUP CREATE ... MKSTREAM, or XGROUP SETID) so that XREADGROUP ``>`` continues
    exactly after it, whatever the group's position was: the checkpoint, not the group, decides.
    ``ack(offset)`` XACKs every pending entry up to ``offset``; ``lag()`` is the group's lag.

    Raises:
        StreamConfigError: no stream, or a bad address.
        ConnectorError: the server cannot be reached within ``connect_timeout`` (from
            ``partitions``/``open``/``read``), or rejects a command.
    """

    def __init__(
        self,
        streams: str | Sequence[str],
        address: str = "127.0.0.1:6379",
        *,
        group: str = "rtml",
        consumer: str | None = None,
        start: str = "0",
        binary: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        self.streams = [streams] if isinstance(streams, str) else list(streams)
        if not self.streams or not all(isinstance(s, str) and s for s in self.streams):
            raise StreamConfigError(
                f"RedisStreamSource needs stream keys (non-empty str), got {streams!r}"
            )
        self.address, self.group, self.consumer, self.start = address, group, consumer, start
        self.binary, self.connect_timeout = binary, connect_timeout

    def partitions(self) -> list[str]:
        _connect(
            self.address, self.connect_timeout, self.connect_timeout, "RedisStreamSource"
        ).close()  # fail on the driver if it is unreachable
        return list(dict.fromkeys(self.streams))

    def open(self, partition: str, offset: Any | None) -> SourceReader:
        client = _connect(
            self.address, self.connect_timeout, self.connect_timeout + 30.0, "RedisStreamSource"
        )
        try:
            return _RedisReader(self, client, partition, offset)
        except BaseException:
            client.close()
            raise

    def describe(self) -> str:
        return f"RedisStreamSource({', '.join(self.streams)})"


class _RedisReader(SourceReader):
    def __init__(self, src: RedisStreamSource, client, key: str, offset: str | None) -> None:
        self._c, self._key, self._group = client, key, src.group
        self._consumer = src.consumer or f"rtml-{key}"
        self._addr, self._binary = src.address, src.binary
        self._max_block = max(1, int(src.connect_timeout + 30.0 - 1.0) * 1000)
        start = src.start if offset is None else str(offset)
        redis = optional_import("redis", "stream", "rtml.stream's RedisStreamSource")
        with _errors("RedisStreamSource", self._addr, f"setting group {self._group!r} on {key!r}"):
            try:
                self._c.xgroup_create(key, self._group, id=start, mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
                self._c.xgroup_setid(key, self._group, id=start)
            self._pos = start
            self._read_ids: deque[str] = deque()  # ids read and not acked yet, in order
            self._swept = False  # entries a previous reader left pending are acked once
            if start == "$":
                self._pos = self._group_info().get("last-delivered-id", "0-0")

    def _group_info(self) -> dict[str, Any]:
        for g in self._c.xinfo_groups(self._key):
            info = {_id(k): (_id(v) if isinstance(v, bytes) else v) for k, v in g.items()}
            if info.get("name") == self._group:
                return info
        return {}

    def read(self, max_records: int, timeout: float) -> list[Any]:
        block = None if timeout <= 0 else min(max(1, int(timeout * 1000)), self._max_block)
        with _errors("RedisStreamSource", self._addr, f"XREADGROUP on {self._key!r}"):
            resp = self._c.xreadgroup(
                self._group,
                self._consumer,
                {self._key: ">"},
                count=max(1, max_records),
                block=block,
            )
        out: list[Any] = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                eid = _id(entry_id)
                self._pos = eid
                self._read_ids.append(eid)
                if self._binary:
                    out.append(dict(fields))
                    continue
                try:
                    out.append({k.decode(): v.decode() for k, v in fields.items()})
                except UnicodeDecodeError as e:
                    out.append(
                        Malformed(dict(fields), f"a field is not UTF-8: {e}", f"{self._key}@{eid}")
                    )
        return out

    def offset(self) -> str:
        return self._pos

    def lag(self) -> int | None:
        with _errors("RedisStreamSource", self._addr, f"XINFO GROUPS on {self._key!r}"):
            lag = self._group_info().get("lag")
        return lag if isinstance(lag, int) else None

    def ack(self, offset: Any) -> None:
        end = str(offset)
        if end in ("0", "$") or _id_key(end) == (0, 0):
            return
        upto = _id_key(end)
        ids = []
        while self._read_ids and _id_key(self._read_ids[0]) <= upto:
            ids.append(self._read_ids.popleft())
        with _errors("RedisStreamSource", self._addr, f"XACK on {self._key!r}"):
            # The ids this reader read, no scan of the pending list; in small XACKs with a
            # pause between, so the read loop (same process, same GIL) is never held long.
            for i in range(0, len(ids), 500):
                self._c.xack(self._key, self._group, *ids[i : i + 500])
                time.sleep(0.001)
            if self._swept:
                return
            self._swept = True
            while True:  # once: what a reader before a restart read and never acked
                pending = self._c.xpending_range(
                    self._key, self._group, min="-", max=end, count=1000
                )
                if not pending:
                    return
                self._c.xack(self._key, self._group, *[p["message_id"] for p in pending])
                if len(pending) < 1000:
                    return

    def close(self) -> None:
        self._c.close()


_PLAIN = (str, bytes, int, float)


def _fields(record: Any) -> dict[Any, Any]:
    if not isinstance(record, dict):
        return {"value": json.dumps(record)}
    if not record:
        raise ConnectorError(
            "RedisStreamSink cannot XADD an empty dict (a stream entry needs "
            "a field); drop empty records before the sink"
        )
    return {
        k if isinstance(k, (str, bytes)) else str(k): v
        if isinstance(v, _PLAIN) and not isinstance(v, bool)
        else json.dumps(v)
        for k, v in record.items()
    }


class RedisStreamSink(Sink):
    """Records appended to a Redis stream with XADD.

    Args:
        stream: the stream key.
        address: ``"host:port"`` or a ``redis://`` URL.
        exactly_once: True: ``write_epoch`` runs one MULTI/EXEC transaction (under WATCH) that
            XADDs the epoch's records and sets field ``<writer id>`` of the hash
            ``<stream>:rtml-epochs`` to the epoch; an epoch not above the one recorded there for
            the writer id is skipped, so a repeated epoch is never appended twice. False:
            ``write`` pipelines the XADDs (at-least-once after a recovery).
        maxlen: cap the stream at about this many entries (XADD MAXLEN ~).
        connect_timeout: seconds to wait for the server before raising ConnectorError.

    A dict record becomes the entry's fields: str, bytes, int and float values as they are
    (Redis stores their text), any other value (bool, None, list, dict...) as its JSON text.
    Any other record becomes one field ``value`` holding its JSON text. Durability is Redis's
    (enable appendonly for writes that survive a Redis restart).

    Raises:
        StreamConfigError: a bad address.
        ConnectorError: the server cannot be reached within ``connect_timeout``, rejects a
            write, or a record cannot be encoded.
    """

    def __init__(
        self,
        stream: str,
        address: str = "127.0.0.1:6379",
        *,
        exactly_once: bool = True,
        maxlen: int | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise StreamConfigError(f"RedisStreamSink needs a stream key, got {stream!r}")
        if maxlen is not None and (not isinstance(maxlen, int) or maxlen < 1):
            raise StreamConfigError(f"maxlen must be a positive int or None, got {maxlen!r}")
        self.stream, self.address, self.maxlen = stream, address, maxlen
        self.exactly_once, self.connect_timeout = bool(exactly_once), connect_timeout

    @property
    def epochs_key(self) -> str:
        """The hash holding the last epoch written per writer id."""
        return f"{self.stream}:rtml-epochs"

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _RedisWriter(
            self,
            _connect(
                self.address, self.connect_timeout, self.connect_timeout + 30.0, "RedisStreamSink"
            ),
            writer_id,
        )

    def describe(self) -> str:
        return f"RedisStreamSink({self.stream})"


class _RedisWriter(SinkWriter):
    def __init__(self, sink: RedisStreamSink, client, writer_id: str) -> None:
        self._s, self._c, self._w = sink, client, writer_id

    def _xadds(self, pipe, records: list[Any]) -> None:
        for r in records:
            pipe.xadd(
                self._s.stream,
                _fields(r),
                maxlen=self._s.maxlen,
                approximate=self._s.maxlen is not None,
            )

    def write(self, records: list[Any]) -> None:
        if not records:
            return
        with _errors("RedisStreamSink", self._s.address, f"XADD to {self._s.stream!r}"):
            pipe = self._c.pipeline(transaction=False)
            self._xadds(pipe, records)
            pipe.execute()

    def write_epoch(self, epoch: int, records: list[Any]) -> None:
        redis = optional_import("redis", "stream", "rtml.stream's RedisStreamSink")
        key = self._s.epochs_key
        for _ in range(10):
            with (
                _errors(
                    "RedisStreamSink",
                    self._s.address,
                    f"the transaction of epoch {epoch} on {self._s.stream!r}",
                ),
                self._c.pipeline(transaction=True) as pipe,
            ):
                try:
                    pipe.watch(key)
                    last = pipe.hget(key, self._w)
                    if last is not None and epoch <= int(last):
                        return
                    pipe.multi()
                    self._xadds(pipe, records)
                    pipe.hset(key, self._w, epoch)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue  # another writer changed the hash: look again
        raise ConnectorError(
            f"RedisStreamSink: the epochs hash {key!r} kept changing while "
            f"writing epoch {epoch} for {self._w!r}; is another dataflow "
            f"writing with the same writer id?"
        )

    def last_epoch(self) -> int | None:
        """The last epoch written for this writer id, or None."""
        with _errors("RedisStreamSink", self._s.address, f"HGET {self._s.epochs_key!r}"):
            last = self._c.hget(self._s.epochs_key, self._w)
        return None if last is None else int(last)

    def close(self) -> None:
        self._c.close()
