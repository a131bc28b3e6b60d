"""A live recommender that learns from clicks as they happen, served while it learns.

    python examples/recommender/run.py                  # 30 s, events from an in-process source
    python examples/recommender/run.py --source redis   # through Redis Streams (a local server)
    python examples/recommender/run.py --source kafka   # through Kafka (librdkafka's mock
                                                        # cluster unless --bootstrap names one)
    python examples/recommender/run.py --chaos --json   # kill the learner and a replica midway

::

    world (users, items, drifting tastes) ─▶ impressions + clicks ─▶ rtml.stream dataflow:
        delayed labels (click within 1 s, or none), as-of joins with users/items.parquet
      ─▶ rtml.online Learner "continual" (publishes a version every 200 ms or 5k samples)
      └▶ rtml.online Learner "frozen" (learns the first 40 % of the run, then never again)
    registry ─▶ rtml.serve Recommender (2 replicas) ◀─ /recommend?user=ID&k=10 ◀─ load client
    driver ─ every 0.5 s ─▶ Timeline actor ◀─ / (the live page) and /data

At the end it prints a summary table, writes summary.json and chart.png into the run's folder
(``--out``), and with ``--json`` prints the summary as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Actor and replica processes import this example's modules too: they inherit PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join([HERE, *filter(None, [os.environ.get("PYTHONPATH")])])

import report  # noqa: E402
import world as worldlib  # noqa: E402

import rtml  # noqa: E402
from rtml import online, serve  # noqa: E402
from rtml import stream as rs  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds of events (30)")
    p.add_argument("--rate", type=float, default=5000.0, help="impressions per second (5000)")
    p.add_argument(
        "--drift-at",
        type=float,
        default=None,
        help="when tastes change, seconds after the start (default: half-way)",
    )
    p.add_argument("--requests-per-s", type=float, default=200.0, help="load client rate (200)")
    p.add_argument("--source", choices=("embedded", "redis", "kafka"), default="embedded")
    p.add_argument(
        "--redis",
        default=None,
        help="host:port of a Redis server (default: start a redis-server on a free port)",
    )
    p.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: librdkafka's in-process mock cluster)",
    )
    p.add_argument(
        "--chaos",
        action="store_true",
        help="kill the learner's actor and a serving replica during the run",
    )
    p.add_argument("--port", type=int, default=8000, help="HTTP port (8000)")
    p.add_argument(
        "--out", default=None, help="the run's folder (default: a new one under ./runs/)"
    )
    p.add_argument(
        "--lead", type=float, default=6.0, help="seconds between start-up and the first event (6)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=0.25,
        help="seconds between the dataflow's checkpoints (0.25): the learner learns "
        "each checkpoint's samples exactly once, when the checkpoint is durable",
    )
    p.add_argument(
        "--exactly-once",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learn each sample exactly once, also through a crash (default), "
        "or as samples arrive (--no-exactly-once: lower latency, at-least-once)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    if a.duration < 6:
        p.error("--duration must be at least 6 seconds (a drift needs time on both sides)")
    if a.drift_at is None:
        a.drift_at = a.duration / 2
    return a


class Brokers:
    """The events' way from the generator to the dataflow for ``--source redis|kafka``:
    a producer thread appends them as they happen; the dataflow reads them back."""

    def __init__(self, args: argparse.Namespace, work: str) -> None:
        self.kind, self.args = args.source, args
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.redis_server: Any = None
        self.mock: Any = None
        self.produced = 0
        if self.kind == "redis":
            self.address = args.redis or self._start_redis(work)
        elif self.kind == "kafka":
            self.bootstrap = args.bootstrap or self._start_mock_kafka()

    def _start_redis(self, work: str) -> str:
        import socket
        import subprocess

        if shutil.which("redis-server") is None:
            raise SystemExit(
                "--source redis needs redis-server (apt-get install redis-server) "
                "or --redis HOST:PORT of a running one"
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.redis_server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                work,
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        deadline = time.time() + 10
        while True:
            try:
                redis.Redis(port=port, socket_timeout=1).ping()
                return f"127.0.0.1:{port}"
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise SystemExit("redis-server did not start within 10 s") from None
                time.sleep(0.05)

    def _start_mock_kafka(self) -> str:
        from confluent_kafka import Producer

        self.mock = Producer({"test.mock.num.brokers": 1})
        md = self.mock.list_topics(timeout=10)
        return ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())

    def source(self) -> tuple[rs.Source, Any]:
        if self.kind == "redis":
            return rs.RedisStreamSource(
                "recommender:events", self.address, group="recommender"
            ), _decode_redis
        from confluent_kafka import Producer

        # Asking for the topic's metadata creates it (auto-creation, on in the mock cluster).
        Producer({"bootstrap.servers": self.bootstrap}).list_topics(
            "recommender-events", timeout=10
        )
        return rs.KafkaSource("recommender-events", self.bootstrap, format="json"), None

    def start(self, world: worldlib.World, start: float) -> None:
        if self.kind == "redis":
            import redis

            r = redis.Redis.from_url(f"redis://{self.address}")

            def put(events: list[dict]) -> None:
                pipe = r.pipeline(transaction=False)
                for e in events:
                    pipe.xadd("recommender:events", {"e": json.dumps(e)})
                pipe.execute()
        else:
            from confluent_kafka import Producer

            prod = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1})

            def put(events: list[dict]) -> None:
                for e in events:  # keyed by impression: its click follows it in one partition
                    prod.produce(
                        "recommender-events", json.dumps(e).encode(), key=str(e["id"]).encode()
                    )
                prod.poll(0)

        def main() -> None:
            self.produced = worldlib.produce(world, start, put, self.stop_event)
            if self.kind == "kafka":
                prod.flush(10)

        self.thread = threading.Thread(target=main, name="recommender-producer", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10)
        if self.redis_server is not None:
            self.redis_server.terminate()
            self.redis_server.wait(10)
        self.mock = None


def _decode_redis(entry: dict[str, str]) -> dict[str, Any]:
    return json.loads(entry["e"])


def _restarts(class_part: str) -> int:
    from rtml.util.state import list_actors

    return max(
        [
            a.get("num_restarts") or 0
            for a in list_actors(limit=1000)
            if class_part in (a.get("class_name") or "")
        ]
        or [0]
    )


def _replica_pids() -> list[int]:
    d = serve.status().applications["recommender"].deployments["Recommender"]
    return sorted(r["pid"] for r in d.replicas if r["state"] == "RUNNING" and r["pid"])


def _start_when_served(url: str, load: Any, registry: Any, deadline: float) -> None:
    """Start ``load`` once a model version is published and both replicas answer with one
    (each replica follows the registry by itself)."""
    import httpx

    ok = 0
    while ok < 10 and time.time() < deadline and not load.stopping():
        try:
            ok = (
                ok + 1
                if registry.current()
                and httpx.get(f"{url}?user=0&k=1", timeout=5).status_code == 200
                else 0
            )
        except httpx.HTTPError:
            ok = 0
        time.sleep(0.02)
    if ok >= 10 and not load.stopping():
        load.start()


class Chaos:
    """Kills the learner's actor at 60 % of the run (as a crash: it restarts from its last
    snapshot) and SIGKILLs a serving replica's process at 70 %."""

    def __init__(self, start: float, duration: float, learner: Any) -> None:
        self.plan = [(start + 0.6 * duration, "learner"), (start + 0.7 * duration, "replica")]
        self.learner = learner
        self.done: list[dict[str, Any]] = []

    def tick(self, now: float, start: float) -> None:
        while self.plan and now >= self.plan[0][0]:
            _, what = self.plan.pop(0)
            if what == "learner":
                self.learner.kill(restart=True)
                self.done.append({"what": what, "t": round(now - start, 2)})
            else:
                pid = (_replica_pids() or [None])[0]
                if pid:
                    os.kill(pid, signal.SIGKILL)
                self.done.append({"what": what, "pid": pid, "t": round(now - start, 2)})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    out = args.out or os.path.join("runs", time.strftime("recommender-%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="recommender-")
    world = worldlib.World(rate=args.rate, duration=args.duration, drift_at=args.drift_at)
    freeze_at = 0.4 * args.duration
    t_setup = time.time()
    rtml.init()
    # The brokers (a redis-server, or an in-process Kafka mock cluster) for --source redis|kafka.
    brokers = Brokers(args, work) if args.source != "embedded" else None
    try:
        return _run(args, out, work, world, freeze_at, brokers, t_setup)
    finally:
        try:
            serve.shutdown()
        finally:
            rtml.shutdown()
            if brokers is not None:
                brokers.close()
            shutil.rmtree(work, ignore_errors=True)


def _say(args: argparse.Namespace, *msg: Any) -> None:
    if not args.quiet:
        print(*msg, flush=True)


def _run(
    args: argparse.Namespace,
    out: str,
    work: str,
    world: worldlib.World,
    freeze_at: float,
    brokers: Brokers | None,
    t_setup: float,
) -> dict[str, Any]:
    import models
    import pipeline
    import serving
    from load import LoadClient
    from river import metrics

    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    timeline = serving.Timeline.options(name=serving.TIMELINE).remote()
    serve.run(serving.Page.bind(), name="page", route_prefix="/", blocking=False)
    _say(args, f"live page: http://127.0.0.1:{args.port}/")

    start = time.time() + args.lead
    shutil.rmtree(os.path.join(out, "models"), ignore_errors=True)  # versions of this run only
    registry = online.ModelRegistry(os.path.join(out, "models"))
    continual = online.Learner(
        models.make_model(),
        [metrics.ROCAUC()],
        window=5000,
        drift=online.Drift(action="alert"),
        registry=registry,
        publish_every=5000,
        publish_interval=0.2,
    )
    frozen = online.Learner(
        models.Frozen(models.make_model(), start + freeze_at), [metrics.ROCAUC()], window=5000
    )
    users_path, items_path = world.write_tables(start, work)
    users = rs.Table.from_parquet(users_path, key="user", time="updated_at")
    items = rs.Table.from_parquet(items_path, key="item", time="updated_at")
    serve.run(
        serving.Recommender.bind(registry, users_path, items_path),
        name="recommender",
        route_prefix="/recommend",
        blocking=False,
    )

    if brokers is None:
        source, decode = worldlib.WorldSource(world, start), None
    else:
        source, decode = brokers.source()
    flow = pipeline.build(
        source,
        world.window,
        users,
        items,
        [
            continual.sink(exactly_once=args.exactly_once, order="time"),
            frozen.sink(exactly_once=args.exactly_once, order="time"),
        ],
        decode=decode,
    )
    run = flow.run(
        parallelism=1,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=os.path.join(work, "checkpoints"),
        max_restarts=5,
    )
    if brokers is not None:
        brokers.start(world, start)
    setup_s = time.time() - t_setup
    _say(args, f"set up in {setup_s:.1f} s; first event in {start - time.time():.1f} s")

    # The load client starts once both replicas serve a first version (in the background).
    url = f"http://127.0.0.1:{args.port}/recommend"
    load = LoadClient(
        url, world.users, rate=args.requests_per_s, log=os.path.join(out, "requests.jsonl")
    )
    waiter = threading.Thread(
        target=_start_when_served,
        args=(url, load, registry, start + 60),
        name="recommender-ready",
        daemon=True,
    )
    waiter.start()
    chaos = Chaos(start, args.duration, continual) if args.chaos else None
    series: list[dict[str, Any]] = []
    end = start + args.duration + world.window + 1.0
    try:
        while True:
            now = time.time()
            if chaos is not None:
                chaos.tick(now, start)
            row = report.sample(now - start, start, continual, frozen, registry, load.poll())
            if row is not None:
                series.append(row)
            rtml.get(
                timeline.update.remote(
                    report.page_doc(series, world, freeze_at, chaos.done if chaos else [])
                ),
                timeout=10,
            )
            if not args.quiet and row is not None:
                print(report.progress(row), flush=True)
            if run.status == "failed":
                run.wait(timeout=1)  # raises the dataflow's error
            if now > end and (run.status != "running" or brokers is not None or now > end + 20):
                break
            time.sleep(0.5)
        if brokers is not None:  # a broker's stream has no end: stop once all was read
            run.stop(timeout=60)
        run.wait(timeout=30)
    finally:
        results = load.stop()
        waiter.join(timeout=10)
    summary = report.summarize(
        args,
        world,
        freeze_at,
        series,
        results,
        registry,
        run,
        continual,
        frozen,
        chaos.done if chaos else [],
        setup_s,
        start,
    )
    summary["learner_restarts"] = _restarts("_LearnerActor")
    report.write(out, summary, series, world, freeze_at)
    rtml.get(
        timeline.update.remote(
            report.page_doc(series, world, freeze_at, summary["chaos"], summary)
        ),
        timeout=10,
    )
    print(report.table(summary), flush=True)
    if args.json:
        print(json.dumps({k: summary[k] for k in report.JSON_FIELDS} | {"details": summary}))
    return summary


if __name__ == "__main__":
    main()
