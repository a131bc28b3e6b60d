"""RedisStreamSource and RedisStreamSink against a real redis-server: reading through a
consumer group, exact resume from a checkpointed id whatever the group's position, XACK,
malformed entries, an unreachable server, and exactly-once epochs in MULTI/EXEC."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest

from rtml.stream import ConnectorError, Malformed
from rtml.stream._redis import RedisStreamSink, RedisStreamSource

redis = pytest.importorskip("redis")


@pytest.fixture
def client(redis_address):
    host, port = redis_address.split(":")
    c = redis.Redis(host=host, port=int(port), socket_timeout=10)
    yield c
    c.close()


def test_read_resume_exactly_and_ack(client, redis_address):
    ids = [client.xadd("clicks", {"n": i, "u": f"user{i}"}).decode() for i in range(10)]
    src = pickle.loads(pickle.dumps(RedisStreamSource("clicks", redis_address, group="g")))
    assert src.partitions() == ["clicks"]
    r = src.open("clicks", None)
    first = r.read(4, 1.0)
    assert first == [{"n": str(i), "u": f"user{i}"} for i in range(4)]
    off = r.offset()
    assert off == ids[3]
    more = r.read(100, 1.0)  # read past the checkpoint, then "crash"
    assert [e["n"] for e in more] == [str(i) for i in range(4, 10)]
    assert r.lag() == 0
    r.ack(off)  # the checkpoint holding `off` is durable
    pending = client.xpending("clicks", "g")
    assert pending["pending"] == 6
    assert pending["min"].decode() == ids[4]
    r.close()

    r = src.open("clicks", off)  # the group is at ids[9]; the checkpoint says ids[3]
    assert r.lag() in (None, 6)  # Redis may not know the lag after XGROUP SETID
    again = r.read(100, 1.0)
    assert [e["n"] for e in again] == [str(i) for i in range(4, 10)]
    assert r.offset() == ids[9]
    assert r.lag() == 0
    r.ack(r.offset())
    assert client.xpending("clicks", "g")["pending"] == 0
    assert r.read(10, 0.0) == []
    r.close()


def test_read_returns_a_lone_entry_without_waiting_for_a_batch(client, redis_address):
    src = RedisStreamSource(["a", "b"], redis_address, start="$")
    assert src.partitions() == ["a", "b"]
    r = src.open("b", None)  # MKSTREAM: the stream need not exist yet
    assert r.read(10, 0.05) == []
    got: list = []
    t = threading.Thread(target=lambda: got.extend(r.read(1000, 60.0)))
    t.start()
    client.xadd("b", {"k": "v"})
    t.join(30)  # a read that waited to fill its batch would still be running
    assert not t.is_alive()
    assert got == [{"k": "v"}]
    r.close()


def test_start_dollar_resolves_to_an_exact_offset(client, redis_address):
    client.xadd("s", {"old": "1"})
    src = RedisStreamSource("s", redis_address, start="$")
    r = src.open("s", None)
    off = r.offset()
    r.close()
    client.xadd("s", {"new": "2"})
    r = src.open("s", off)
    assert r.read(10, 1.0) == [{"new": "2"}]
    r.close()


def test_malformed_and_binary_entries(client, redis_address):
    bad_id = client.xadd("s", {"v": b"\xff\xfe"}).decode()
    client.xadd("s", {"v": "ok"})
    r = RedisStreamSource("s", redis_address).open("s", None)
    bad, ok = r.read(10, 1.0)
    r.close()
    assert isinstance(bad, Malformed)
    assert bad.where == f"s@{bad_id}"
    assert bad.raw == {b"v": b"\xff\xfe"}
    assert "UTF-8" in bad.reason
    assert ok == {"v": "ok"}
    r = RedisStreamSource("s", redis_address, binary=True, group="other").open("s", None)
    assert r.read(10, 1.0) == [{b"v": b"\xff\xfe"}, {b"v": b"ok"}]
    r.close()


def test_unreachable_server_fails_fast_with_connector_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = RedisStreamSource("s", f"127.0.0.1:{port}", connect_timeout=1.0)
    with pytest.raises(ConnectorError, match=f"127.0.0.1:{port}"):
        src.partitions()
    with pytest.raises(ConnectorError, match="redis-server"):
        src.open("s", None)
    with pytest.raises(ConnectorError, match=f"127.0.0.1:{port}"):
        RedisStreamSink("out", f"127.0.0.1:{port}", connect_timeout=1.0).open("w", 0, 1)


def test_server_gone_mid_read_raises_connector_error(tmp_path):
    from rtml._control._local_redis import LocalRedis

    with LocalRedis(str(tmp_path)) as server:
        r = RedisStreamSource("s", server.address, connect_timeout=1.0).open("s", None)
    try:
        with pytest.raises(ConnectorError, match="lost Redis"):
            r.read(10, 0.1)
    finally:
        r.close()


def test_exactly_once_sink_skips_repeated_epochs(client, redis_address):
    sink = RedisStreamSink("out", redis_address)
    assert sink.exactly_once
    w = sink.open("flow/sink/0", 0, 2)
    w.write_epoch(1, [{"a": 1, "b": 2.5, "c": b"raw", "d": [1, 2], "e": None, "f": True}])
    w.write_epoch(2, [{"a": 2}, "plain"])
    w.close()
    w = sink.open("flow/sink/0", 0, 2)  # a restarted writer is handed epoch 2 again
    w.write_epoch(2, [{"a": 2}, "plain"])
    w.write_epoch(1, [{"a": 1}])
    assert w.last_epoch() == 2
    w.write_epoch(3, [{"a": 3}])
    w.close()
    other = sink.open("flow/sink/1", 1, 2)
    other.write_epoch(1, [{"a": "x"}])
    other.close()
    entries = [fields for _id, fields in client.xrange("out")]
    assert entries[0] == {
        b"a": b"1",
        b"b": b"2.5",
        b"c": b"raw",
        b"d": b"[1, 2]",
        b"e": b"null",
        b"f": b"true",
    }
    assert entries[1:] == [{b"a": b"2"}, {b"value": b'"plain"'}, {b"a": b"3"}, {b"a": b"x"}]
    assert client.hgetall("out:rtml-epochs") == {b"flow/sink/0": b"3", b"flow/sink/1": b"1"}


def test_exactly_once_epoch_is_atomic(client, redis_address):
    w = RedisStreamSink("out", redis_address).open("w", 0, 1)
    with pytest.raises(ConnectorError, match="empty dict"):
        w.write_epoch(1, [{"a": 1}, {}])
    assert client.xlen("out") == 0
    assert client.hget("out:rtml-epochs", "w") is None
    w.write_epoch(1, [{"a": 1}])
    w.close()
    assert client.xlen("out") == 1


def test_at_least_once_sink_and_maxlen_round_trip(client, redis_address):
    sink = RedisStreamSink("out", redis_address, exactly_once=False, maxlen=1000)
    assert not sink.exactly_once
    w = sink.open("w", 0, 1)
    w.write([{"i": i} for i in range(5)])
    w.flush()
    w.write([{"i": 5}])
    w.close()
    r = RedisStreamSource("out", redis_address).open("out", None)
    assert [e["i"] for e in r.read(100, 1.0)] == [str(i) for i in range(6)]
    r.close()
