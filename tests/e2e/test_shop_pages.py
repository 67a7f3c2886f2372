"""The shop's HTML pages in a real browser: Chromium driven by Playwright.

The app runs in a real HTTP server on a background thread, once per database
(the ``app`` fixture is parametrised over SQLite and PostgreSQL). Chromium is
Debian's ``/usr/bin/chromium``; without it the tests skip locally and fail in CI.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from shop.models import Order

pytestmark = pytest.mark.browser

GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
HEADPHONES = "ELEC-001"  # 249.99 EUR, 40 in stock
HEADPHONES_DE = "Kabellose Kopfhörer mit Geräuschunterdrückung"
GATEWAY_LABELS = {"stripe": "Stripe", "adyen": "Adyen", "payu": "PayU"}


def _money(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _shown(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def _future_expiry() -> str:
    today = dt.date.today()
    return f"{today.month:02d}/{(today.year + 3) % 100:02d}"


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The app behind a real HTTP server on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def page(browser: Any, live_url: str) -> Iterator[Any]:
    context = browser.new_context(base_url=live_url)
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def _orders(app: Flask) -> list[Order]:
    with app.extensions["vigil.shop"].sessions() as session:
        return list(session.scalars(select(Order).order_by(Order.id)))


def _add_headphones(page: Any, quantity: int = 1) -> None:
    page.goto("/products/1")
    page.get_by_label("Quantity").fill(str(quantity))
    page.get_by_role("button", name="Add to cart").click()
    page.wait_for_url("**/cart")


def _fill_checkout(page: Any, *, card: str, gateway: str) -> None:
    page.get_by_label("E-mail").fill("ann@example.com")
    page.get_by_label("Full name").fill("Ann Example")
    page.get_by_label("Street and number").fill("Hauptstraße 1")
    page.get_by_label("City").fill("Berlin")
    page.get_by_label("Postcode").fill("10115")
    page.get_by_label("Country").fill("Germany")
    page.get_by_label(GATEWAY_LABELS[gateway]).check()
    page.get_by_label("Card number").fill(card)
    page.get_by_label("Expiry (MM/YY)").fill(_future_expiry())
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Name on card").fill("Ann Example")


@pytest.mark.parametrize(
    ("currency", "gateway"),
    [("EUR", "stripe"), ("USD", "adyen"), ("PLN", "payu"), ("CNY", "stripe")],
)
def test_pages_purchase_with_coupon(page: Any, app: Flask, currency: str, gateway: str) -> None:
    from playwright.sync_api import expect

    rate = app.extensions["vigil.shop"].settings.shop.rates[currency]
    unit = _money(Decimal("249.99") * rate)
    subtotal = unit * 2
    discount = _money(subtotal * Decimal("0.10"))
    total = subtotal - discount

    page.goto("/")
    page.get_by_role("searchbox", name="Search products").fill("noise-cancelling headphones")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".found")).to_have_text("1 product for “noise-cancelling headphones”")
    card = page.locator(f'.card[data-sku="{HEADPHONES}"]')
    page.get_by_role("navigation", name="Currency").get_by_role("link", name=currency).click()
    expect(card.locator(".price")).to_have_text(_shown(unit, currency))
    # The switch keeps the search.
    expect(page.locator(".card")).to_have_count(1)

    card.locator(".card-link").click()
    expect(page.locator("h1")).to_have_text("Wireless Noise-Cancelling Headphones")
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    page.wait_for_url("**/cart")

    page.get_by_label("Coupon code").fill("welcome10")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".applied")).to_contain_text("WELCOME10")
    expect(page.locator("dd.coupon-discount")).to_have_text(f"−{_shown(discount, currency)}")
    expect(page.locator("#total")).to_have_text(_shown(total, currency))

    page.get_by_role("link", name="Checkout").click()
    page.wait_for_url("**/checkout")
    _fill_checkout(page, card=GOOD_CARD, gateway=gateway)
    page.get_by_role("button", name=f"Pay {_shown(total, currency)}").click()

    page.wait_for_url("**/orders/*")
    expect(page.locator("#status")).to_have_text("paid")
    expect(page.locator("#total")).to_have_text(_shown(total, currency))
    expect(page.locator(".progress li.done")).to_have_count(2)  # placed, paid
    expect(page.locator(".history li")).to_have_count(2)

    public_id = page.url.rsplit("/", 1)[1]
    [order] = _orders(app)
    assert order.public_id == public_id
    assert (order.status, order.currency, order.gateway) == ("paid", currency, gateway)
    assert order.coupon_code == "WELCOME10"
    assert order.total == total
    assert order.card_last4 == "4242"
    # The paid cart is empty now.
    page.goto("/cart")
    expect(page.get_by_text("Your cart is empty")).to_be_visible()


def test_pages_declined_card_shows_error_and_no_paid_order(page: Any, app: Flask) -> None:
    from playwright.sync_api import expect

    _add_headphones(page)
    page.goto("/checkout")
    _fill_checkout(page, card=DECLINED_CARD, gateway="adyen")
    with page.expect_response(
        lambda r: r.url.endswith("/checkout") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Pay 249.99 EUR").click()
    assert answer.value.status == 402
    expect(page.locator("#checkout-error")).to_contain_text("declined")
    expect(page.get_by_label("Card number")).to_have_value("")
    expect(page.get_by_label("CVC")).to_have_value("")
    assert DECLINED_CARD not in page.content()
    # What the customer typed besides the card survives the error.
    expect(page.get_by_label("E-mail")).to_have_value("ann@example.com")
    expect(page.get_by_label("Adyen")).to_be_checked()
    assert [(o.status, o.gateway) for o in _orders(app)] == [("cancelled", "adyen")]

    # The cart is still there: another card pays.
    page.get_by_label("Card number").fill(GOOD_CARD)
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name="Pay 249.99 EUR").click()
    page.wait_for_url("**/orders/*")
    expect(page.locator("#status")).to_have_text("paid")
    assert [o.status for o in _orders(app)] == ["cancelled", "paid"]


def test_pages_invalid_coupon_is_explained(page: Any) -> None:
    from playwright.sync_api import expect

    _add_headphones(page)
    page.get_by_label("Coupon code").fill("EXPIRED5")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#coupon-error")).to_have_text("coupon EXPIRED5 has expired")
    expect(page.locator("#total")).to_have_text("249.99 EUR")


def test_pages_mobile_viewport_has_no_horizontal_scroll(browser: Any, live_url: str) -> None:
    context = browser.new_context(
        base_url=live_url, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        for url in ("/", "/?lang=de", "/?lang=zh", "/?lang=pl&page=3", "/products/1"):
            page.goto(url)
            overflow = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
            assert overflow[0] <= overflow[1], (url, overflow)
        page.goto("/?lang=en")
        page.locator(".card button").first.click()
        page.wait_for_url("**/cart")
        for url in ("/cart", "/checkout"):
            page.goto(url)
            width, inner = page.evaluate(
                "[document.scrollingElement.scrollWidth, window.innerWidth]"
            )
            assert width <= inner, (url, width, inner)
    finally:
        context.close()


def test_pages_language_switch_is_remembered(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    card = page.locator(f'.card[data-sku="{HEADPHONES}"] .name')
    expect(card).to_have_text("Wireless Noise-Cancelling Headphones")
    page.get_by_role("navigation", name="Language").get_by_role("link", name="DE").click()
    expect(card).to_have_text(HEADPHONES_DE)
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.get_by_role("link", name="Elektronik")).to_be_visible()

    page.goto("/products/1")  # no ?lang=: the cookie decides
    expect(page.locator("h1")).to_have_text(HEADPHONES_DE)
    page.get_by_role("navigation", name="Language").get_by_role("link", name="中文").click()
    expect(page.locator("h1")).to_have_text("无线降噪耳机")
    expect(page.locator("html")).to_have_attribute("lang", "zh")
