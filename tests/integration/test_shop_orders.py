"""Order tracking, the status machine, refunds and the admin order API."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from conftest import sample
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from shop.models import Order, Product
from vigil.settings import Settings

VISA = "4242424242424242"


def stock_of(app: Flask, sku: str) -> int:
    with app.extensions["vigil.shop"].sessions() as session:
        return session.scalars(select(Product.stock).where(Product.sku == sku)).one()


def buy(
    client: FlaskClient,
    app: Flask,
    items: list[tuple[str, int]],
    *,
    number: str = VISA,
    currency: str = "EUR",
) -> Any:
    """Cart and checkout through the API; returns the checkout response."""
    cart_id = client.post("/api/carts").json["cart_id"]
    with app.extensions["vigil.shop"].sessions() as session:
        for sku, quantity in items:
            product_id = session.scalars(select(Product.id).where(Product.sku == sku)).one()
            rv = client.post(
                f"/api/carts/{cart_id}/items", json={"product_id": product_id, "quantity": quantity}
            )
            assert rv.status_code == 200, rv.json
    return client.post(
        "/api/checkout",
        json={
            "cart_id": cart_id,
            "email": "ann@example.com",
            "currency": currency,
            "gateway": "stripe",
            "card": {"number": number, "expiry": "11/38", "cvc": "321", "holder": "Ann"},
        },
    )


def audit_events(settings: Settings, action: str) -> list[dict[str, Any]]:
    path = settings.log_dir / "audit.log"
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [e for e in events if e["event"]["action"] == action]


def set_status(
    client: FlaskClient, headers: dict[str, str], order_id: str, status: str, note: str = ""
) -> Any:
    return client.post(
        f"/api/admin/orders/{order_id}/status",
        json={"status": status, "note": note},
        headers=headers,
    )


def test_order_tracking_shows_status_items_history(client: FlaskClient, app: Flask) -> None:
    order_id = buy(client, app, [("ELEC-002", 2), ("ELEC-005", 1)]).json["order_id"]

    rv = client.get(f"/api/orders/{order_id}")

    assert rv.status_code == 200
    body = rv.json
    assert body["order_id"] == order_id
    assert body["status"] == "paid"
    assert [i["sku"] for i in body["items"]] == ["ELEC-002", "ELEC-005"]
    assert body["items"][0]["quantity"] == 2
    assert Decimal(body["total"]) == Decimal("89.99") * 2 + Decimal("49.99")
    assert [h["status"] for h in body["history"]] == ["placed", "paid"]
    assert all(h["at"].endswith("+00:00") for h in body["history"])
    assert body["payment"] == {"gateway": "stripe", "card": "424242******4242"}
    text = rv.get_data(as_text=True)
    assert VISA not in text
    assert "ann@example.com" not in text


def test_order_unknown_is_404(client: FlaskClient) -> None:
    rv = client.get("/api/orders/no-such-order")
    assert rv.status_code == 404
    assert rv.json["error"]["code"] == "not_found"


def test_order_status_walk_to_refund(
    client: FlaskClient, app: Flask, settings: Settings, admin_headers: dict[str, str]
) -> None:
    order_id = buy(client, app, [("ELEC-006", 2)]).json["order_id"]
    stock = stock_of(app, "ELEC-006")
    refunds = sample("shop_refunds_total", currency="EUR")
    shipped = sample("shop_orders_total", status="shipped", currency="EUR")

    for status in ("shipped", "delivered"):
        rv = set_status(client, admin_headers, order_id, status, note=f"now {status}")
        assert rv.status_code == 200, rv.json
        assert rv.json["status"] == status
    rv = client.post(
        f"/api/admin/orders/{order_id}/refund",
        json={"reason": "broken on arrival"},
        headers=admin_headers,
    )

    assert rv.status_code == 200, rv.json
    assert rv.json["status"] == "refunded"
    history = rv.json["history"]
    assert [(h["from"], h["status"]) for h in history] == [
        (None, "placed"),
        ("placed", "paid"),
        ("paid", "shipped"),
        ("shipped", "delivered"),
        ("delivered", "refunded"),
    ]
    assert [h["actor"] for h in history[2:]] == ["alice@ops"] * 3
    assert history[-1]["note"] == "broken on arrival"
    assert sample("shop_refunds_total", currency="EUR") - refunds == pytest.approx(158.0)
    assert sample("shop_orders_total", status="shipped", currency="EUR") - shipped == 1
    assert stock_of(app, "ELEC-006") == stock  # delivered goods are not back on the shelf
    tracked = client.get(f"/api/orders/{order_id}").json
    assert [h["status"] for h in tracked["history"]][-1] == "refunded"

    status_events = audit_events(settings, "order-status")
    assert [
        (e["user"]["name"], e["audit"]["before"]["status"], e["audit"]["after"]["status"])
        for e in status_events
    ] == [
        ("checkout", "placed", "paid"),
        ("alice@ops", "paid", "shipped"),
        ("alice@ops", "shipped", "delivered"),
    ]
    assert {e["audit"]["target"] for e in status_events} == {f"order:{order_id}"}
    (refund,) = audit_events(settings, "order-refund")
    assert refund["user"]["name"] == "alice@ops"
    assert refund["audit"]["before"] == {"status": "delivered"}
    assert refund["audit"]["after"]["status"] == "refunded"
    assert refund["audit"]["after"]["reason"] == "broken on arrival"
    assert refund["audit"]["after"]["amount"] == "158.00"


def test_order_refund_from_paid_restocks(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    stock = stock_of(app, "ELEC-008")
    order_id = buy(client, app, [("ELEC-008", 4)], currency="PLN").json["order_id"]
    assert stock_of(app, "ELEC-008") == stock - 4
    refunds = sample("shop_refunds_total", currency="PLN")

    rv = set_status(client, admin_headers, order_id, "refunded", note="customer changed mind")

    assert rv.status_code == 200, rv.json
    assert rv.json["status"] == "refunded"
    assert stock_of(app, "ELEC-008") == stock
    assert sample("shop_refunds_total", currency="PLN") - refunds == pytest.approx(
        float(Decimal(rv.json["total"]))
    )


@pytest.mark.parametrize(
    ("walk", "illegal", "allowed"),
    [
        ((), "delivered", "allowed: shipped, cancelled, refunded"),
        (("shipped",), "refunded", "allowed: delivered"),
        (("shipped",), "cancelled", "allowed: delivered"),
        (("cancelled",), "paid", "cancelled is final"),
        (("refunded",), "shipped", "refunded is final"),
    ],
)
def test_order_illegal_transition_is_409(
    client: FlaskClient,
    app: Flask,
    admin_headers: dict[str, str],
    walk: tuple[str, ...],
    illegal: str,
    allowed: str,
) -> None:
    order_id = buy(client, app, [("ELEC-005", 1)]).json["order_id"]
    for status in walk:
        assert set_status(client, admin_headers, order_id, status).status_code == 200

    rv = set_status(client, admin_headers, order_id, illegal)

    assert rv.status_code == 409
    assert rv.json["error"]["code"] == "illegal_transition"
    assert (
        f"cannot go from {walk[-1] if walk else 'paid'} to {illegal}" in rv.json["error"]["message"]
    )
    assert allowed in rv.json["error"]["message"]
    with app.extensions["vigil.shop"].sessions() as session:
        order = session.scalars(select(Order).where(Order.public_id == order_id)).one()
        assert order.status == (walk[-1] if walk else "paid")


def test_order_refund_from_shipped_is_illegal(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    order_id = buy(client, app, [("ELEC-005", 1)]).json["order_id"]
    set_status(client, admin_headers, order_id, "shipped")
    rv = client.post(
        f"/api/admin/orders/{order_id}/refund", json={"reason": "x"}, headers=admin_headers
    )
    assert rv.status_code == 409
    assert "cannot go from shipped to refunded" in rv.json["error"]["message"]


def test_admin_status_rejects_bad_input(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    order_id = buy(client, app, [("ELEC-005", 1)]).json["order_id"]
    rv = set_status(client, admin_headers, order_id, "lost")
    assert (rv.status_code, rv.json["error"]["field"]) == (400, "status")
    rv = client.post(
        f"/api/admin/orders/{order_id}/status",
        json={"status": "shipped", "note": 5},
        headers=admin_headers,
    )
    assert (rv.status_code, rv.json["error"]["field"]) == (400, "note")
    assert set_status(client, admin_headers, "nope", "shipped").status_code == 404


def test_admin_orders_list_filters_and_pages(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    paid = [buy(client, app, [("ELEC-005", 1)]).json["order_id"] for _ in range(3)]
    declined = buy(client, app, [("ELEC-005", 1)], number="4000000000000002")
    assert declined.status_code == 402

    everything = client.get("/api/admin/orders", headers=admin_headers).json
    assert everything["total"] == 4
    assert [o["status"] for o in everything["orders"]] == ["cancelled", "paid", "paid", "paid"]
    page = client.get("/api/admin/orders?status=paid&page=2&per_page=2", headers=admin_headers).json
    assert (page["total"], page["page"], page["per_page"]) == (3, 2, 2)
    assert [o["order_id"] for o in page["orders"]] == [paid[0]]
    assert page["orders"][0]["email"] == "ann@example.com"
    bad = client.get("/api/admin/orders?status=lost", headers=admin_headers)
    assert bad.status_code == 400
    bad = client.get("/api/admin/orders?per_page=0", headers=admin_headers)
    assert bad.status_code == 400


def test_admin_order_detail_lists_payments(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    order_id = buy(client, app, [("ELEC-005", 1)], number="4000000000000119").json["error"]
    with app.extensions["vigil.shop"].sessions() as session:
        public_id = session.scalars(select(Order.public_id)).one()
    assert order_id["code"] == "gateway_error"

    rv = client.get(f"/api/admin/orders/{public_id}", headers=admin_headers)

    assert rv.status_code == 200
    body = rv.json
    assert body["status"] == "cancelled"
    assert body["email"] == "ann@example.com"
    (payment,) = body["payments"]
    assert payment["outcome"] == "error"
    assert payment["reason"] == "processing_error"
    assert payment["card"] == "400000******0119"
    assert payment["client_ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/admin/orders"),
        ("GET", "/api/admin/orders/x"),
        ("POST", "/api/admin/orders/x/status"),
        ("POST", "/api/admin/orders/x/refund"),
        ("GET", "/api/admin/faults"),
        ("PUT", "/api/admin/faults"),
        ("DELETE", "/api/admin/faults"),
        ("GET", "/api/admin/mail"),
        ("POST", "/api/admin/mail/flush"),
    ],
)
def test_admin_routes_need_the_key(client: FlaskClient, method: str, path: str) -> None:
    rv = client.open(path, method=method, json={}, headers={"X-API-Key": "wrong"})
    assert rv.status_code == 401
    assert rv.json["error"]["code"] == "unauthorized"
