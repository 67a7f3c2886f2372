"""Admin catalogue API: key check, products and stock, customers, coupons, audit events."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from vigil.settings import Settings

NEW_PRODUCT = {
    "sku": "garden-001",
    "category": "home",
    "price_eur": "12.50",
    "stock": 7,
    "names": {"en": "Watering Can", "de": "Gießkanne"},
    "descriptions": {"en": "Five litres of galvanised steel."},
    "image_url": "/static/img/GARDEN-001.svg",
}


def _audit(settings: Settings) -> list[dict[str, Any]]:
    path = settings.log_dir / "audit.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _pid(client: FlaskClient, sku: str) -> int:
    items = client.get("/api/products", query_string={"q": sku}).json["items"]
    return int(next(i["id"] for i in items if i["sku"] == sku))


@pytest.fixture
def keyless_app(build_app: Callable[..., Flask]) -> Flask:
    return build_app(admin_api_key="")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/admin/products"),
        ("post", "/api/admin/products"),
        ("patch", "/api/admin/products/1"),
        ("delete", "/api/admin/products/1"),
        ("post", "/api/admin/products/1/stock"),
        ("get", "/api/admin/customers"),
        ("patch", "/api/admin/customers/1"),
        ("get", "/api/admin/coupons"),
        ("post", "/api/admin/coupons"),
        ("patch", "/api/admin/coupons/WELCOME10"),
    ],
)
def test_admin_without_key_401(client: FlaskClient, method: str, path: str) -> None:
    rv = getattr(client, method)(path, json={})
    assert rv.status_code == 401
    rv = getattr(client, method)(path, json={}, headers={"X-API-Key": "wrong"})
    assert rv.status_code == 401


def test_admin_disabled_without_configured_key_403(keyless_app: Flask) -> None:
    rv = keyless_app.test_client().get("/api/admin/products", headers={"X-API-Key": ""})
    assert rv.status_code == 403


def test_admin_list_products_includes_inactive(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    pid = _pid(client, "ELEC-004")
    rv = client.delete(f"/api/admin/products/{pid}", headers=admin_headers)
    assert (rv.status_code, rv.json["active"]) == (200, False)
    assert client.get(f"/api/products/{pid}").status_code == 404
    assert client.get("/api/products").json["total"] == 59
    rv = client.get("/api/admin/products?per_page=100", headers=admin_headers)
    assert rv.json["total"] == 60
    assert {p["sku"]: p["active"] for p in rv.json["items"]}["ELEC-004"] is False
    assert client.get(f"/api/admin/products/{pid}", headers=admin_headers).json["active"] is False


def test_admin_create_product(
    client: FlaskClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    rv = client.post("/api/admin/products", json=NEW_PRODUCT, headers=admin_headers)
    assert rv.status_code == 201, rv.json
    assert (rv.json["sku"], rv.json["price_eur"], rv.json["stock"]) == ("GARDEN-001", "12.50", 7)
    found = client.get("/api/products?q=gießkanne&lang=de&currency=PLN").json["items"]
    assert [(p["sku"], p["name"], p["price"]) for p in found] == [
        ("GARDEN-001", "Gießkanne", "53.75")
    ]
    event = _audit(settings)[-1]
    assert event["event"]["action"] == "product-create"
    assert event["user"]["name"] == "alice@ops"
    assert event["audit"]["target"] == "product:GARDEN-001"
    assert event["audit"]["after"]["price_eur"] == "12.50"
    rv = client.post("/api/admin/products", json=NEW_PRODUCT, headers=admin_headers)
    assert rv.status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category": "garden"}, "category"),
        ({"names": {"de": "Nur Deutsch"}}, "names"),
        ({"names": {"en": "Can", "fr": "Arrosoir"}}, "names"),
        ({"names": "Watering Can"}, "names"),
        ({"price_eur": "0"}, "price_eur"),
        ({"price_eur": "100000.01"}, "price_eur"),
        ({"price_eur": "cheap"}, "price_eur"),
        ({"stock": -1}, "stock"),
        ({"sku": "bad sku!"}, "sku"),
        ({"image_url": "javascript:alert(1)"}, "image_url"),
        ({"colour": "green"}, "colour"),
        ({"active": None}, "active"),
    ],
)
def test_admin_create_product_invalid_400(
    client: FlaskClient, admin_headers: dict[str, str], change: dict[str, Any], field: str
) -> None:
    rv = client.post("/api/admin/products", json={**NEW_PRODUCT, **change}, headers=admin_headers)
    assert rv.status_code == 400
    assert rv.json["error"]["field"] == field


def test_admin_update_product_audited(
    client: FlaskClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    pid = _pid(client, "ELEC-001")
    rv = client.patch(
        f"/api/admin/products/{pid}",
        json={"price_eur": "199.99", "names": {"de": "Superhörer"}, "stock": 40},
        headers=admin_headers,
    )
    assert rv.status_code == 200
    assert rv.json["names"]["en"] == "Wireless Noise-Cancelling Headphones"
    event = _audit(settings)[-1]
    assert event["event"]["action"] == "product-update"
    assert event["user"]["name"] == "alice@ops"
    assert event["audit"]["target"] == "product:ELEC-001"
    # Only what changed: the stock was already 40.
    assert set(event["audit"]["before"]) == set(event["audit"]["after"]) == {"price_eur", "names"}
    assert event["audit"]["before"]["price_eur"] == "249.99"
    assert event["audit"]["after"]["price_eur"] == "199.99"
    assert event["audit"]["after"]["names"]["de"] == "Superhörer"
    item = client.get(f"/api/products/{pid}?lang=de").json
    assert (item["price"], item["name"]) == ("199.99", "Superhörer")
    # The search text follows the new name and forgets the old one.
    assert [p["sku"] for p in client.get("/api/products?q=superhörer").json["items"]] == [
        "ELEC-001"
    ]
    assert client.get("/api/products?q=kabellose kopfhörer").json["total"] == 0


def test_admin_update_product_category_and_reactivate(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    pid = _pid(client, "TOYS-003")
    client.delete(f"/api/admin/products/{pid}", headers=admin_headers)
    rv = client.patch(
        f"/api/admin/products/{pid}",
        json={"active": True, "category": "sports"},
        headers=admin_headers,
    )
    assert (rv.json["active"], rv.json["category"]) == (True, "sports")
    assert "TOYS-003" in [
        p["sku"] for p in client.get("/api/products?category=sports").json["items"]
    ]


def test_admin_update_product_invalid(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    assert (
        client.patch(
            "/api/admin/products/999999", json={"stock": 1}, headers=admin_headers
        ).status_code
        == 404
    )
    rv = client.patch("/api/admin/products/1", json={"prize_eur": "1.00"}, headers=admin_headers)
    assert (rv.status_code, rv.json["error"]["field"]) == (400, "prize_eur")
    rv = client.patch("/api/admin/products/1", json={"stock": 1_000_001}, headers=admin_headers)
    assert rv.status_code == 400


def test_admin_stock_adjust(
    client: FlaskClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    pid = _pid(client, "ELEC-010")  # 2 in stock
    url = f"/api/admin/products/{pid}/stock"
    rv = client.post(url, json={"delta": 5}, headers=admin_headers)
    assert (rv.status_code, rv.json["stock"]) == (200, 7)
    event = _audit(settings)[-1]
    assert event["event"]["action"] == "stock-adjust"
    assert (event["audit"]["before"], event["audit"]["after"]) == ({"stock": 2}, {"stock": 7})
    rv = client.post(url, json={"delta": -8}, headers=admin_headers)
    assert rv.status_code == 409
    assert "ELEC-010 has 7" in rv.json["error"]["message"]
    assert client.post(url, json={"stock": 0}, headers=admin_headers).json["stock"] == 0
    assert client.get(f"/api/products/{pid}").json["in_stock"] is False
    for body in ({}, {"delta": 1, "stock": 1}, {"stock": -1}, {"delta": "1"}):
        assert client.post(url, json=body, headers=admin_headers).status_code == 400


def test_admin_customers(
    client: FlaskClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    customer_id = client.post(
        "/api/accounts", json={"email": "bob@example.com", "password": "bobs-password"}
    ).json["id"]
    rv = client.get("/api/admin/customers", headers=admin_headers)
    assert rv.json["total"] == 1
    assert rv.json["items"][0]["email"] == "bob@example.com"
    assert "password_hash" not in rv.json["items"][0]
    url = f"/api/admin/customers/{customer_id}"
    rv = client.patch(url, json={"group": "wholesale", "vip": True}, headers=admin_headers)
    assert (rv.status_code, rv.json["group"], rv.json["vip"]) == (200, "wholesale", True)
    event = _audit(settings)[-1]
    assert event["event"]["action"] == "customer-update"
    assert event["audit"]["target"] == "customer:bob@example.com"
    assert event["audit"]["before"] == {"group": "retail", "vip": False}
    assert event["audit"]["after"] == {"group": "wholesale", "vip": True}
    assert client.patch(url, json={"group": "gold"}, headers=admin_headers).status_code == 400
    assert client.patch(url, json={"vip": "yes"}, headers=admin_headers).status_code == 400
    assert (
        client.patch(
            "/api/admin/customers/999", json={"vip": True}, headers=admin_headers
        ).status_code
        == 404
    )


def test_admin_coupons_create_and_use(
    client: FlaskClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    rv = client.get("/api/admin/coupons", headers=admin_headers)
    assert [c["code"] for c in rv.json["coupons"]] == [
        "BLACKFRIDAY",
        "EXPIRED5",
        "SAVE20",
        "WELCOME10",
    ]
    body = {
        "code": "spring-15",
        "kind": "percent",
        "value": 15,
        "min_order_eur": "20",
        "expires_at": "2099-03-31T23:59:59Z",
        "max_uses": 2,
    }
    rv = client.post("/api/admin/coupons", json=body, headers=admin_headers)
    assert rv.status_code == 201, rv.json
    assert rv.json == {
        "code": "SPRING-15",
        "kind": "percent",
        "value": "15.00",
        "min_order_eur": "20.00",
        "expires_at": "2099-03-31T23:59:59+00:00",
        "max_uses": 2,
        "uses": 0,
        "active": True,
    }
    event = _audit(settings)[-1]
    assert (event["event"]["action"], event["audit"]["target"]) == (
        "coupon-create",
        "coupon:SPRING-15",
    )
    assert (
        client.post(
            "/api/admin/coupons", json={**body, "code": "SPRING-15"}, headers=admin_headers
        ).status_code
        == 409
    )
    cart = client.post("/api/carts").json["cart_id"]
    client.post(
        f"/api/carts/{cart}/items", json={"product_id": _pid(client, "BOOK-001"), "quantity": 1}
    )  # 29.99
    rv = client.post(f"/api/carts/{cart}/coupon", json={"code": "Spring-15"})
    assert (rv.json["coupon_discount"], rv.json["total"]) == ("4.50", "25.49")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "bogo"}, "kind"),
        ({"value": 100.01}, "value"),
        ({"kind": "fixed", "value": 10000.01}, "value"),
        ({"value": 0}, "value"),
        ({"expires_at": "next tuesday"}, "expires_at"),
        ({"max_uses": -1}, "max_uses"),
        ({"code": "no spaces"}, "code"),
        ({"uses": 5}, "uses"),
    ],
)
def test_admin_coupon_create_invalid_400(
    client: FlaskClient, admin_headers: dict[str, str], change: dict[str, Any], field: str
) -> None:
    body = {"code": "NEW", "kind": "percent", "value": 10, **change}
    rv = client.post("/api/admin/coupons", json=body, headers=admin_headers)
    assert rv.status_code == 400
    assert rv.json["error"]["field"] == field


def test_admin_coupon_update(
    client: FlaskClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    rv = client.patch(
        "/api/admin/coupons/expired5",
        json={"expires_at": "2099-01-01T00:00:00+00:00", "max_uses": 10},
        headers=admin_headers,
    )
    assert rv.status_code == 200
    assert (rv.json["expires_at"], rv.json["max_uses"]) == ("2099-01-01T00:00:00+00:00", 10)
    event = _audit(settings)[-1]
    assert event["event"]["action"] == "coupon-update"
    # ecs-logging drops null values, so the unlimited max_uses before shows as absent.
    assert event["audit"]["before"] == {"expires_at": "2020-01-01T00:00:00+00:00"}
    assert event["audit"]["after"] == {"expires_at": "2099-01-01T00:00:00+00:00", "max_uses": 10}
    cart = client.post("/api/carts").json["cart_id"]
    assert client.post(f"/api/carts/{cart}/coupon", json={"code": "EXPIRED5"}).status_code == 200
    rv = client.patch("/api/admin/coupons/EXPIRED5", json={"active": False}, headers=admin_headers)
    assert rv.json["active"] is False
    # The cart still shows, priced without the coupon that went away.
    rv = client.get(f"/api/carts/{cart}")
    assert (rv.status_code, rv.json["coupon"]) == (200, None)
    assert "does not exist" in rv.json["coupon_error"]
    assert (
        client.patch(
            "/api/admin/coupons/NOPE", json={"active": True}, headers=admin_headers
        ).status_code
        == 404
    )
    assert (
        client.patch(
            "/api/admin/coupons/SAVE20", json={"value": 5}, headers=admin_headers
        ).status_code
        == 400
    )
