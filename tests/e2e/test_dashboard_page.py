"""The overview dashboard in a real browser: Chromium driven by Playwright.

The web app runs in a real HTTP server on a background thread over a
MemoryStore seeded with a few minutes of shop samples ending now, one firing
alert and one deploy event. Each test logs in as a viewer first, and fails on
any page error, console error or Content-Security-Policy violation.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import browser_login, watch_console
from werkzeug.serving import make_server

from dashboards.app import create_app
from siem.memory import MemoryStore
from siem.model import Event, Sample, make_labels
from vigil.auth import UserStore
from vigil.settings import from_mapping

pytestmark = pytest.mark.browser

INSTANCES = ("127.0.0.1:8001", "127.0.0.1:8002")
VIEWER, PASSWORD = "vera", "viewer password 1"


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def _seed(store: MemoryStore, now: float) -> None:
    samples: list[Sample] = []
    for i in range(61):  # five minutes, every 5 s
        t = now - 300 + i * 5
        for instance in INSTANCES:
            shop = {"job": "shop", "instance": instance}
            for route, status, per_step in (
                ("/api/products", "200", 10),
                ("/api/checkout", "200", 4),
                ("/api/checkout", "502", 1),
            ):
                labels = make_labels(
                    "shop_http_requests_total", method="GET", route=route, status=status, **shop
                )
                samples.append(Sample(labels, t, float(per_step * i)))
            for le, per_step in (("0.1", 8), ("0.5", 13), ("+Inf", 15)):
                labels = make_labels(
                    "shop_http_request_duration_seconds_bucket",
                    method="GET",
                    route="/api/products",
                    le=le,
                    **shop,
                )
                samples.append(Sample(labels, t, float(per_step * i)))
            for gateway, outcome, per_step in (("stripe", "approved", 3), ("adyen", "error", 1)):
                labels = make_labels(
                    "shop_payments_total", gateway=gateway, outcome=outcome, **shop
                )
                samples.append(Sample(labels, t, float(per_step * i)))
            samples.append(Sample(make_labels("shop_release_info", release="v1", **shop), t, 1.0))
            samples.append(Sample(make_labels("up", **shop), t, 1.0))
    alert = {
        "@timestamp": _iso(now - 60),
        "event": {"dataset": "vigil.alert", "action": "firing"},
        "labels": {"alertname": "ShopHighErrorRate", "severity": "critical"},
        "message": "5xx ratio above 5%",
        "vigil": {"alert": {"annotations": {"runbook_url": "/runbooks/shop-high-error-rate.md"}}},
    }
    deploy = {
        "@timestamp": _iso(now - 120),
        "event": {"dataset": "vigil.deploy", "action": "deploy"},
        "labels": {"release_before": "v0", "release_after": "v1"},
    }
    store.write(
        events=[
            Event.from_doc(alert, source="e2e", position="alert"),
            Event.from_doc(deploy, source="e2e", position="deploy"),
        ],
        samples=samples,
    )


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    store = MemoryStore()
    _seed(store, time.time())
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


def _open(browser: Any, live_url: str, **context_args: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(base_url=live_url, **context_args)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors = watch_console(page)
    browser_login(page, live_url + "/", VIEWER, PASSWORD)
    return context, page, errors


def test_dashboard_page_draws_charts_alerts_and_release(browser: Any, live_url: str) -> None:
    from playwright.sync_api import expect

    context, page, errors = _open(browser, live_url)
    try:
        for panel in ("request-rate", "error-ratio", "latency-p95", "payments"):
            expect(page.locator(f"#panel-{panel} canvas").first).to_be_attached()
            expect(page.locator(f"#panel-{panel} .error")).to_have_text("")
        expect(page.locator("#panel-request-rate .u-legend")).to_contain_text("/api/checkout")
        alerts = page.locator("#panel-alerts .alerts li")
        expect(alerts).to_have_count(1)
        expect(alerts.first).to_contain_text("ShopHighErrorRate")
        expect(alerts.first.get_by_role("link", name="runbook")).to_have_attribute(
            "href", "/runbooks/shop-high-error-rate.md"
        )
        release = page.locator('#panel-release td[data-col="release"]')
        expect(release).to_have_count(2)
        expect(release.first).to_have_text("v1")
        expect(page.locator('#panel-up td[data-col="value"]').first).to_have_text("1")
        expect(page.locator("#status")).to_contain_text("updated")

        # Switching the range redraws from the API without errors.
        with page.expect_response(lambda r: "query_range" in r.url):
            page.get_by_role("button", name="1h").click()
        expect(page.get_by_role("button", name="1h")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#status")).not_to_have_class("status failed")
        assert errors == []
    finally:
        context.close()


def test_dashboard_page_refreshes_itself(browser: Any, live_url: str) -> None:
    context, page, errors = _open(browser, live_url)
    try:
        from playwright.sync_api import expect

        # After the first round has finished, the auto-refresh (every 5 s) asks
        # the API again without any user action.
        expect(page.locator("#status")).to_contain_text("updated")
        with page.expect_request(lambda r: "/api/alerts" in r.url, timeout=15_000):
            pass
        assert errors == []
        # When the session ends, the next refresh takes the page to the login form.
        context.clear_cookies()
        page.wait_for_url(re.compile(r"/login\?next=%2F"), timeout=15_000)
    finally:
        context.close()


def test_dashboard_page_mobile_has_no_horizontal_scroll(browser: Any, live_url: str) -> None:
    context, page, errors = _open(
        browser, live_url, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    try:
        page.wait_for_selector("#panel-payments canvas", state="attached")
        width, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert width <= inner
        assert errors == []
    finally:
        context.close()


def test_dashboard_page_runs_under_csp_and_logs_out(browser: Any, live_url: str) -> None:
    context, page, errors = _open(browser, live_url)
    try:
        from playwright.sync_api import expect

        expect(page.locator("#status")).to_contain_text("updated")
        expect(page.locator("#who")).to_have_text(f"{VIEWER} (viewer)")
        assert errors == []
        # The policy is enforced and a violation is seen: an injected inline script is refused.
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.injected = 1'; document.body.appendChild(s); }"
        )
        assert page.evaluate("() => window.injected") is None
        for _ in range(50):  # the console report arrives asynchronously
            if any("Content Security Policy" in e for e in errors):
                break
            page.wait_for_timeout(50)
        assert any("Content Security Policy" in e for e in errors), errors
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/login")
        page.goto("/")
        page.wait_for_url(re.compile(r"/login\?next="))
    finally:
        context.close()
