"""The shop's HTML pages through Flask's test client: status codes, cookies, CSRF, forms."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from shop.models import Cart, Order, Product
from shop.seed import load_catalog

STATIC = Path(__file__).resolve().parents[2] / "shop" / "static"
GOOD_CARD = "4242 4242 4242 4242"
CHECKOUT_FORM = {
    "email": "ann@example.com",
    "ship_name": "Ann Example",
    "ship_address": "Hauptstraße 1",
    "ship_city": "Berlin",
    "ship_postcode": "10115",
    "ship_country": "Germany",
    "gateway": "stripe",
    "card_number": GOOD_CARD,
    "expiry": "12/39",
    "cvc": "123",
    "holder": "Ann Example",
}


def _pid(app: Flask, sku: str) -> int:
    with app.extensions["vigil.shop"].sessions() as session:
        return int(session.scalars(select(Product.id).where(Product.sku == sku)).one())


def _csrf(client: FlaskClient) -> str:
    client.get("/login")
    cookie = client.get_cookie("csrf_token")
    assert cookie is not None
    return cookie.value


def _post(client: FlaskClient, url: str, **data: Any) -> Any:
    return client.post(url, data={"csrf_token": _csrf(client), **data})


def _text(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert match is not None, f"no #{element_id} in the page"
    return match.group(1)


def _checkouts(outcome: str) -> float:
    return REGISTRY.get_sample_value("shop_checkouts_total", {"outcome": outcome}) or 0.0


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/?q=kopfhörer",
        "/?category=books&page=2&sort=-price",
        "/?lang=zh&currency=CNY",
        "/products/1",
        "/cart",
        "/login",
        "/register",
    ],
)
def test_pages_render(client: FlaskClient, url: str) -> None:
    rv = client.get(url)
    assert rv.status_code == 200
    assert rv.mimetype == "text/html"
    assert "Traceback" not in rv.text


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/products/999999", 404),
        ("/orders/no-such-order", 404),
        ("/no/such/page", 404),
        ("/?lang=xx", 400),
        ("/?currency=XYZ", 400),
        ("/?page=0", 400),
        ("/?page=abc", 400),
        ("/?category=nope", 400),
        ("/?sort=random", 400),
        ("/?q=" + "x" * 101, 400),
    ],
)
def test_pages_bad_address_is_an_html_error(client: FlaskClient, url: str, status: int) -> None:
    rv = client.get(url, headers={"Accept": "text/html"})
    assert rv.status_code == status
    assert rv.mimetype == "text/html"
    assert f"Error {status}" in rv.text


def test_pages_catalogue_search_filter_and_pages(client: FlaskClient) -> None:
    rv = client.get("/")
    assert rv.text.count('class="card"') == 20
    assert "60 products" in rv.text
    assert 'href="/?page=3"' in rv.text
    last = client.get("/?page=3")
    assert 'data-sku="TOYS-010"' in last.text
    books = client.get("/?category=books")
    assert books.text.count('class="card"') == 10
    found = client.get("/?q=kopfhörer")
    assert 'data-sku="ELEC-001"' in found.text


def test_pages_out_of_stock_cannot_be_added(client: FlaskClient, app: Flask) -> None:
    pid = _pid(app, "HOME-007")  # stock 0
    page = client.get(f"/products/{pid}").text
    assert "Out of stock" in page
    assert re.search(r'<button type="submit"\s+disabled>Add to cart', page)
    rv = _post(client, "/cart/add", product_id=pid, quantity=1)
    assert rv.status_code == 409
    assert "only 0 of HOME-007 in stock" in rv.text
    # A failed add leaves no cart behind, and no cookie pointing at one.
    assert client.get_cookie("cart_id") is None


def test_pages_language_and_currency_are_remembered(client: FlaskClient) -> None:
    rv = client.get("/products/1?lang=de&currency=PLN")
    assert '<html lang="de">' in rv.text
    assert "Kabellose Kopfhörer" in rv.text
    assert "1,074.96 PLN" in rv.text
    assert client.get_cookie("lang").value == "de"  # type: ignore[union-attr]
    again = client.get("/products/1")
    assert "Kabellose Kopfhörer" in again.text
    assert "1,074.96 PLN" in again.text


def test_pages_csrf_token_is_required(client: FlaskClient, app: Flask) -> None:
    client.get("/")
    missing = client.post("/cart/add", data={"product_id": 1, "quantity": 1})
    wrong = client.post("/cart/add", data={"product_id": 1, "quantity": 1, "csrf_token": "x" * 43})
    assert (missing.status_code, wrong.status_code) == (400, 400)
    assert "reload the page" in wrong.text
    with app.extensions["vigil.shop"].sessions() as session:
        assert session.scalars(select(Cart)).all() == []


def test_pages_cart_cookie_and_lines(client: FlaskClient) -> None:
    rv = _post(client, "/cart/add", product_id=1, quantity=2)
    assert (rv.status_code, rv.headers["Location"]) == (303, "/cart")
    cookie = next(h for h in rv.headers.getlist("Set-Cookie") if h.startswith("cart_id="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    page = client.get("/cart").text
    assert _text(page, "total") == "499.98 EUR"
    assert _post(client, "/cart/items/1", quantity=3).status_code == 303
    assert _text(client.get("/cart").text, "total") == "749.97 EUR"
    too_many = _post(client, "/cart/items/1", quantity=41)  # 40 in stock
    assert too_many.status_code == 409
    assert "only 40 of ELEC-001 in stock" in too_many.text
    not_a_number = _post(client, "/cart/items/1", quantity="lots")
    assert not_a_number.status_code == 400
    assert _post(client, "/cart/items/1/remove").status_code == 303
    assert "Your cart is empty" in client.get("/cart").text


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("NOPE", 400, "coupon &#39;NOPE&#39; does not exist"),
        ("EXPIRED5", 422, "coupon EXPIRED5 has expired"),
        ("SAVE20", 422, "coupon SAVE20 needs an order of at least 100.00 EUR"),
    ],
)
def test_pages_coupon_errors_are_shown(
    client: FlaskClient, code: str, status: int, message: str
) -> None:
    _post(client, "/cart/add", product_id=5, quantity=1)  # 49.99 EUR
    rv = _post(client, "/cart/coupon", code=code)
    assert rv.status_code == status
    assert _text(rv.text, "coupon-error") == message
    assert _text(rv.text, "total") == "49.99 EUR"


def test_pages_coupon_apply_and_remove(client: FlaskClient) -> None:
    _post(client, "/cart/add", product_id=1, quantity=1)
    assert _post(client, "/cart/coupon", code="welcome10").status_code == 303
    page = client.get("/cart?currency=USD").text
    assert "Coupon <strong>WELCOME10</strong> applied" in page
    assert _text(page, "total") == "242.99 USD"  # 269.99 - 27.00
    assert _post(client, "/cart/coupon/remove").status_code == 303
    assert _text(client.get("/cart").text, "total") == "269.99 USD"


def test_pages_checkout_needs_a_cart(client: FlaskClient) -> None:
    rv = client.get("/checkout")
    assert (rv.status_code, rv.headers["Location"]) == (303, "/cart")


def test_pages_checkout_success(client: FlaskClient, app: Flask) -> None:
    _post(client, "/cart/add", product_id=1, quantity=1)
    form = client.get("/checkout").text
    for gateway in ("stripe", "adyen", "payu"):
        assert f'value="{gateway}"' in form
    before = _checkouts("success")
    rv = _post(client, "/checkout", **{**CHECKOUT_FORM, "gateway": "payu"})
    assert rv.status_code == 303
    assert rv.headers["Location"].startswith("/orders/")
    assert _checkouts("success") == before + 1
    order_page = client.get(rv.headers["Location"]).text
    assert _text(order_page, "status") == "paid"
    assert _text(order_page, "total") == "249.99 EUR"
    assert "424242******4242" in order_page
    with app.extensions["vigil.shop"].sessions() as session:
        order = session.scalars(select(Order)).one()
    assert (order.status, order.gateway, order.total) == ("paid", "payu", Decimal("249.99"))


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        ({"card_number": "4242 4242 4242 4241"}, 400, "the card number is not valid"),
        ({"card_number": "4000 0000 0000 0002"}, 402, "the card was declined"),
        ({"card_number": "4000 0000 0000 0119"}, 502, "the payment gateway stripe failed"),
        ({"expiry": "01/20"}, 400, "the card has expired"),
        ({"email": "not-an-address"}, 400, "must be an e-mail address"),
        ({"gateway": "paypal"}, 400, "unknown gateway"),
        ({"ship_city": ""}, 400, "the shipping city is required"),
    ],
)
def test_pages_checkout_failure_rerenders_the_form(
    client: FlaskClient, changes: dict[str, str], status: int, message: str
) -> None:
    _post(client, "/cart/add", product_id=1, quantity=1)
    rv = _post(client, "/checkout", **{**CHECKOUT_FORM, **changes})
    assert rv.status_code == status
    assert message in _text(rv.text, "checkout-error")
    # Never the card number or CVC back in the page; the rest is kept.
    number = changes.get("card_number", GOOD_CARD)
    assert number not in rv.text
    assert 'name="card_number" value=""' in rv.text
    assert 'name="cvc" value=""' in rv.text
    assert 'value="Hauptstraße 1"' in rv.text
    # The cart survives for another try.
    assert "Your cart is empty" not in client.get("/cart").text


def test_pages_order_tracking_shows_refund(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    _post(client, "/cart/add", product_id=1, quantity=1)
    location = _post(client, "/checkout", **CHECKOUT_FORM).headers["Location"]
    public_id = location.rsplit("/", 1)[1]
    rv = client.post(
        f"/api/admin/orders/{public_id}/refund", json={"reason": "test"}, headers=admin_headers
    )
    assert rv.status_code == 200, rv.json
    page = client.get(location).text
    assert _text(page, "status") == "refunded"
    assert "This order was refunded." in page
    assert page.count("<time") == 3  # placed, paid, refunded


def test_pages_register_login_logout(client: FlaskClient) -> None:
    short = _post(client, "/register", email="bob@example.com", password="short", name="Bob")
    assert short.status_code == 400
    assert "8 to 128 characters" in short.text
    rv = _post(client, "/register", email="bob@example.com", password="long enough", name="Bob")
    assert (rv.status_code, rv.headers["Location"]) == (303, "/")
    assert client.get_cookie("shop_token") is not None
    assert ">Bob</span>" in client.get("/").text
    taken = _post(client, "/register", email="bob@example.com", password="long enough")
    assert taken.status_code == 409
    assert _post(client, "/logout").status_code == 303
    assert client.get_cookie("shop_token") is None
    wrong = _post(client, "/login", email="bob@example.com", password="wrong password")
    assert wrong.status_code == 401
    assert "wrong e-mail or password" in wrong.text
    ok = _post(client, "/login", email="bob@example.com", password="long enough", next="/cart")
    assert (ok.status_code, ok.headers["Location"]) == (303, "/cart")
    evil = _post(
        client, "/login", email="bob@example.com", password="long enough", next="//evil.example"
    )
    assert evil.headers["Location"] == "/"


def test_pages_product_images_are_small_and_served(client: FlaskClient) -> None:
    for product in load_catalog()["products"]:
        url = product["image_url"]
        assert url == f"/static/img/{product['sku']}.svg"
        assert (STATIC / "img" / f"{product['sku']}.svg").stat().st_size < 1024
    rv = client.get("/static/img/ELEC-001.svg")
    assert rv.status_code == 200
    assert rv.mimetype == "image/svg+xml"
    rv.close()
