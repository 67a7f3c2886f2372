"""Cart API: items, stock limits, coupons and the VIP discount, priced in EUR and PLN."""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from shop.models import Cart
from shop.seed import load_catalog

PRICES = {p["sku"]: Decimal(p["price_eur"]) for p in load_catalog()["products"]}
RATES = {"EUR": Decimal("1"), "PLN": Decimal("4.30")}
CENT = Decimal("0.01")


def _money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _unit(sku: str, currency: str) -> Decimal:
    return _money(PRICES[sku] * RATES[currency])


def _pid(client: FlaskClient, sku: str) -> int:
    items = client.get("/api/products", query_string={"q": sku}).json["items"]
    return int(next(i["id"] for i in items if i["sku"] == sku))


def _new_cart(client: FlaskClient, headers: dict[str, str] | None = None) -> str:
    rv = client.post("/api/carts", headers=headers or {})
    assert rv.status_code == 201, rv.json
    return str(rv.json["cart_id"])


def _add(client: FlaskClient, cart: str, sku: str, quantity: int) -> Any:
    return client.post(
        f"/api/carts/{cart}/items", json={"product_id": _pid(client, sku), "quantity": quantity}
    )


def _add_by_id(client: FlaskClient, cart: str, pid: int, quantity: int) -> Any:
    return client.post(f"/api/carts/{cart}/items", json={"product_id": pid, "quantity": quantity})


def _coupon(client: FlaskClient, cart: str, code: str, currency: str = "EUR") -> Any:
    return client.post(
        f"/api/carts/{cart}/coupon", json={"code": code}, query_string={"currency": currency}
    )


def _stockouts(sku: str) -> float:
    return REGISTRY.get_sample_value("shop_stockouts_total", {"sku": sku}) or 0.0


def test_cart_create_empty(client: FlaskClient) -> None:
    rv = client.post("/api/carts")
    assert rv.status_code == 201
    uuid.UUID(rv.json["cart_id"])
    assert (rv.json["items"], rv.json["total"], rv.json["coupon"]) == ([], "0.00", None)


@pytest.mark.parametrize(
    "cart_id", ["6f0c3d52-9a1e-4c7e-8d7b-2b1f4f1f0a11", "not-a-uuid", "x" * 300, "1"]
)
def test_cart_unknown_404(client: FlaskClient, cart_id: str) -> None:
    rv = client.get(f"/api/carts/{cart_id}")
    assert rv.status_code == 404
    assert rv.json["error"]["code"] == "not_found"


def test_cart_add_update_remove(client: FlaskClient) -> None:
    cart = _new_cart(client)
    assert _add(client, cart, "ELEC-005", 2).status_code == 200
    rv = _add(client, cart, "ELEC-005", 1)
    assert rv.json["items"][0]["quantity"] == 3
    assert rv.json["subtotal"] == str(PRICES["ELEC-005"] * 3)
    _add(client, cart, "BOOK-003", 1)
    pid = _pid(client, "ELEC-005")
    rv = client.put(f"/api/carts/{cart}/items/{pid}", json={"quantity": 5})
    assert rv.status_code == 200
    assert [(i["sku"], i["quantity"]) for i in rv.json["items"]] == [
        ("ELEC-005", 5),
        ("BOOK-003", 1),
    ]
    assert rv.json["total"] == str(PRICES["ELEC-005"] * 5 + PRICES["BOOK-003"])
    rv = client.put(f"/api/carts/{cart}/items/{pid}", json={"quantity": 0})
    assert [i["sku"] for i in rv.json["items"]] == ["BOOK-003"]
    book = _pid(client, "BOOK-003")
    assert client.delete(f"/api/carts/{cart}/items/{book}").json["items"] == []
    assert client.delete(f"/api/carts/{cart}/items/{book}").status_code == 404
    assert client.get(f"/api/carts/{cart}").json["total"] == "0.00"


def test_cart_put_adds_missing_product(client: FlaskClient) -> None:
    cart = _new_cart(client)
    pid = _pid(client, "TOYS-001")
    rv = client.put(f"/api/carts/{cart}/items/{pid}", json={"quantity": 4})
    assert [(i["sku"], i["quantity"]) for i in rv.json["items"]] == [("TOYS-001", 4)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"product_id": 1, "quantity": 0}, 400),
        ({"product_id": 1, "quantity": 1001}, 400),
        ({"product_id": 1, "quantity": "2"}, 400),
        ({"product_id": 1, "quantity": True}, 400),
        ({"product_id": 1}, 400),
        ({"product_id": "ELEC-001", "quantity": 1}, 400),
        ({"product_id": 999999, "quantity": 1}, 404),
    ],
)
def test_cart_add_invalid(client: FlaskClient, body: dict[str, Any], status: int) -> None:
    cart = _new_cart(client)
    rv = client.post(f"/api/carts/{cart}/items", json=body)
    assert rv.status_code == status
    assert "error" in rv.json


def test_cart_add_not_json_415(client: FlaskClient) -> None:
    cart = _new_cart(client)
    rv = client.post(f"/api/carts/{cart}/items", data="product_id=1")
    assert rv.status_code == 415


def test_cart_total_quantity_capped(client: FlaskClient) -> None:
    cart = _new_cart(client)
    assert _add(client, cart, "FASH-007", 250).status_code == 200  # 300 in stock
    rv = _add(client, cart, "FASH-007", 751)
    assert rv.status_code == 400
    assert "1000" in rv.json["error"]["message"]


def test_cart_stock_409_and_stockout_metric(client: FlaskClient) -> None:
    cart = _new_cart(client)
    before = _stockouts("ELEC-010")
    rv = _add(client, cart, "ELEC-010", 3)  # 2 in stock
    assert rv.status_code == 409
    assert rv.json["error"]["code"] == "out_of_stock"
    assert "ELEC-010" in rv.json["error"]["message"]
    assert "only 2" in rv.json["error"]["message"]
    assert _stockouts("ELEC-010") == before + 1
    # The stock counts what the cart already holds.
    assert _add(client, cart, "ELEC-010", 2).status_code == 200
    assert _add(client, cart, "ELEC-010", 1).status_code == 409
    pid = _pid(client, "ELEC-010")
    assert client.put(f"/api/carts/{cart}/items/{pid}", json={"quantity": 3}).status_code == 409
    assert _stockouts("ELEC-010") == before + 3
    assert client.get(f"/api/carts/{cart}").json["items"][0]["quantity"] == 2


def test_cart_sold_out_product_409(client: FlaskClient) -> None:
    cart = _new_cart(client)
    rv = _add(client, cart, "HOME-007", 1)
    assert rv.status_code == 409
    assert "only 0 of HOME-007" in rv.json["error"]["message"]


def test_cart_inactive_product_404(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    cart = _new_cart(client)
    pid = _pid(client, "SPOR-001")
    assert client.delete(f"/api/admin/products/{pid}", headers=admin_headers).status_code == 200
    assert _add_by_id(client, cart, pid, 1).status_code == 404


@pytest.mark.parametrize("currency", ["EUR", "PLN"])
def test_coupon_percent_exact_totals(client: FlaskClient, currency: str) -> None:
    cart = _new_cart(client)
    _add(client, cart, "ELEC-001", 2)
    rv = _coupon(client, cart, "welcome10", currency)  # case-insensitive
    assert rv.status_code == 200, rv.json
    subtotal = _unit("ELEC-001", currency) * 2
    discount = _money(subtotal * Decimal("10") / 100)
    assert rv.json["coupon"] == "WELCOME10"
    assert rv.json["currency"] == currency
    assert rv.json["subtotal"] == str(subtotal)
    assert rv.json["coupon_discount"] == str(discount)
    assert rv.json["total"] == str(subtotal - discount)
    if currency == "PLN":
        assert rv.json["total"] == "1934.93"  # 2 × 1074.96 = 2149.92; less 214.99


@pytest.mark.parametrize("currency", ["EUR", "PLN"])
def test_coupon_fixed_with_min_order(client: FlaskClient, currency: str) -> None:
    cart = _new_cart(client)
    _add(client, cart, "ELEC-002", 1)  # 89.99 EUR, below the 100 EUR minimum
    rv = _coupon(client, cart, "SAVE20", currency)
    assert rv.status_code == 422
    assert rv.json["error"]["code"] == "coupon_min_order"
    _add(client, cart, "ELEC-002", 1)
    rv = _coupon(client, cart, "SAVE20", currency)
    assert rv.status_code == 200
    subtotal = _unit("ELEC-002", currency) * 2
    discount = _money(Decimal("20") * RATES[currency])
    assert (rv.json["coupon_discount"], rv.json["total"]) == (
        str(discount),
        str(subtotal - discount),
    )


def test_coupon_stops_applying_shows_error(client: FlaskClient) -> None:
    cart = _new_cart(client)
    _add(client, cart, "ELEC-002", 2)
    assert _coupon(client, cart, "SAVE20").status_code == 200
    pid = _pid(client, "ELEC-002")
    rv = client.put(f"/api/carts/{cart}/items/{pid}", json={"quantity": 1})
    assert rv.status_code == 200
    assert rv.json["coupon"] is None
    assert rv.json["total"] == str(PRICES["ELEC-002"])
    assert "at least 100" in rv.json["coupon_error"]
    # The code stays on the cart and counts again once the cart qualifies.
    rv = client.put(f"/api/carts/{cart}/items/{pid}", json={"quantity": 2})
    assert (rv.json["coupon"], rv.json["coupon_error"]) == ("SAVE20", None)
    assert rv.json["total"] == str(PRICES["ELEC-002"] * 2 - 20)


def test_coupon_expired_422(client: FlaskClient) -> None:
    cart = _new_cart(client)
    _add(client, cart, "BOOK-001", 1)
    rv = _coupon(client, cart, "EXPIRED5")
    assert rv.status_code == 422
    assert rv.json["error"]["code"] == "coupon_expired"


def test_coupon_unknown_400(client: FlaskClient) -> None:
    cart = _new_cart(client)
    rv = _coupon(client, cart, "FREESTUFF")
    assert rv.status_code == 400
    assert (rv.json["error"]["code"], rv.json["error"]["field"]) == ("unknown_coupon", "code")
    assert client.post(f"/api/carts/{cart}/coupon", json={"code": ""}).status_code == 400
    assert client.post(f"/api/carts/{cart}/coupon", json={"code": 10}).status_code == 400


def test_coupon_exhausted_via_admin(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    cart = _new_cart(client)
    _add(client, cart, "ELEC-001", 1)
    rv = client.patch("/api/admin/coupons/blackfriday", json={"max_uses": 0}, headers=admin_headers)
    assert rv.status_code == 200
    rv = _coupon(client, cart, "BLACKFRIDAY")
    assert rv.status_code == 422
    assert rv.json["error"]["code"] == "coupon_exhausted"


def test_coupon_one_per_order(client: FlaskClient) -> None:
    cart = _new_cart(client)
    _add(client, cart, "ELEC-003", 1)  # 329.00
    assert _coupon(client, cart, "WELCOME10").json["coupon_discount"] == "32.90"
    rv = _coupon(client, cart, "BLACKFRIDAY")
    assert (rv.json["coupon"], rv.json["coupon_discount"], rv.json["total"]) == (
        "BLACKFRIDAY",
        "98.70",
        "230.30",
    )
    # A code that does not apply leaves the current one in place.
    assert _coupon(client, cart, "EXPIRED5").status_code == 422
    assert client.get(f"/api/carts/{cart}").json["coupon"] == "BLACKFRIDAY"
    rv = client.delete(f"/api/carts/{cart}/coupon")
    assert (rv.json["coupon"], rv.json["total"]) == (None, "329.00")


def _customer(client: FlaskClient, email: str) -> tuple[int, dict[str, str]]:
    rv = client.post("/api/accounts", json={"email": email, "password": "pass-word-1"})
    token = client.post("/api/login", json={"email": email, "password": "pass-word-1"}).json
    return int(rv.json["id"]), {"Authorization": f"Bearer {token['token']}"}


def test_cart_of_logged_in_customer_is_owned(app: Flask, client: FlaskClient) -> None:
    customer_id, headers = _customer(client, "owner@example.com")
    cart = _new_cart(client, headers)
    anonymous = _new_cart(client)
    with app.extensions["vigil.shop"].sessions() as session:
        assert session.get(Cart, cart).customer_id == customer_id
        assert session.get(Cart, anonymous).customer_id is None


@pytest.mark.parametrize("currency", ["EUR", "PLN"])
def test_vip_discount_changes_quote(
    client: FlaskClient, admin_headers: dict[str, str], currency: str
) -> None:
    customer_id, headers = _customer(client, "vip@example.com")
    cart = _new_cart(client, headers)
    _add(client, cart, "ELEC-001", 2)
    _coupon(client, cart, "WELCOME10")
    url = f"/api/carts/{cart}?currency={currency}"
    regular = client.get(url, headers=headers).json
    assert regular["vip_discount"] == "0.00"
    rv = client.patch(
        f"/api/admin/customers/{customer_id}", json={"vip": True}, headers=admin_headers
    )
    assert rv.status_code == 200
    vip = client.get(url, headers=headers).json
    subtotal = _unit("ELEC-001", currency) * 2
    after_coupon = subtotal - _money(subtotal / 10)
    vip_discount = _money(after_coupon * Decimal("5") / 100)
    assert vip["vip_discount"] == str(vip_discount)
    assert vip["total"] == str(after_coupon - vip_discount)
    assert Decimal(vip["total"]) < Decimal(regular["total"])
    # Anonymous callers never get it, whoever owns the cart.
    assert client.get(url).json["vip_discount"] == "0.00"


def test_cart_bad_currency_or_lang_400(client: FlaskClient) -> None:
    cart = _new_cart(client)
    assert client.get(f"/api/carts/{cart}?currency=XXX").status_code == 400
    assert client.get(f"/api/carts/{cart}?lang=xx").status_code == 400
    rv = client.post(
        f"/api/carts/{cart}/items?lang=xx",
        json={"product_id": _pid(client, "ELEC-005"), "quantity": 1},
    )
    assert rv.status_code == 400
    assert client.get(f"/api/carts/{cart}").json["items"] == []


def test_cart_names_in_language(client: FlaskClient) -> None:
    cart = _new_cart(client)
    _add(client, cart, "TOYS-010", 1)
    rv = client.get(f"/api/carts/{cart}?lang=de")
    assert rv.json["items"][0]["name"] == "Laufrad"
