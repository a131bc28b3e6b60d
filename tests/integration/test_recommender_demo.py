"""The live recommender (examples/recommender, `make demo`), run shortly as a user runs it:
embedded and Redis sources, `--chaos`, and its live page in a real Chromium.

The checks are about consistency, not speed: every impression becomes exactly one labelled
sample, no request fails, versions are published and served, the frozen model falls behind
the continual one after the drift, the files of the run are written.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_dashboard import CHROMIUM, CHROMIUM_ARGS, DEADLINE_MS, _playwright

from conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "recommender" / "run.py"
SHORT = ["--duration", "10", "--rate", "1000", "--requests-per-s", "50", "--lead", "8"]

pytest.importorskip("river")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, int, Path]:
    port = _free_port()
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DEMO),
            *SHORT,
            "--port",
            str(port),
            "--out",
            str(out),
            "--json",
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, port, out


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[dict, str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(
            f"the demo did not finish within {timeout}s:\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    assert proc.returncode == 0, f"demo failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return json.loads(stdout.strip().splitlines()[-1]), stdout


def _expected() -> tuple[int, int]:
    """(events, impressions) of the short run's world: it is a pure function of its seed."""
    sys.path.insert(0, str(DEMO.parent))
    try:
        import world
    finally:
        sys.path.remove(str(DEMO.parent))
    w = world.World(rate=1000, duration=10, drift_at=5)
    events = list(w.events(0.0))
    return len(events), sum(1 for e in events if e["k"] == "i")


def _check(doc: dict, out: Path) -> dict:
    s = doc["details"]
    for field in (
        "events_per_s",
        "requests_per_s",
        "freshness_p99_s",
        "serve_p99_ms",
        "failed_requests",
        "auc_continual_after_drift",
        "auc_frozen_after_drift",
    ):
        assert field in doc, field
    events, impressions = _expected()
    assert s["events"] == events  # every event went through the dataflow
    assert s["samples_learned"] == impressions  # each impression is one labelled sample
    assert s["learner_counts"]["bad_features"] == 0
    assert s["dead_letters"] == 0
    assert doc["failed_requests"] == 0, s["failures"]
    assert s["requests"] > 0
    assert doc["requests_per_s"] > 0
    assert s["versions"] >= 5
    assert s["versions_served"] >= 1
    assert 0 < s["freshness_p50_s"] <= doc["freshness_p99_s"]
    assert 0 < s["serve_p50_ms"] <= doc["serve_p99_ms"]
    # The drift hurts the model that stopped learning, and not the one that kept learning.
    assert doc["auc_continual_after_drift"] > doc["auc_frozen_after_drift"] + 0.05
    assert s["auc_frozen_before_drift"] > doc["auc_frozen_after_drift"] + 0.05
    for name in ("summary.json", "series.json", "chart.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text())["events"] == events
    return s


def test_the_demo_learns_serves_and_shows_it_live_in_a_browser(tmp_path):
    sync_playwright = _playwright()
    from playwright.sync_api import expect

    proc, port, out = _start(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

                def opened():
                    assert proc.poll() is None, "the demo ended before its page opened"
                    try:
                        r = page.goto(f"http://127.0.0.1:{port}/", timeout=5000)
                    except Exception:  # nothing listens yet
                        return False
                    return r is not None and r.status == 200  # 404 until the page is routed

                wait_for(opened, timeout=90, what="the demo's live page")
                expect(page.locator("h1")).to_contain_text("Live recommender", timeout=DEADLINE_MS)
                continual = page.locator("svg#auc polyline.series.continual")
                expect(continual).to_have_count(1, timeout=60_000)

                def points() -> int:
                    n = page.evaluate(
                        "() => { const l = document.querySelector("
                        "'svg#auc polyline.series.continual');"
                        " return l ? l.points.numberOfItems : 0; }"
                    )
                    return n >= 5 or proc.poll() is not None

                wait_for(points, timeout=90, what="five points on the AUC curve")
                assert (
                    page.evaluate(
                        "() => document.querySelector("
                        "'svg#auc polyline.series.continual')"
                        ".points.numberOfItems"
                    )
                    >= 5
                )
                expect(page.locator("svg#auc line.mark.drift")).to_have_count(1)
                expect(page.locator("#tiles")).to_contain_text("model version")
                assert problems == []
            finally:
                browser.close()
    finally:
        doc, stdout = _finish(proc)
    _check(doc, out)
    assert "live recommender" in stdout
    assert "AUC continual" in stdout


def test_the_demo_reads_its_events_through_redis_streams(tmp_path, redis_address):
    proc, _, out = _start(tmp_path, "--source", "redis", "--redis", redis_address)
    doc, _ = _finish(proc)
    s = _check(doc, out)
    assert s["source"] == "redis"


def test_the_demo_with_chaos_loses_no_request_and_the_learner_resumes(tmp_path):
    proc, _, out = _start(tmp_path, "--chaos")
    doc, _ = _finish(proc)
    s = _check(doc, out)
    kills = {c["what"]: c for c in s["chaos"]}
    assert set(kills) == {"learner", "replica"}
    assert kills["replica"]["pid"]
    assert s["learner_restarts"] >= 1
    # The AUC curve goes on after the learner's restart: its metrics came back with its state.
    series = json.loads((out / "series.json").read_text())
    after = [r["auc_continual"] for r in series if r["t"] > kills["learner"]["t"] + 2]
    assert after
    assert all(a is not None for a in after[-3:])
