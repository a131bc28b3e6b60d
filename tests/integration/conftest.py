"""Broker fixtures for the stream connectors and the dataflows that use them: a throwaway
redis-server and a librdkafka mock Kafka cluster, each per test and fully torn down.

Integration tests import helpers with ``from conftest import wait_for``; with this file in
place that name resolves here, so the plain helpers of ``tests/conftest.py`` are re-exported.
"""

from __future__ import annotations

import gc
import importlib.util
import os

import pytest


def _load_root_helpers():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py")
    spec = importlib.util.spec_from_file_location("_rtml_tests_root_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_root = _load_root_helpers()
wait_for = _root.wait_for
in_threads = _root.in_threads
readme_block = _root.readme_block


@pytest.fixture
def redis_address(tmp_path):
    """``"127.0.0.1:<port>"`` of a fresh redis-server, stopped after the test."""
    from rtml._control._local_redis import LocalRedis

    with LocalRedis(str(tmp_path)) as r:
        yield r.address


@pytest.fixture
def kafka_bootstrap():
    """``bootstrap.servers`` of a fresh librdkafka mock cluster (one broker, real Kafka wire
    protocol on loopback; topics are auto-created with 4 partitions by producers), gone after
    the test.

    The mock supports transactions, but does not hide records of aborted transactions from
    ``read_committed`` consumers, nor store offsets sent with ``send_offsets_to_transaction``.
    """
    confluent_kafka = pytest.importorskip("confluent_kafka")
    owner = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
    md = owner.list_topics(timeout=10)
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
    yield bootstrap
    owner.flush(5)
    owner.close()
    del owner, md
    gc.collect()
