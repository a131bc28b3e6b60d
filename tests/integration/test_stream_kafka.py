"""KafkaSource and KafkaSink over Kafka's wire protocol (librdkafka's mock cluster): assigned
partitions, exact resume from an offset, ack, malformed values, unreachable brokers, and
exactly-once epochs through a transactional producer, checked with a read_committed reader."""

from __future__ import annotations

import json
import pickle
import socket
import threading

import pytest

from rtml.stream import ConnectorError, Malformed
from rtml.stream._kafka import KafkaSink, KafkaSource

ck = pytest.importorskip("confluent_kafka")


@pytest.fixture
def produce(kafka_bootstrap):
    p = ck.Producer({"bootstrap.servers": kafka_bootstrap, "log_level": 0})

    def send(topic, values, partition=0):
        for v in values:
            p.produce(topic, v, partition=partition)
        assert p.flush(10) == 0

    yield send
    p.close()


def read_committed(bootstrap, topic, partitions=range(4)):
    """Every committed value of ``topic``, per partition in order (to the end)."""
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "check",
            "log_level": 0,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    out: list[bytes] = []
    try:
        c.assign([ck.TopicPartition(topic, i, ck.OFFSET_BEGINNING) for i in partitions])
        eof: set[int] = set()
        for _ in range(200):
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == ck.KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
                if len(eof) == len(partitions):
                    return out
                continue
            out.append(m.value())
        raise AssertionError("did not reach the end of the topic")
    finally:
        c.close()


def drain(reader, n, timeout=10.0):
    out: list = []
    for _ in range(100):
        if len(out) >= n:
            break
        out.extend(reader.read(n - len(out), timeout / 100))
    return out


def test_partitions_read_resume_exactly_lag_and_ack(kafka_bootstrap, produce):
    produce("events", [json.dumps({"i": i}).encode() for i in range(10)], partition=2)
    src = pickle.loads(
        pickle.dumps(KafkaSource("events", kafka_bootstrap, format="json", timeout=5))
    )
    assert src.partitions() == ["events[0]", "events[1]", "events[2]", "events[3]"]
    r = src.open("events[2]", None)
    assert r.offset() == 0
    first = drain(r, 4)
    assert first == [{"i": i} for i in range(4)]
    off = r.offset()
    assert off == 4
    r.ack(off)
    rest = drain(r, 6)
    assert [e["i"] for e in rest] == list(range(4, 10))
    assert r.read(10, 0.05) == []
    r.close()
    r = src.open("events[2]", off)
    again = drain(r, 6)
    assert [e["i"] for e in again] == list(range(4, 10))
    assert r.offset() == 10
    assert r.lag() == 0
    r.close()
    empty = src.open("events[0]", None)
    assert empty.read(10, 0.05) == []
    assert empty.offset() == 0
    empty.close()
    c = ck.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "rtml-events"})
    try:
        committed = c.committed([ck.TopicPartition("events", 2)], timeout=10)
    finally:
        c.close()
    assert committed[0].offset == 4


def test_start_latest_resolves_to_an_exact_offset(kafka_bootstrap, produce):
    produce("t", [b"old"])
    src = KafkaSource("t", kafka_bootstrap, start="latest", format="text")
    r = src.open("t[0]", None)
    off = r.offset()
    r.close()
    assert off == 1
    produce("t", [b"new"])
    r = src.open("t[0]", off)
    assert drain(r, 1) == ["new"]
    r.close()


def test_read_returns_a_lone_message_without_waiting_for_a_batch(kafka_bootstrap, produce):
    produce("t", [b"creates the topic"], partition=0)
    r = KafkaSource("t", kafka_bootstrap).open("t[1]", None)
    assert r.read(10, 0.05) == []
    got: list = []
    t = threading.Thread(target=lambda: got.extend(r.read(1000, 60.0)))
    t.start()
    produce("t", [b"lone"], partition=1)
    t.join(30)  # a read that waited to fill its batch would still be running
    assert not t.is_alive()
    assert got == [b"lone"]
    r.close()


def test_malformed_values(kafka_bootstrap, produce):
    produce("t", [b'{"ok": 1}', b"{bad", b"\xff"])
    r = KafkaSource("t", kafka_bootstrap, format="json").open("t[0]", None)
    ok, bad, worse = drain(r, 3)
    r.close()
    assert ok == {"ok": 1}
    assert isinstance(bad, Malformed)
    assert bad.where == "t[0]@1"
    assert "JSON" in bad.reason
    assert isinstance(worse, Malformed)
    assert worse.raw == b"\xff"
    assert "UTF-8" in worse.reason
    r = KafkaSource("t", kafka_bootstrap).open("t[0]", 2)
    assert drain(r, 1) == [b"\xff"]
    r.close()


def test_missing_topic_and_partition(kafka_bootstrap, produce):
    with pytest.raises(ConnectorError, match="'nope' is not available"):
        KafkaSource("nope", kafka_bootstrap, timeout=5).partitions()
    produce("t", [b"x"])
    with pytest.raises(ConnectorError, match="no partition 9"):
        KafkaSource("t", kafka_bootstrap, timeout=5).open("t[9]", None)


def test_unreachable_brokers_fail_fast_with_connector_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bootstrap = f"127.0.0.1:{port}"
    src = KafkaSource("t", bootstrap, timeout=1.0)
    with pytest.raises(ConnectorError, match=bootstrap):
        src.partitions()
    with pytest.raises(ConnectorError, match=bootstrap):
        src.open("t[0]", 0)
    with pytest.raises(ConnectorError, match=bootstrap):
        KafkaSink("out", bootstrap, timeout=1.0).open("w", 0, 1)
    with pytest.raises(ConnectorError, match=bootstrap):
        KafkaSink("out", bootstrap, exactly_once=False, timeout=1.0).open("w", 0, 1)


def test_exactly_once_sink_skips_repeated_epochs(kafka_bootstrap):
    sink = KafkaSink("out", kafka_bootstrap, timeout=10)
    assert sink.exactly_once
    w = sink.open("flow/sink/0", 0, 1)
    assert w.last_epoch() == -1
    w.write_epoch(1, [{"e": 1}, "one"])
    w.write_epoch(2, [b"two"])
    w.write_epoch(2, [b"two again"])
    w.close()
    # a restarted writer (its checkpoint said epoch 2 was pending) is handed 2 again, then 3
    w = sink.open("flow/sink/0", 0, 1)
    assert w.last_epoch() == 2
    w.write_epoch(2, [b"two again"])
    w.write_epoch(1, [b"one again"])
    w.write_epoch(3, [b"three"])
    w.close()
    other = sink.open("flow/sink/1", 1, 2)  # its own epochs
    assert other.last_epoch() == -1
    other.write_epoch(1, [b"other"])
    other.close()
    assert sorted(read_committed(kafka_bootstrap, "out")) == sorted(
        [b'{"e":1}', b"one", b"two", b"three", b"other"]
    )
    w = sink.open("flow/sink/0", 0, 1)
    assert w.last_epoch() == 3
    w.close()


def test_exactly_once_sink_keys_and_order(kafka_bootstrap):
    sink = KafkaSink("keyed", kafka_bootstrap, key="user")
    w = sink.open("w", 0, 1)
    w.write_epoch(5, [{"user": "a", "n": i} for i in range(5)])
    w.close()
    values = [json.loads(v) for v in read_committed(kafka_bootstrap, "keyed")]
    assert [v["n"] for v in values] == list(range(5))  # one key: one partition, in order


def test_at_least_once_sink_writes_and_flushes(kafka_bootstrap):
    sink = KafkaSink("plain", kafka_bootstrap, exactly_once=False)
    w = sink.open("w", 0, 1)
    w.write([b"a", "b", {"c": 1}])
    w.flush()
    w.write([b"d"])
    w.close()
    assert sorted(read_committed(kafka_bootstrap, "plain")) == [b"a", b"b", b"d", b'{"c":1}']
    with pytest.raises(ConnectorError, match="JSON"):
        sink.open("w", 0, 1).write([object()])


class _FailingCommit:
    """A producer whose commit fails after the records reached the broker (a lost reply)."""

    def __init__(self, producer):
        self._p = producer

    def __getattr__(self, name):
        return getattr(self._p, name)

    def commit_transaction(self, timeout):
        self._p.flush(timeout)
        raise ck.KafkaException(ck.KafkaError(ck.KafkaError._TIMED_OUT, "commit reply lost"))


def test_failed_commit_raises_and_the_writer_asks_the_log_again(kafka_bootstrap):
    # (Whether an aborted epoch is then rewritten depends on read_committed hiding aborted
    # transactions, which real brokers do and the mock cluster does not: not tested here.)
    w = KafkaSink("out", kafka_bootstrap).open("w", 0, 1)
    w.write_epoch(1, [b"one"])
    real = w._p
    w._p = _FailingCommit(real)
    try:
        with pytest.raises(ConnectorError, match=r"epoch 2 .* failed: .*commit reply lost"):
            w.write_epoch(2, [b"two"])
        assert w.last_epoch() is None  # unknown: read from the marker log before epoch 3
    finally:
        w._p = real
    w.close()
