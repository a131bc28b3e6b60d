"""The dashboard's model and web app against a fake StateSource: no processes, no sockets.

The app is driven as an ASGI callable (no HTTP client needed); the model's folding of task
events is checked against hand-made events.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from rtml._control._events import EventLog, EventPage
from rtml.dashboard import _model
from rtml.dashboard._app import COOKIE, Backend, build_app, cookie_value
from rtml.dashboard._hosts import is_loopback
from rtml.dashboard._model import DashboardModel, TaskBook

NODE = "aa11"
TOKEN = bytes(range(32))


def event(
    task_id: int,
    state: str,
    attempt: int = 1,
    func: str = "f",
    start: float | None = None,
    end: float | None = None,
    pid: int = 101,
    **extra: Any,
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "task_id": task_id,
        "attempt": attempt,
        "state": state,
        "time": end or 100.0,
        "node_id": NODE,
        "worker_id": pid,
        "name": func,
        "func": func,
        **extra,
    }
    if start is not None:
        ev["start"], ev["end"] = start, end
    return ev


class FakeSource:
    """A StateSource over plain lists; records which threads call it."""

    def __init__(self) -> None:
        self.log = EventLog(1000)
        self.live: list[dict[str, Any]] = []
        self.actor_rows: list[dict[str, Any]] = []
        self.object_rows: list[dict[str, Any]] = []
        self.worker_rows: list[dict[str, Any]] = [
            {
                "worker_id": "2",
                "pid": 101,
                "node_id": NODE,
                "state": "IDLE",
                "actor_id": None,
                "tasks": [],
                "blocked": False,
            },
            {
                "worker_id": "3",
                "pid": 102,
                "node_id": NODE,
                "state": "ACTOR",
                "actor_id": "a1",
                "tasks": [],
                "blocked": False,
            },
        ]
        self.texts = {(NODE, 101): "line one\nline two\nline three\n"}
        self.threads: set[int] = set()
        self.closed = False
        self.fail: set[str] = set()

    def _call(self, name: str) -> None:
        self.threads.add(threading.get_ident())
        if name in self.fail:
            raise ConnectionError(f"{name} is down")

    def task_events(self, since: int = 0, limit: int | None = None) -> EventPage:
        self._call("task_events")
        return self.log.query(since=since, limit=limit)

    def live_tasks(self) -> list[dict[str, Any]]:
        self._call("live_tasks")
        return list(self.live)

    def actors(self) -> list[dict[str, Any]]:
        self._call("actors")
        return list(self.actor_rows)

    def objects(self) -> list[dict[str, Any]]:
        self._call("objects")
        return list(self.object_rows)

    def nodes(self) -> list[dict[str, Any]]:
        self._call("nodes")
        return [
            {
                "node_id": NODE,
                "index": 0,
                "address": "127.0.0.1",
                "alive": True,
                "is_head": True,
                "resources_total": {"CPU": 2.0, "object_store_memory": 1000.0},
                "resources_available": {"CPU": 0.5, "object_store_memory": 1000.0},
                "queued": 1,
                "tasks": 2,
                "death_cause": None,
            }
        ]

    def workers(self) -> list[dict[str, Any]]:
        self._call("workers")
        return list(self.worker_rows)

    def logs(self) -> list[dict[str, Any]]:
        self._call("logs")
        return [
            {"node_id": n, "pid": p, "kind": "worker", "path": f"/x/worker-{p}.log", "size": len(t)}
            for (n, p), t in self.texts.items()
        ]

    def read_log(self, node_id: str, pid: int, tail: int | None = None) -> str:
        self._call("read_log")
        text = self.texts.get((node_id, pid))
        if text is None:
            raise ValueError(f"no log for worker pid {pid} on node {node_id}")
        return "".join(text.splitlines(keepends=True)[-tail:]) if tail else text

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------ task book
def test_book_keeps_the_telling_state_of_each_task_and_counts_by_function():
    book = TaskBook()
    book.add(
        [
            event(1, "FINISHED", func="f", start=1.0, end=1.5),
            event(2, "RETRIED", attempt=1, func="g", start=1.0, end=2.0, error="E: x"),
            event(2, "FINISHED", attempt=2, func="g", start=2.0, end=2.25),
            event(
                3,
                "FAILED",
                func="g",
                start=3.0,
                end=3.5,
                error="ValueError: bad",
                traceback="Traceback...\nValueError: bad\n",
                parent="1",
            ),
            event(4, "FINISHED", attempt=2, func="f", start=4.0, end=4.1),
            event(4, "RETRIED", attempt=1, func="f"),  # late: an earlier attempt
            event(5, "FORWARDED", func="h"),
        ]
    )
    assert book.state_of("2") == "FINISHED"
    assert book.state_of("4") == "FINISHED"
    assert book.state_of("5") == "FORWARDED"
    assert book.by_state == {"FINISHED": 3, "FAILED": 1}
    assert book.by_func["g"] == {"FINISHED": 1, "FAILED": 1}
    assert book.retries == 2
    total, n, longest = book.func_time["f"]
    assert n == 2
    assert total == pytest.approx(0.6)
    assert longest == pytest.approx(0.5)
    [failure] = book.failures
    assert failure["error"] == "ValueError: bad"
    assert "Traceback" in failure["traceback"]
    assert failure["parent_func"] == "f"
    # one slice per execution that has an interval, failed attempts included
    assert [(s["task_id"], s["state"]) for s in book.slices] == [
        ("1", "FINISHED"),
        ("2", "RETRIED"),
        ("2", "FINISHED"),
        ("3", "FAILED"),
        ("4", "FINISHED"),
    ]
    book.validate()


def test_book_memory_is_bounded_and_totals_survive_eviction():
    book = TaskBook(max_tasks=10, max_slices=5, max_failures=3, max_recent=4)
    book.add(event(i, "FAILED" if i % 2 else "FINISHED", start=i, end=i + 0.5) for i in range(100))
    assert len(book.tasks) == 10
    assert len(book.slices) == 5
    assert len(book.failures) == 3
    assert len(book.recent) == 4
    assert book.by_state == {"FINISHED": 50, "FAILED": 50}
    book.validate()


# ------------------------------------------------------------------------------ model
def test_snapshot_merges_events_with_live_state():
    src = FakeSource()
    src.log.append(
        [
            event(1, "FINISHED", func="f", start=90.0, end=95.0),
            event(2, "FINISHED", func="f", start=95.0, end=99.0, pid=102),
        ]
    )
    src.live = [
        {
            "task_id": "7",
            "name": "slow",
            "state": "RUNNING",
            "node_id": NODE,
            "worker_pid": 101,
            "actor_id": None,
            "job_id": "",
            "attempt": 1,
            "submitted": 80.0,
        },
        {
            "task_id": "8",
            "name": "slow",
            "state": "PENDING_SCHEDULING",
            "node_id": NODE,
            "worker_pid": None,
            "actor_id": None,
            "job_id": "",
            "attempt": 1,
            "submitted": 99.0,
        },
        {
            "task_id": "9",
            "name": "fwd",
            "state": "FORWARDED",
            "node_id": NODE,
            "worker_pid": None,
            "actor_id": None,
            "job_id": "",
            "attempt": 1,
            "submitted": 99.0,
        },
        {
            "task_id": "2",
            "name": "f",
            "state": "RUNNING",
            "node_id": NODE,  # already done
            "worker_pid": 102,
            "actor_id": None,
            "job_id": "",
            "attempt": 1,
            "submitted": 94.0,
        },
    ]
    src.actor_rows = [
        {
            "actor_id": "a1",
            "class_name": "Counter",
            "name": None,
            "namespace": None,
            "state": "ALIVE",
            "node_id": NODE,
            "pid": 102,
            "num_restarts": 0,
            "death_cause": None,
            "job_id": "",
        }
    ]
    src.object_rows = [
        {
            "object_id": "o1",
            "size": 400,
            "where": "SHARED_MEMORY",
            "node_id": NODE,
            "ref_count": 1,
            "holders": ["driver"],
            "task_id": "1",
        },
        {
            "object_id": "o2",
            "size": 5,
            "where": "INLINE",
            "node_id": NODE,
            "ref_count": 1,
            "holders": ["driver"],
            "task_id": "",
        },
    ]
    model = DashboardModel(lambda: src, clock=lambda: 100.0)
    snap = model.snapshot(window=30.0)
    json.dumps(snap)  # everything the page gets is JSON
    assert snap["events"] == {"next_seq": 2, "read": 2, "dropped": 0}
    tasks = snap["tasks"]
    assert tasks["by_state"] == {"FINISHED": 2, "RUNNING": 1, "PENDING": 1}
    assert {r["func"]: (r["finished"], r["running"], r["pending"]) for r in tasks["by_func"]} == {
        "f": (2, 0, 0),
        "slow": (0, 1, 1),
    }
    assert [t["task_id"] for t in tasks["recent"]] == ["2", "1"]  # newest first
    [node] = snap["nodes"]
    assert node["workers"] == 2
    assert node["running"] == 1
    cpu = next(r for r in node["resources"] if r["name"] == "CPU")
    assert cpu == {"name": "CPU", "total": 2.0, "used": 1.5}
    assert snap["objects"]["store"] == {"used": 400, "spilled": 0, "capacity": 1000.0}
    assert snap["objects"]["top"][0]["func"] == "f"
    assert snap["actors"]["by_state"] == {"ALIVE": 1}
    tl = snap["timeline"]
    assert [s["task_id"] for s in tl["slices"]] == ["1", "2"]
    [running] = tl["running"]
    assert running["task_id"] == "7"
    assert running["start"] == 95.0
    assert tl["rows"] == [
        {"node_id": NODE, "worker_pid": 101, "actor": None},
        {"node_id": NODE, "worker_pid": 102, "actor": "Counter"},
    ]
    assert snap["logs"][0]["pid"] == 101
    assert snap["errors"] == {}
    # the timeline window drops what ended before it
    assert [s["task_id"] for s in model.snapshot(window=3.0)["timeline"]["slices"]] == ["2"]
    model.book.validate()


def test_snapshot_reads_new_events_only_and_pages_through_a_backlog(monkeypatch):
    monkeypatch.setattr(_model, "_PAGE", 7)
    src = FakeSource()
    src.log.append([event(i, "FINISHED") for i in range(20)])
    model = DashboardModel(lambda: src)
    assert model.ingest() == 20
    assert model.book.events_read == 20
    src.log.append([event(20, "FAILED", error="E: e")])
    assert model.ingest() == 21
    assert model.book.by_state == {"FINISHED": 20, "FAILED": 1}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_source_is_reported_and_its_last_answer_kept():
    src = FakeSource()
    src.actor_rows = [{"actor_id": "a1", "class_name": "A", "state": "ALIVE"}]
    model = DashboardModel(lambda: src, max_age=0, monotonic=FakeClock())
    assert model.snapshot()["actors"]["total"] == 1
    src.fail = {"actors"}
    src.actor_rows = []
    snap = model.snapshot()
    assert snap["actors"]["total"] == 1
    assert "actors is down" in snap["errors"]["actors"]
    src.fail = {"task_events"}
    assert model.snapshot()["errors"] == {"task_events": "ConnectionError: task_events is down"}
    src.fail = set()
    assert model.snapshot()["errors"] == {}


def test_listings_are_reused_for_max_age_and_longer_when_slow_to_read():
    clock = FakeClock()
    src = FakeSource()
    calls: list[float] = []

    def slow_objects() -> list[dict[str, Any]]:
        calls.append(clock.now)
        clock.now += 1.0  # a listing that takes a second to read
        return []

    src.objects = slow_objects  # type: ignore[method-assign]
    model = DashboardModel(lambda: src, max_age=0.5, monotonic=clock)
    model.snapshot()  # the others were read at 0.0
    assert calls == [0.0]
    assert clock.now == 1.0
    actor = {"actor_id": "a1", "class_name": "A", "state": "ALIVE"}
    src.actor_rows = [actor]
    assert model.snapshot()["actors"]["total"] == 1  # older than max_age: re-read at 1.0
    src.actor_rows = [actor, {**actor, "actor_id": "a2"}]
    clock.now = 1.4
    assert model.snapshot()["actors"]["total"] == 1  # younger than max_age: reused
    clock.now = 1.6
    assert model.snapshot()["actors"]["total"] == 2
    assert calls == [0.0]  # the slow one: reused for 1 / DUTY s
    clock.now = 1.0 + 1.0 / _model.DUTY
    model.snapshot()
    assert calls == [0.0, 1.0 + 1.0 / _model.DUTY]


def test_the_source_factory_is_retried_until_it_works_and_closed_once():
    made: list[FakeSource] = []

    def factory() -> FakeSource:
        if not made:
            made.append(FakeSource())
            raise RuntimeError("rtml is not initialized")
        return made[0]

    model = DashboardModel(factory)
    snap = model.snapshot()
    assert "not initialized" in snap["errors"]["source"]
    assert snap["nodes"] == []
    assert model.snapshot()["nodes"][0]["node_id"] == NODE
    model.close()
    model.close()
    assert made[0].closed


# ------------------------------------------------------------------------------ web app
async def asgi(
    app: Any, path: str, query: str = "", headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, list[tuple[str, str]], bytes]:
    hdrs = {"host": "127.0.0.1:8265", **(headers or {})}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8265),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return (
        start["status"],
        [(k.decode(), v.decode()) for k, v in start["headers"]],
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


@pytest.fixture
def served():
    """A fake source, its backend and a function that runs requests against the app."""
    src = FakeSource()
    backend = Backend(DashboardModel(lambda: src))
    loop = asyncio.new_event_loop()

    def run(coro: Any) -> Any:
        return loop.run_until_complete(coro)

    yield src, backend, run
    backend.close()
    loop.close()


def test_pages_and_json_endpoints(served):
    src, backend, run = served
    src.log.append(
        [
            event(
                1,
                "FAILED",
                func="boom",
                start=1.0,
                end=2.0,
                error="E: x",
                traceback="Traceback (most recent call last):\nE: x\n",
            )
        ]
    )
    app = build_app(backend)
    status, headers, body = run(asgi(app, "/"))
    assert status == 200
    assert b"<title>rtml dashboard</title>" in body
    assert ("content-security-policy", dict(headers)["content-security-policy"]) in headers
    for name in ("app.js", "app.css"):
        status, headers, body = run(asgi(app, f"/static/{name}"))
        assert status == 200
        assert body
    assert run(asgi(app, "/static/nope.js"))[0] == 404
    status, _, body = run(asgi(app, "/api/snapshot"))
    snap = json.loads(body)
    assert status == 200
    assert snap["failures"][0]["traceback"].startswith("Traceback")
    for name in ("nodes", "tasks", "actors", "objects", "workers", "timeline", "failures", "logs"):
        status, _, body = run(asgi(app, f"/api/{name}"))
        assert status == 200
        if name != "timeline":  # the timeline's window moves with the clock
            assert json.loads(body) == json.loads(json.dumps(snap[name])), name
    status, _, body = run(asgi(app, f"/api/logs/{NODE}/101", "tail=2"))
    assert status == 200
    assert json.loads(body)["text"] == "line two\nline three\n"
    status, _, body = run(asgi(app, f"/api/logs/{NODE}/999"))
    assert status == 404
    assert "no log" in json.loads(body)["error"]
    assert run(asgi(app, f"/api/logs/{NODE}/abc"))[0] == 400
    status, headers, body = run(asgi(app, "/api/trace.json"))
    trace = json.loads(body)
    assert status == 200
    assert "attachment" in dict(headers)["content-disposition"]
    assert any(e.get("ph") == "X" and "boom" in e["name"] for e in trace["traceEvents"])
    # read-only: nothing but GET (and HEAD)
    assert run(asgi(app, "/api/snapshot", method="POST"))[0] == 405
    # the source was only ever called from the backend's one thread
    assert len(src.threads) == 1
    assert threading.get_ident() not in src.threads


def test_long_poll_answers_when_a_new_event_arrives(served):
    src, backend, run = served
    app = build_app(backend)
    first = json.loads(run(asgi(app, "/api/snapshot"))[2])
    since = first["events"]["next_seq"]

    async def poll_then_add() -> dict[str, Any]:
        waiting = asyncio.ensure_future(asgi(app, "/api/snapshot", f"since={since}&wait=5"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # nothing new: it holds the answer
        # appended on the backend's thread, as the source's own writer would
        await backend.call(src.log.append, [event(42, "FINISHED", func="late", start=1.0, end=2.0)])
        return json.loads((await asyncio.wait_for(waiting, 4))[2])

    snap = run(poll_then_add())
    assert snap["events"]["next_seq"] == since + 1
    assert snap["tasks"]["recent"][0]["func"] == "late"
    # and with nothing new it answers when the wait is over
    status, _, body = run(asgi(app, "/api/snapshot", f"since={since + 1}&wait=0.2"))
    assert status == 200
    assert json.loads(body)["events"]["next_seq"] == since + 1


def test_loopback_dashboard_only_answers_to_local_host_names(served):
    _, backend, run = served
    app = build_app(backend, token=None, open_=True)
    for host in ("127.0.0.1:8265", "localhost:8265", "[::1]:8265", "localhost"):
        assert run(asgi(app, "/api/nodes", headers={"host": host}))[0] == 200, host
    # a page elsewhere that rebinds its own name to 127.0.0.1 cannot read it
    assert run(asgi(app, "/api/nodes", headers={"host": "evil.example:8265"}))[0] == 403


def test_token_guard(served):
    _, backend, run = served
    app = build_app(backend, token=TOKEN, open_=False)
    any_host = {"host": "10.1.2.3:8265"}
    status, _, body = run(asgi(app, "/", headers=any_host))
    assert status == 401
    assert b"token" in body
    assert run(asgi(app, "/api/snapshot", headers=any_host))[0] == 401
    assert run(asgi(app, "/", "token=" + "00" * 32, headers=any_host))[0] == 401
    # the token once: a cookie, and a redirect that drops the token from the address
    status, headers, _ = run(asgi(app, "/", f"window=60&token={TOKEN.hex()}", headers=any_host))
    assert status == 303
    assert dict(headers)["location"] == "/?window=60"
    cookie = dict(headers)["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={cookie_value(TOKEN)}")
    assert "HttpOnly" in cookie
    assert TOKEN.hex() not in cookie
    with_cookie = {**any_host, "cookie": f"other=1; {COOKIE}={cookie_value(TOKEN)}"}
    assert run(asgi(app, "/api/nodes", headers=with_cookie))[0] == 200
    wrong_cookie = {**any_host, "cookie": f"{COOKIE}={cookie_value(b'x' * 32)}"}
    assert run(asgi(app, "/api/nodes", headers=wrong_cookie))[0] == 401
    bearer = {**any_host, "authorization": f"Bearer {TOKEN.hex().upper()}"}
    assert run(asgi(app, "/api/nodes", headers=bearer))[0] == 200


def test_is_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.com", ""))
