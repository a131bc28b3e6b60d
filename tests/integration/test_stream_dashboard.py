"""Library panels on the dashboard: a running dataflow shows in the Streams panel, in the
JSON snapshot and on the page in a real headless Chromium."""

from __future__ import annotations

import json

from test_dashboard import CHROMIUM, CHROMIUM_ARGS, DEADLINE_MS, _playwright, fetch

import rtml
from conftest import wait_for
from rtml import stream as rs
from rtml._observability._sources import current_source
from rtml.dashboard import register_panel, start_dashboard, unregister_panel
from rtml.dashboard._panels import panels_view


def test_a_broken_panel_shows_its_error_and_the_others_stay():
    register_panel("ok", "OK", lambda: [{"a": 1}])
    register_panel("broken", "Broken", lambda: 1 / 0)
    try:
        view = {p["name"]: p for p in panels_view()}
        assert view["ok"]["rows"] == [{"a": 1}]
        assert view["broken"]["rows"] == []
        assert "ZeroDivisionError" in view["broken"]["error"]
    finally:
        unregister_panel("ok")
        unregister_panel("broken")


def test_a_running_dataflow_shows_in_the_streams_panel(runtime):
    sync_playwright = _playwright()
    from playwright.sync_api import expect

    rtml.init(num_cpus=2, include_dashboard=False)
    flow = rs.Dataflow("on-the-page")
    (
        flow.source(rs.IterableSource(list(range(100_000)), rate=500))
        .key_by(lambda x: x % 3)
        .stateful_map(lambda s, x: (None, x))
        .sink(rs.CallableSink(lambda x: None))
    )
    run = flow.run(parallelism=2)
    handle = start_dashboard(current_source)
    try:

        def listed():
            snap = json.loads(fetch(handle.url + "/api/snapshot")[2])
            panel = {p["name"]: p for p in snap["panels"]}.get("streams")
            rows = [r for r in (panel or {}).get("rows", []) if r["name"] == "on-the-page"]
            return rows and rows[0]["events_in"] > 0 and rows

        (row,) = wait_for(listed, timeout=30, what="the dataflow in the snapshot's panels")
        assert row["status"] == "running"
        assert row["parallelism"] == 2
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(handle.url)
                streams = page.locator("#panel-streams")
                expect(streams).to_contain_text("Streams", timeout=DEADLINE_MS)
                expect(streams).to_contain_text("on-the-page", timeout=DEADLINE_MS)
                expect(streams).to_contain_text("running", timeout=DEADLINE_MS)
                assert problems == []
            finally:
                browser.close()
    finally:
        handle.stop()
        run.stop(timeout=60)
