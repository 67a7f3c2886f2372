"""The SLO pages in a real browser: Chromium driven by Playwright.

The web app runs in a real HTTP server over a MemoryStore holding two hours of
generated checkout traffic, evaluated minute by minute by the real rules
generated from config/slos.yaml (tests/slo_data.py): 10% of checkouts fail (20x
the 0.5% budget, both burn-rate alerts fire) and 0.5% are slow (0.5x the latency
SLO's 1% budget: slower than 2.5 s). The test logs in as a viewer and fails on any page error,
console error or Content-Security-Policy violation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import browser_login, live_server, watch_console
from slo_data import SHIPPED_SLOS, seed_slo_store

from dashboards.app import create_app
from siem.memory import MemoryStore
from vigil.auth import UserStore
from vigil.settings import from_mapping

pytestmark = pytest.mark.browser

VIEWER, PASSWORD = "vera", "viewer password 1"


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    store = MemoryStore()
    seed_slo_store(store, time.time())
    UserStore(tmp_path / "users.db").add_user(VIEWER, "viewer", PASSWORD)
    settings = from_mapping({"data_dir": str(tmp_path), "alert": {"slos": [str(SHIPPED_SLOS)]}})
    with live_server(create_app(settings, store=store)) as url:
        yield url


def test_slo_page_shows_objective_budget_burn_rates_and_alerts(browser: Any, live_url: str) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=live_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors = watch_console(page)
    try:
        browser_login(page, live_url + "/", VIEWER, PASSWORD)
        page.get_by_role("link", name="SLOs").click()
        expect(page).to_have_url(live_url + "/slos")
        cards = page.locator("section.slo")
        expect(cards).to_have_count(2)
        latency = page.locator('section[data-slo="checkout-latency"]')
        expect(latency.locator('[data-figure="budget-remaining"]')).to_have_text("50.0%")
        expect(latency.locator(".alerts li")).to_have_count(0)

        page.get_by_role("link", name="checkout-availability").click()
        expect(page).to_have_url(live_url + "/slos/checkout-availability")
        slo = page.locator('section[data-slo="checkout-availability"]')
        expect(slo.locator('[data-figure="objective"]')).to_have_text("99.5% over 30d")
        expect(slo.locator('[data-figure="error-budget"]')).to_have_text("0.50%")
        # 10% errors over the window spend 20 budgets: 1 - 20 = -1900% remains.
        expect(slo.locator('[data-figure="budget-remaining"]')).to_have_text("-1900.0%")
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
            row = slo.locator(f'tr[data-window="{window}"] td')
            expect(row.nth(1)).to_have_text("10.000%")
            expect(row.nth(2)).to_have_text("20.00x")
        thresholds = slo.locator("table.thresholds tbody tr")
        expect(thresholds).to_have_count(4)
        expect(thresholds.first).to_contain_text("page14.4x1h5m")
        expect(thresholds.first.locator("td").last).to_have_text("exceeded")
        alerts = slo.locator(".alerts li")
        expect(alerts).to_have_count(2)
        expect(alerts.first).to_contain_text("CheckoutAvailabilityFastBurn firing (page)")
        expect(alerts.first.get_by_role("link", name="runbook")).to_have_attribute(
            "href", "/runbooks/slo-checkout-availability.md"
        )
        expect(page.locator("#status")).to_contain_text("updated")
        assert errors == []
    finally:
        context.close()
