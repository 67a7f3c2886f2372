"""The Events page (Kibana Discover-like) in Chromium driven by Playwright.

The web app runs in a real HTTP server on a background thread over a
MemoryStore seeded with access events of the last ten minutes. Each test logs
in as a viewer and fails on any page error, console error or
Content-Security-Policy violation.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import browser_login, watch_console
from werkzeug.serving import make_server

from dashboards.app import create_app
from siem.memory import MemoryStore
from siem.model import Event
from vigil.auth import UserStore
from vigil.settings import from_mapping

pytestmark = pytest.mark.browser

VIEWER, PASSWORD = "vera", "viewer password 1"
ACCESS = 60  # access events, one every 10 s over the last ten minutes
ERRORS = 15  # of them 503s: every fourth
PAGE = 50  # events per page on the Events page


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    store = MemoryStore()
    now = time.time()
    events = []
    for n in range(ACCESS):
        status = 503 if n % 4 == 0 else 200
        doc = {
            "@timestamp": _iso(now - 600 + n * 10),
            "event": {"dataset": "shop.access"},
            "http": {"response": {"status_code": status}},
            "url": {"path": "/api/checkout" if n % 2 == 0 else "/api/products"},
            "message": f"GET request {n} answered {status}",
        }
        events.append(Event.from_doc(doc, source="e2e", position=f"a{n}"))
    app_doc = {"@timestamp": _iso(now - 30), "event": {"dataset": "shop.app"}, "message": "boot"}
    events.append(Event.from_doc(app_doc, source="e2e", position="app"))
    store.write(events=events)
    UserStore(tmp_path / "users.db").add_user(VIEWER, "viewer", PASSWORD)
    app = create_app(from_mapping({"data_dir": str(tmp_path)}), store=store)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _open(browser: Any, live_url: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(base_url=live_url, accept_downloads=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors = watch_console(page)
    browser_login(page, live_url + "/events", VIEWER, PASSWORD)
    return context, page, errors


def _state(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def test_events_page_query_histogram_filter_and_document(browser: Any, live_url: str) -> None:
    from playwright.sync_api import expect

    context, page, errors = _open(browser, live_url)
    try:
        # The default range, the last 15 minutes, shows every event (the login's
        # audit event too), a page of them.
        expect(page.locator("#docs-body tr.doc")).to_have_count(PAGE)
        page.fill("#query", "event.dataset: shop.access")
        page.press("#query", "Enter")
        expect(page.locator("#hits")).to_have_text(str(ACCESS))
        expect(page.locator("#histogram canvas").first).to_be_attached()
        expect(page.locator("#histogram")).to_have_attribute("data-total", str(ACCESS))
        # Newest first, a page at a time: "Load more" follows the cursor.
        expect(page.locator("#docs-body tr.doc")).to_have_count(PAGE)
        expect(page.locator("#docs-body tr.doc td.summary").first).to_contain_text(
            f"GET request {ACCESS - 1} answered"
        )
        page.get_by_role("button", name="Load more").click()
        expect(page.locator("#docs-body tr.doc")).to_have_count(ACCESS)
        expect(page.locator("#more")).to_be_hidden()
        expect(page.locator("#docs-body tr.doc td.summary").last).to_contain_text(
            "GET request 0 answered"
        )

        # The field list: top values with counts; "+" filters the value in.
        status = page.locator('#field-list li[data-field="http.response.status_code"]')
        status.locator(".field-name").click()
        value = status.locator('.top-value[data-value="503"]')
        expect(value.locator(".count")).to_have_text(f"{ERRORS} (25%)")
        value.locator(".filter-in").click()
        expect(page.locator("#hits")).to_have_text(str(ERRORS))
        assert page.input_value("#query") == (
            '(event.dataset: shop.access) and http.response.status_code: "503"'
        )
        assert _state(page)["query"] == [page.input_value("#query")]

        # "−" filters a value out.
        path = page.locator('#field-list li[data-field="url.path"]')
        path.locator(".field-name").click()
        path.locator('.top-value[data-value="/api/checkout"] .filter-out').click()
        # Every fourth event is even, so every 503 is on /api/checkout: none are left.
        expect(page.locator("#hits")).to_have_text("0")
        expect(page.locator("#empty")).to_be_visible()
        page.go_back()
        expect(page.locator("#hits")).to_have_text(str(ERRORS))

        # A column of a chosen field, and a document opened as JSON.
        page.locator('#field-list li[data-field="url.path"] .field-col').click()
        expect(page.locator('#docs-head th[data-col="url.path"]')).to_be_visible()
        first = page.locator("#docs-body tr.doc").first
        expect(first.locator('td[data-col="url.path"]')).to_have_text("/api/checkout")
        first.locator("td.expand button").click()
        detail = page.locator("#docs-body tr.detail").first
        expect(detail).to_be_visible()
        doc = json.loads(detail.locator("pre.json").inner_text())
        assert doc["http"]["response"]["status_code"] == 503
        assert errors == []
    finally:
        context.close()


def test_events_page_error_caret_url_state_paging_and_export(
    browser: Any, live_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context, page, errors = _open(browser, live_url)
    try:
        # A malformed query shows the parser's message and a caret under its column.
        page.fill("#query", "url.path: (/cart")
        page.press("#query", "Enter")
        box = page.locator("#query-error")
        expect(box).to_be_visible()
        lines = box.inner_text().split("\n")
        assert lines[0] == "url.path: (/cart"
        assert lines[2].startswith("KQL: expected ')'")
        column = int(re.search(r"at column (\d+)", lines[2]).group(1))  # type: ignore[union-attr]
        assert lines[1] == " " * (column - 1) + "^"

        # A quick range and a query: the URL carries them, a reload keeps them.
        page.get_by_role("button", name="1h").click()
        page.fill("#query", "url.path: /api/*")
        page.press("#query", "Enter")
        expect(page.locator("#hits")).to_have_text(str(ACCESS))
        expect(box).to_be_hidden()
        page.locator('#field-list li[data-field="message"] .field-col').click()
        expect(page.locator('#docs-head th[data-col="message"]')).to_be_visible()
        assert _state(page) == {
            "query": ["url.path: /api/*"],
            "from": ["now-1h"],
            "to": ["now"],
            "columns": ["message"],
        }
        page.reload()
        expect(page.locator("#hits")).to_have_text(str(ACCESS))
        assert page.input_value("#query") == "url.path: /api/*"
        expect(page.get_by_role("button", name="1h")).to_have_attribute("aria-pressed", "true")
        expect(page.locator('#docs-head th[data-col="message"]')).to_be_visible()

        # Dragging across the histogram zooms the range to the dragged stretch.
        over = page.locator("#histogram .u-over")
        box_ = over.bounding_box()
        assert box_ is not None
        y = box_["y"] + box_["height"] / 2
        page.mouse.move(box_["x"] + box_["width"] * 0.90, y)
        page.mouse.down()
        page.mouse.move(box_["x"] + box_["width"] * 0.99, y, steps=5)
        page.mouse.up()
        page.wait_for_url(re.compile(r"from=\d{4}-"))
        expect(page.locator("#hits")).not_to_have_text(str(ACCESS))
        zoomed = int(page.locator("#hits").inner_text() or "-1")
        expect(page.get_by_role("button", name="1h")).to_have_attribute("aria-pressed", "false")
        assert 0 < zoomed < ACCESS, zoomed
        page.go_back()
        expect(page.locator("#hits")).to_have_text(str(ACCESS))

        # Absolute from/to: the last five minutes of the seeded ten hold about half.
        local = (
            "s => { const d = new Date(Date.now() + s * 1000);"
            " return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); }"
        )
        page.fill("#from", page.evaluate(local, -300))
        page.fill("#to", page.evaluate(local, 60))
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"from=\d{4}-.*to=\d{4}-"))
        expect(page.locator("#hits")).not_to_have_text(str(ACCESS))
        assert 0 < int(page.locator("#hits").inner_text()) < ACCESS
        page.go_back()
        expect(page.locator("#hits")).to_have_text(str(ACCESS))

        # Export downloads every match as NDJSON, newest first.
        with page.expect_download() as info:
            page.locator("#export-ndjson").click()
        target = tmp_path / "export.ndjson"
        info.value.save_as(target)
        rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == ACCESS
        assert rows[0]["doc"]["message"] == f"GET request {ACCESS - 1} answered 200"
        assert all(rows[i]["timestamp"] >= rows[i + 1]["timestamp"] for i in range(ACCESS - 1))
        # The browser logs the bad query's 400 answer; nothing else may fail.
        assert [e for e in errors if "status of 400" not in e] == []
    finally:
        context.close()
