"""Kafka as a source (partitions assigned, not subscribed, at checkpointed offsets) and as a
sink (a transactional producer per writer id, the epoch recorded in the same transaction)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from rtml.stream._connector import Malformed, Sink, SinkWriter, Source, SourceReader
from rtml.stream._errors import ConnectorError, StreamConfigError
from rtml.util.engine import optional_import

__all__ = ["KafkaSink", "KafkaSource"]

_FORMATS = ("bytes", "text", "json")
_PART = re.compile(r"^(.*)\[(\d+)\]$")


def _ck(who: str):
    return optional_import("confluent_kafka", "stream", f"rtml.stream's {who}")


def _check(fmt: str, who: str, timeout: float) -> None:
    if fmt not in _FORMATS:
        raise StreamConfigError(f"{who} format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if not timeout > 0:
        raise StreamConfigError(
            f"{who} timeout must be a positive number of seconds, got {timeout!r}"
        )


def _unreachable(who: str, bootstrap: str, timeout: float, e: BaseException) -> ConnectorError:
    return ConnectorError(
        f"{who} cannot reach Kafka at {bootstrap} within {timeout} s: {e}; "
        f"check that the brokers run there (and bootstrap)"
    )


def _partition_ids(client, topic: str, bootstrap: str, timeout: float, who: str) -> list[int]:
    ck = _ck(who)
    try:
        md = client.list_topics(topic, timeout=timeout)
    except ck.KafkaException as e:
        raise _unreachable(who, bootstrap, timeout, e) from e
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise ConnectorError(
            f"{who}: topic {topic!r} is not available at {bootstrap}"
            f"{f' ({t.error})' if t is not None and t.error else ''}; create "
            f"it (or allow auto-creation)"
        )
    return sorted(t.partitions)


class KafkaSource(Source):
    """Messages of a Kafka topic; one partition of the dataflow per topic partition.

    Args:
        topic: the topic.
        bootstrap: ``bootstrap.servers``, e.g. ``"127.0.0.1:9092"``.
        config: more librdkafka consumer settings (override the defaults below).
        start: where a partition starts without a checkpointed offset: ``"earliest"``,
            ``"latest"``, or an int offset.
        format: ``"bytes"`` (message values as they are), ``"text"`` (UTF-8 str) or
            ``"json"`` (decoded); a value that does not decode is a :class:`Malformed` with
            ``where="<topic>[<partition>]@<offset>"``; a message without a value (a
            tombstone) is None.
        timeout: seconds to wait for the brokers before raising ConnectorError.

    Partitions are named ``"<topic>[<n>]"``, discovered from metadata when the dataflow
    starts. Each reader is *assigned* its partition at the checkpointed offset (no group
    rebalancing). The offset is the Kafka offset of the next message to read (int); a start
    of ``"earliest"``/``"latest"`` is resolved to one at ``open``. Defaults:
    ``group.id="rtml-<topic>"`` (used only to commit offsets in ``ack``, for lag monitoring),
    no auto-commit, ``isolation.level="read_committed"`` (messages of aborted or open
    transactions are not read).

    Raises:
        StreamConfigError: a bad format, start or timeout.
        ConnectorError: the brokers cannot be reached within ``timeout``, the topic does not
            exist, or the consumer fails.
    """

    def __init__(
        self,
        topic: str,
        bootstrap: str,
        config: dict[str, Any] | None = None,
        *,
        start: str | int = "earliest",
        format: str = "bytes",
        timeout: float = 10.0,
    ) -> None:
        _check(format, "KafkaSource", timeout)
        if start not in ("earliest", "latest") and not (isinstance(start, int) and start >= 0):
            raise StreamConfigError(
                f"start must be 'earliest', 'latest' or an offset >= 0, got {start!r}"
            )
        self.topic, self.bootstrap, self.config = topic, bootstrap, dict(config or {})
        self.start, self.format, self.timeout = start, format, timeout

    def _consumer(self):
        conf = {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"rtml-{self.topic}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "log_level": 2,
            **self.config,
        }
        return _ck("KafkaSource").Consumer(conf)

    def partitions(self) -> list[str]:
        c = self._consumer()
        try:
            ids = _partition_ids(c, self.topic, self.bootstrap, self.timeout, "KafkaSource")
        finally:
            c.close()
        return [f"{self.topic}[{i}]" for i in ids]

    def open(self, partition: str, offset: Any | None) -> SourceReader:
        m = _PART.match(partition)
        if m is None or m.group(1) != self.topic:
            raise StreamConfigError(
                f"KafkaSource({self.topic}) has no partition "
                f"{partition!r}; partitions are named '{self.topic}[n]'"
            )
        c = self._consumer()
        try:
            return _KafkaReader(self, c, int(m.group(2)), offset)
        except BaseException:
            c.close()
            raise

    def describe(self) -> str:
        return f"KafkaSource({self.topic})"


class _KafkaReader(SourceReader):
    def __init__(self, src: KafkaSource, consumer, pid: int, offset: int | None) -> None:
        ck = _ck("KafkaSource")
        self._c, self._src, self._pid, self._ck = consumer, src, pid, ck
        self._name = f"{src.topic}[{pid}]"
        if pid not in _partition_ids(
            consumer, src.topic, src.bootstrap, src.timeout, "KafkaSource"
        ):
            raise ConnectorError(
                f"KafkaSource: {src.topic!r} has no partition {pid} (any "
                f"more); a topic's partitions must not shrink"
            )
        if offset is None:
            if isinstance(src.start, int):
                offset = src.start
            else:
                try:
                    low, high = consumer.get_watermark_offsets(
                        ck.TopicPartition(src.topic, pid), timeout=src.timeout
                    )
                except ck.KafkaException as e:
                    raise _unreachable("KafkaSource", src.bootstrap, src.timeout, e) from e
                offset = low if src.start == "earliest" else high
        self._pos = int(offset)
        consumer.assign([ck.TopicPartition(src.topic, pid, self._pos)])

    def _decode(self, msg) -> Any:
        value = msg.value()
        fmt = self._src.format
        if fmt == "bytes" or value is None:
            return value
        where = f"{self._name}@{msg.offset()}"
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return Malformed(value, f"not UTF-8: {e}", where)
        if fmt == "text":
            return text
        try:
            return json.loads(text)
        except ValueError as e:
            return Malformed(value, f"invalid JSON: {e}", where)

    def read(self, max_records: int, timeout: float) -> list[Any]:
        ck = self._ck
        try:
            first = self._c.poll(max(0.0, timeout))  # returns on the first message
            msgs = [] if first is None else [first]
            if first is not None and max_records > 1:
                msgs.extend(self._c.consume(max_records - 1, 0))
        except ck.KafkaException as e:
            raise ConnectorError(f"KafkaSource failed reading {self._name}: {e}") from e
        out: list[Any] = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    continue
                raise ConnectorError(
                    f"KafkaSource failed reading {self._name} at {self._pos}: "
                    f"{err}; check the brokers at {self._src.bootstrap}"
                )
            out.append(self._decode(msg))
            self._pos = msg.offset() + 1
        return out

    def offset(self) -> int:
        return self._pos

    def lag(self) -> int | None:
        ck = self._ck
        try:
            _low, high = self._c.get_watermark_offsets(
                ck.TopicPartition(self._src.topic, self._pid), cached=True
            )
        except ck.KafkaException:
            return None
        return max(0, high - self._pos) if high >= 0 else None

    def ack(self, offset: Any) -> None:
        ck = self._ck
        try:
            self._c.commit(
                offsets=[ck.TopicPartition(self._src.topic, self._pid, int(offset))],
                asynchronous=True,
            )
        except ck.KafkaException:
            pass  # committed offsets are only for monitoring: never fail the dataflow

    def close(self) -> None:
        self._c.close()


class KafkaSink(Sink):
    """Records produced to a Kafka topic.

    Args:
        topic: the topic.
        bootstrap: ``bootstrap.servers``.
        exactly_once: True: each writer id gets a transactional producer with
            ``transactional.id="rtml-<writer id>"`` (so a restarted writer fences its zombie);
            ``write_epoch`` produces the records and a marker record (key = writer id, value =
            the epoch) to partition 0 of ``marker_topic`` in one transaction. At ``open`` the
            writer reads the marker partition (read_committed) for the last committed epoch of
            its writer id, and skips any epoch not above it. Consumers of the topic must use
            ``isolation.level=read_committed`` to see each record once. False: ``write``
            produces (idempotent producer, ``acks=all``) and ``flush`` waits for delivery.
        config: more librdkafka producer settings.
        key: the message key: None, a field name (records are dicts), or a function of the
            record returning str or bytes.
        marker_topic: where epochs are recorded (default ``"<topic>.rtml-epochs"``); create it
            with ``cleanup.policy=compact`` on a real cluster.
        timeout: seconds to wait for the brokers (and a transaction's commit) before raising
            ConnectorError.

    A record is sent as its bytes if bytes, UTF-8 if str, else as its JSON text.

    Raises:
        StreamConfigError: a bad key or timeout.
        ConnectorError: the brokers cannot be reached within ``timeout``, a record cannot be
            encoded, or a transaction or delivery fails.
    """

    def __init__(
        self,
        topic: str,
        bootstrap: str,
        exactly_once: bool = True,
        config: dict[str, Any] | None = None,
        key: str | Callable[[Any], str | bytes] | None = None,
        *,
        marker_topic: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        _check("bytes", "KafkaSink", timeout)
        if key is not None and not isinstance(key, str) and not callable(key):
            raise StreamConfigError(f"key must be None, a field name or a function, got {key!r}")
        self.topic, self.bootstrap, self.config, self.key = (
            topic,
            bootstrap,
            dict(config or {}),
            key,
        )
        self.exactly_once, self.timeout = bool(exactly_once), timeout
        self.marker_topic = marker_topic or f"{topic}.rtml-epochs"

    def open(self, writer_id: str, index: int, count: int) -> SinkWriter:
        return _KafkaWriter(self, writer_id)

    def describe(self) -> str:
        return f"KafkaSink({self.topic})"


def _value(record: Any) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    try:
        return json.dumps(record, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ConnectorError(
            f"KafkaSink cannot encode a record as JSON: {e}; map records to "
            f"bytes, str or JSON-compatible values before the sink"
        ) from e


class _KafkaWriter(SinkWriter):
    def __init__(self, sink: KafkaSink, writer_id: str) -> None:
        ck = _ck("KafkaSink")
        self._s, self._w, self._ck = sink, writer_id, ck
        self._errors: list[str] = []
        conf: dict[str, Any] = {
            "bootstrap.servers": sink.bootstrap,
            "log_level": 2,
            "acks": "all",
            "enable.idempotence": True,
        }
        if sink.exactly_once:
            conf["transactional.id"] = f"rtml-{writer_id}"
            conf["transaction.timeout.ms"] = max(60000, int(sink.timeout * 2000))
        conf.update(sink.config)
        self._p = ck.Producer(conf)
        self._last: int | None = None
        try:
            _partition_ids(self._p, sink.topic, sink.bootstrap, sink.timeout, "KafkaSink")
            if sink.exactly_once:
                self._p.init_transactions(sink.timeout)  # fences and aborts a zombie's
                self._last = self._read_last_epoch()
        except ck.KafkaException as e:
            self._close_producer()
            raise _unreachable("KafkaSink", sink.bootstrap, sink.timeout, e) from e
        except BaseException:
            self._close_producer()
            raise

    def _read_last_epoch(self) -> int:
        """The highest committed epoch of this writer id on the marker partition, or -1."""
        ck, s = self._ck, self._s
        _partition_ids(self._p, s.marker_topic, s.bootstrap, s.timeout, "KafkaSink")
        c = ck.Consumer(
            {
                "bootstrap.servers": s.bootstrap,
                "group.id": f"rtml-{self._w}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "log_level": 2,
            }
        )
        last, me = -1, self._w.encode()
        try:
            c.assign([ck.TopicPartition(s.marker_topic, 0, ck.OFFSET_BEGINNING)])
            deadline = time.monotonic() + s.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectorError(
                        f"KafkaSink could not read the epoch markers on "
                        f"{s.marker_topic!r} at {s.bootstrap} within "
                        f"{s.timeout} s; check the brokers"
                    )
                msg = c.poll(min(left, 0.2))
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        return last
                    raise ConnectorError(f"KafkaSink failed reading {s.marker_topic!r}: {err}")
                if msg.key() == me:
                    try:
                        last = max(last, int(msg.value()))
                    except (TypeError, ValueError):
                        continue
        finally:
            c.close()

    def _produce(self, topic: str, value: bytes, key: Any, partition: int | None = None) -> None:
        kw: dict[str, Any] = {} if partition is None else {"partition": partition}
        deadline = time.monotonic() + self._s.timeout
        while True:
            try:
                self._p.produce(topic, value, key, on_delivery=self._delivered, **kw)
                return
            except BufferError:  # the local queue is full: let it drain
                if time.monotonic() > deadline:
                    raise ConnectorError(
                        f"KafkaSink: the producer queue stayed full for "
                        f"{self._s.timeout} s; check the brokers at "
                        f"{self._s.bootstrap}"
                    ) from None
                self._p.poll(0.1)

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _key(self, record: Any) -> Any:
        k = self._s.key
        if k is None:
            return None
        if callable(k):
            return k(record)
        try:
            v = record[k]
        except (KeyError, TypeError, IndexError) as e:
            raise ConnectorError(
                f"KafkaSink: record has no key field {k!r}: {record!r:.200}"
            ) from e
        return v if isinstance(v, (str, bytes)) else str(v)

    def _send(self, records: list[Any]) -> None:
        for r in records:
            self._produce(self._s.topic, _value(r), self._key(r))

    def write(self, records: list[Any]) -> None:
        self._send(records)
        self._p.poll(0)

    def flush(self) -> None:
        left = self._p.flush(self._s.timeout)
        if left:
            raise ConnectorError(
                f"KafkaSink: {left} records were not delivered within "
                f"{self._s.timeout} s; check the brokers at "
                f"{self._s.bootstrap}"
            )
        if self._errors:
            errs, self._errors = self._errors, []
            raise ConnectorError(f"KafkaSink: {len(errs)} records were not delivered: {errs[0]}")

    def last_epoch(self) -> int | None:
        """The last epoch committed for this writer id (-1: none), None if not known now."""
        return self._last

    def write_epoch(self, epoch: int, records: list[Any]) -> None:
        ck, s = self._ck, self._s
        if self._last is None:  # a previous commit failed ambiguously: ask the log
            self._last = self._read_last_epoch()
        if epoch <= self._last:
            return
        values = [(_value(r), self._key(r)) for r in records]  # fail before the transaction
        try:
            self._p.begin_transaction()
            for v, k in values:
                self._produce(s.topic, v, k)
            self._produce(s.marker_topic, str(epoch).encode(), self._w.encode(), partition=0)
            self._p.commit_transaction(s.timeout)
        except ck.KafkaException as e:
            self._last = None
            err = e.args[0] if e.args else None
            if err is not None and hasattr(err, "txn_requires_abort") and err.txn_requires_abort():
                try:
                    self._p.abort_transaction(s.timeout)
                except ck.KafkaException:
                    pass
            raise ConnectorError(
                f"KafkaSink: the transaction of epoch {epoch} for "
                f"{self._w!r} failed: {e}; the epoch is retried on recovery "
                f"(check the brokers at {s.bootstrap})"
            ) from e
        self._last = epoch

    def _close_producer(self) -> None:
        close = getattr(self._p, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        try:
            if not self._s.exactly_once:
                self._p.flush(self._s.timeout)
        finally:
            self._close_producer()
