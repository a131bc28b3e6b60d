"""The dashboard served for a real runtime: its server's lifecycle, its token, and the page
itself driven in a real headless Chromium (Debian's, installed by `make test`) during a running
workload.

Set ``RTML_UPDATE_SCREENSHOT=1`` to write the browser test's screenshot to docs/dashboard.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import rtml
from rtml._observability._sources import current_source
from rtml.dashboard import start_dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
DEADLINE_MS = 30_000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, headers, body) of a GET, without following redirects."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_serves_the_runtime_and_stops_cleanly(runtime):
    rtml.init(num_cpus=1, include_dashboard=False)
    handle = start_dashboard(current_source)
    try:
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        assert handle.token is None
        assert handle.login_url == handle.url
        status, headers, body = fetch(handle.url + "/")
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert b"static/app.js" in body
        snap = json.loads(fetch(handle.url + "/api/snapshot")[2])
        [node] = snap["nodes"]
        assert node["alive"]
        assert node["is_head"]
        assert snap["errors"] == {}
        assert {r["name"] for r in node["resources"]} >= {"CPU"}
    finally:
        handle.stop()
    assert not handle._thread.is_alive()
    assert refused(handle.port)
    handle.stop()  # idempotent


def test_a_dashboard_nobody_opens_loads_no_web_stack():
    code = (
        "import sys, urllib.request\n"
        "from rtml.dashboard import start_dashboard\n"
        "h = start_dashboard(lambda: None)\n"
        "h.stop()\n"
        "assert 'starlette' not in sys.modules and 'uvicorn' not in sys.modules\n"
        "h = start_dashboard(lambda: None)\n"
        "assert urllib.request.urlopen(h.url + '/', timeout=30).status == 200\n"
        "h.stop()\n"
        "assert 'uvicorn' in sys.modules and not h._thread.is_alive()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr  # noqa: PT018


def test_default_port_is_8265_or_a_free_one():
    def no_runtime() -> Any:
        raise RuntimeError("rtml is not initialized")

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8265))
            free = True
        except OSError:
            free = False  # another dashboard on this machine has it
    with (
        start_dashboard(no_runtime, port=None) as first,
        start_dashboard(no_runtime, port=None) as second,
    ):
        assert second.port not in (first.port, 8265)
        if free:
            assert first.port == 8265
        snap = json.loads(fetch(second.url + "/api/snapshot")[2])
        assert "not initialized" in snap["errors"]["source"]
        with pytest.raises(OSError):
            start_dashboard(no_runtime, port=first.port)


def test_a_dashboard_off_loopback_needs_the_token():
    token = os.urandom(32)

    def no_runtime() -> Any:
        raise RuntimeError("rtml is not initialized")

    with pytest.raises(ValueError, match="token"):
        start_dashboard(no_runtime, host="0.0.0.0")
    with start_dashboard(no_runtime, host="0.0.0.0", token=token) as handle:
        assert handle.login_url == f"{handle.url}/?token={token.hex()}"
        for path in ("/", "/api/snapshot", "/static/app.js", "/api/logs/x/1"):
            assert fetch(handle.url + path)[0] == 401, path
        assert fetch(handle.url + "/?token=" + os.urandom(32).hex())[0] == 401
        status, headers, _ = fetch(handle.login_url)
        assert status == 303
        assert headers["Location"] == "/"
        cookie = headers["Set-Cookie"].split(";")[0]
        assert token.hex() not in cookie
        assert fetch(handle.url + "/api/snapshot", {"Cookie": cookie})[0] == 200
        assert (
            fetch(handle.url + "/api/snapshot", {"Authorization": f"Bearer {token.hex()}"})[0]
            == 200
        )
    assert refused(handle.port)


# ------------------------------------------------------------------------------ the browser
def _playwright() -> Any:
    """playwright's sync API, with Debian's chromium; skipped (failed on CI) without them."""
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is missing (`make test` installs Debian's chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


@rtml.remote
def probe_square(x):
    print(f"probe log line {x}")  # noqa: T201
    return x * x


@rtml.remote
def probe_fails():
    raise RuntimeError("probe failure 4242")


@rtml.remote
def probe_wait(path):
    import time

    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within 120 s")
        time.sleep(0.01)
    return path


@rtml.remote
def probe_latency(i, seconds):
    import time

    time.sleep(seconds)  # spreads the ends over the page's polling cycle
    return i


@rtml.remote
class ProbeActor:
    def hello(self):
        return "hi"


@rtml.remote
def simulate(ms):
    import time

    time.sleep(ms / 1000)
    return ms


@rtml.remote
def rollout(ms):
    import time

    time.sleep(ms / 1000)
    return -ms


@rtml.remote
def fuse(*values):
    return max(values)


class Workload:
    """A driver thread running rounds of simulate/rollout tasks fused by a dependent task."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, name="dashboard-test-workload")

    def _run(self) -> None:
        k = 0
        try:
            while not self.stop.is_set():
                sims = [simulate.remote(10 + (k + j) * 17 % 90) for j in range(4)]
                rolls = [rollout.remote(5 + (k * 7 + j) % 40) for j in range(3)]
                rtml.get(fuse.remote(*sims, *rolls), timeout=60)
                k += 1
                self.rounds = k
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def start(self) -> Workload:
        self.thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(90)
        assert not self.thread.is_alive()


def measure_latency(page: Any, label: str, first: int, n: int = 20) -> list[float]:
    """Run ``n`` probe tasks one at a time; the seconds from each one's end (the node's clock
    when its result came back) to the page first drawing it (the page's clock, same machine).

    Each runs a different time (0 to 0.5 s) so that the ends fall at every phase of the page's
    polling cycle, not just after the page saw the previous one.
    """
    count = (
        "n => [...window.rtmlSeen.values()].filter(r => r.func === 'probe_latency' "
        "&& !r.initial).length >= n"
    )
    for i in range(first, first + n):
        assert rtml.get(probe_latency.remote(i, (i * 0.137) % 0.5), timeout=60) == i
        page.wait_for_function(count, arg=i + 1, timeout=DEADLINE_MS)
    lat = page.evaluate(
        "() => [...window.rtmlSeen.values()].filter(r => r.func === "
        "'probe_latency' && !r.initial).map(r => r.latency)"
    )[first:]
    assert len(lat) == n
    ms = sorted(x * 1000 for x in lat)
    print(  # noqa: T201
        f"\ndashboard latency {label}, task end to page (n={n}): median "
        f"{statistics.median(ms):.0f} ms, p90 {ms[int(0.9 * n) - 1]:.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )
    return lat


@pytest.mark.slow
def test_the_page_shows_a_running_workload_in_chromium(runtime, gate_path, tmp_path):
    sync_playwright = _playwright()
    from playwright.sync_api import expect

    rtml.init(num_cpus=3, include_dashboard=False)
    actor = ProbeActor.remote()
    assert rtml.get(actor.hello.remote(), timeout=60) == "hi"
    assert rtml.get([probe_square.remote(i) for i in range(5)], timeout=60) == [0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError, match="probe failure 4242"):
        rtml.get(probe_fails.remote(), timeout=60)
    blocked = probe_wait.remote(str(gate_path))  # running while the page is looked at
    big = rtml.put(b"x" * 300_000)  # an object in shared memory
    node_id = rtml.nodes()[0]["NodeID"]
    handle = start_dashboard(current_source)
    problems: list[str] = []
    workload: Workload | None = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning")
                        else None
                    ),
                )
                page.goto(handle.url)
                expect(page.locator("#status")).to_have_text("live", timeout=DEADLINE_MS)
                nodes = page.locator("#nodes .node")
                expect(nodes).to_have_count(1, timeout=DEADLINE_MS)
                for text in ("head", "CPU", node_id[-12:]):
                    expect(nodes).to_contain_text(text, timeout=DEADLINE_MS)
                for panel in ("#tasks-by-func", "#recent-tasks"):
                    expect(page.locator(panel)).to_contain_text("probe_square", timeout=DEADLINE_MS)
                failures = page.locator("#failures")
                for text in (
                    "RuntimeError: probe failure 4242",
                    'raise RuntimeError("probe failure 4242")',
                    "Traceback (most recent call last)",
                ):
                    expect(failures).to_contain_text(text, timeout=DEADLINE_MS)
                expect(page.locator("#actors")).to_contain_text("ProbeActor", timeout=DEADLINE_MS)
                expect(page.locator("#actors")).to_contain_text("ALIVE", timeout=DEADLINE_MS)
                live = page.locator("#live-tasks")
                expect(live).to_contain_text("probe_wait", timeout=DEADLINE_MS)
                expect(live).to_contain_text("RUNNING", timeout=DEADLINE_MS)
                expect(page.locator("#objects")).to_contain_text(
                    "SHARED_MEMORY", timeout=DEADLINE_MS
                )
                # the log of the worker that printed: picked from the list, then shown
                src = current_source()
                pid = next(
                    lg["pid"]
                    for lg in src.logs()
                    if "probe log line" in src.read_log(lg["node_id"], lg["pid"])
                )
                page.locator(f'#logs-list li[data-pid="{pid}"]').click(timeout=DEADLINE_MS)
                expect(page.locator("#log-view")).to_contain_text(
                    "probe log line", timeout=DEADLINE_MS
                )
                # Then a workload flows in live. (The blocked task ends first: the node may
                # queue a task behind a busy worker, and one that never ends would hold it.)
                gate_path.touch()
                assert rtml.get(blocked, timeout=60) == str(gate_path)
                expect(live).not_to_contain_text("probe_wait", timeout=DEADLINE_MS)
                workload = Workload().start()
                # the timeline drew its slices (the canvas keeps what it drew, for hovering)
                # and the counts move without a reload
                page.wait_for_function(
                    "() => (document.getElementById('timeline')._hits || [])"
                    ".some(h => h.s.func === 'simulate')",
                    timeout=DEADLINE_MS,
                )
                expect(page.locator("#tasks-by-func")).to_contain_text("fuse", timeout=DEADLINE_MS)
                loaded = measure_latency(page, "under load", 0)
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                workload.join()
                assert workload.rounds > 0 and not workload.errors, workload.errors  # noqa: PT018
                idle = measure_latency(page, "idle", len(loaded))
                assert len(idle) == len(loaded)
            finally:
                browser.close()
    finally:
        if workload is not None:
            workload.join()
        gate_path.touch()
        handle.stop()
    del big
    assert not problems, problems
    if os.environ.get("RTML_UPDATE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "dashboard.png", SCREENSHOT)
