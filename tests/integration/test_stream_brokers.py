"""Dataflows between real brokers: Redis Streams in and out (exactly once through a killed
operator actor), Kafka in and out through librdkafka's mock cluster, files in and out."""

from __future__ import annotations

import json

import pytest

import rtml
from conftest import wait_for
from rtml import stream as rs


@pytest.fixture(scope="module", autouse=True)
def _runtime():
    rtml.init(num_cpus=2)
    yield
    rtml.shutdown()


def _running_totals(flow_name, source, sink):
    flow = rs.Dataflow(flow_name)
    (
        flow.source(source)
        .map(lambda e: int(e["i"]))
        .key_by(lambda i: i % 4)
        .stateful_map(lambda s, i: ((s or 0) + 1, {"i": i, "seen": (s or 0) + 1}))
        .sink(sink)
    )
    return flow


def test_redis_stream_to_redis_stream_exactly_once_through_a_killed_actor(redis_address):
    import redis as redis_py

    host, port = redis_address.split(":")
    r = redis_py.Redis(host=host, port=int(port), decode_responses=True)
    try:
        n = 3000
        pipe = r.pipeline()
        for i in range(n):
            pipe.xadd("in", {"i": i})
        pipe.execute()
        flow = _running_totals(
            "redis-eo",
            rs.RedisStreamSource("in", redis_address),
            rs.RedisStreamSink("out", redis_address),
        )
        run = flow.run(parallelism=2, checkpoint_every=0.1, max_batch=50)
        wait_for(lambda: r.xlen("out") > 200, timeout=30, what="some output")
        rtml.kill(run._actors[1][1])
        wait_for(lambda: run.restarts == 1, timeout=30, what="recovery")
        wait_for(lambda: r.xlen("out") >= n, timeout=60, what="all output")
        run.stop(timeout=60)
        values = [int(f["i"]) for _, f in r.xrange("out")]
        assert sorted(values) == list(range(n)), "lost or duplicated entries"
        pending = r.xpending("in", "rtml")["pending"]
        assert pending == 0  # every entry acked once its checkpoint was durable
    finally:
        r.close()


def test_a_redis_source_resumes_from_the_checkpoint_not_the_group(redis_address, tmp_path):
    import redis as redis_py

    host, port = redis_address.split(":")
    r = redis_py.Redis(host=host, port=int(port), decode_responses=True)
    try:
        for i in range(100):
            r.xadd("events", {"i": i})
        sink = rs.CollectSink(exactly_once=True)
        ckpt = str(tmp_path / "ckpt")
        run = _running_totals(
            "redis-resume", rs.RedisStreamSource("events", redis_address), sink
        ).run(checkpoint_every=0.2, checkpoint_dir=ckpt)
        wait_for(lambda: sink.count() >= 100, timeout=30, what="first 100")
        run.stop(timeout=30)
        for i in range(100, 150):
            r.xadd("events", {"i": i})
        run = _running_totals(
            "redis-resume", rs.RedisStreamSource("events", redis_address), sink
        ).run(checkpoint_every=0.2, checkpoint_dir=ckpt, resume=True)
        wait_for(lambda: sink.count() >= 150, timeout=30, what="the next 50")
        run.stop(timeout=30)
        items = sink.items()
        assert sorted(e["i"] for e in items) == list(range(150))
        # Per-key running counts continued from the checkpointed state.
        assert max(e["seen"] for e in items) == 150 // 4 + 1
    finally:
        r.close()


def test_kafka_topic_to_kafka_topic_through_a_dataflow(kafka_bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition

    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(400):
        p.produce("clicks", json.dumps({"i": i}).encode(), partition=i % 4)
    assert p.flush(10) == 0
    flow = _running_totals(
        "kafka",
        rs.KafkaSource("clicks", kafka_bootstrap, format="json"),
        rs.KafkaSink("counts", kafka_bootstrap),
    )
    run = flow.run(parallelism=2, checkpoint_every=0.2)
    c = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": "check",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    got = []
    try:
        wait_for(
            lambda: "counts" in c.list_topics(timeout=5).topics, timeout=30, what="the output topic"
        )
        md = c.list_topics("counts", timeout=10)
        c.assign([TopicPartition("counts", q, 0) for q in md.topics["counts"].partitions])

        def drained():
            for m in c.consume(500, 0.2):
                if m.error() is None:
                    got.append(json.loads(m.value()))
            return len(got) >= 400

        wait_for(drained, timeout=60, what="400 records on the output topic")
    finally:
        c.close()
        run.stop(timeout=60)
        p.flush(5)
        del p
    assert sorted(e["i"] for e in got) == list(range(400))
    m = run.metrics()
    assert {f"clicks[{q}]" for q in range(4)} <= set(m["sources"])


def test_files_in_files_out_exactly_once(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(500)) + "not json\n")
    out = tmp_path / "out"
    flow = rs.Dataflow("files")
    events = flow.source(rs.FileSource(str(src)), dead_letter=True)
    events.map(lambda e: {"i": e["i"] * 2}).sink(rs.FileSink(str(out), exactly_once=True))
    bad = rs.CollectSink()
    events.dead_letters.sink(bad)
    flow.run(checkpoint_every=0.1).wait(timeout=60)
    lines = [json.loads(line) for f in sorted(out.iterdir()) for line in f.read_text().split()]
    assert sorted(e["i"] for e in lines) == [2 * i for i in range(500)]
    (dl,) = bad.items()
    assert dl.event == "not json"
    assert "in.jsonl:501" in dl.error
