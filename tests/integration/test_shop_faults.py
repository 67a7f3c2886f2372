"""Fault injection through the admin API: latency, errors, a slow database, a gateway outage."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import sample
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from shop.models import Product
from vigil.settings import Settings


def timed(client: FlaskClient, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    rv = client.get(path)
    return rv.status_code, time.perf_counter() - started


def set_faults(client: FlaskClient, headers: dict[str, str], **faults: Any) -> Any:
    rv = client.put("/api/admin/faults", json=faults, headers=headers)
    assert rv.status_code == 200, rv.json
    return rv.json


def audit_events(settings: Settings, action: str) -> list[dict[str, Any]]:
    lines = (settings.log_dir / "audit.log").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["event"]["action"] == action]


def checkout(client: FlaskClient, app: Flask, gateway: str) -> Any:
    cart_id = client.post("/api/carts").json["cart_id"]
    with app.extensions["vigil.shop"].sessions() as session:
        product_id = session.scalars(select(Product.id).where(Product.sku == "ELEC-005")).one()
    client.post(f"/api/carts/{cart_id}/items", json={"product_id": product_id, "quantity": 1})
    return client.post(
        "/api/checkout",
        json={
            "cart_id": cart_id,
            "email": "ann@example.com",
            "currency": "EUR",
            "gateway": gateway,
            "card": {"number": "4242424242424242", "expiry": "10/37", "cvc": "123"},
        },
    )


def test_fault_latency_slows_catalogue(
    client: FlaskClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    body = set_faults(client, admin_headers, latency_ms=400)

    assert body == {
        "enabled": True,
        "faults": {
            "latency_ms": 400,
            "error_rate": 0.0,
            "slow_db_ms": 0,
            "gateway_outage": [],
            "ledger_faults": [],
        },
    }
    status, elapsed = timed(client, "/api/products")
    assert status == 200
    assert elapsed >= 0.4
    assert timed(client, "/healthz")[1] < 0.4
    (event,) = audit_events(settings, "fault-set")
    assert event["user"]["name"] == "alice@ops"
    assert event["audit"]["before"]["latency_ms"] == 0
    assert event["audit"]["after"]["latency_ms"] == 400
    assert client.get("/api/admin/faults", headers=admin_headers).json == body


def test_fault_error_rate_spares_health_and_admin(
    client: FlaskClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    set_faults(client, admin_headers, error_rate=1.0)

    rv = client.get("/api/products")
    assert rv.status_code == 500
    assert rv.json["error"]["code"] == "injected_fault"
    assert client.get("/api/orders/abc").status_code == 500
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/admin/faults", headers=admin_headers).status_code == 200

    rv = client.delete("/api/admin/faults", headers=admin_headers)

    assert rv.status_code == 200
    assert rv.json["faults"]["error_rate"] == 0.0
    assert client.get("/api/products").status_code == 200
    (event,) = audit_events(settings, "fault-clear")
    assert event["audit"]["before"]["error_rate"] == 1.0
    assert event["audit"]["after"]["error_rate"] == 0.0
    assert event["user"]["name"] == "alice@ops"


def test_fault_slow_db_slows_database_requests(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    set_faults(client, admin_headers, slow_db_ms=250)

    status, elapsed = timed(client, "/api/orders/no-such-order")
    assert status == 404
    assert elapsed >= 0.25
    assert timed(client, "/healthz")[1] < 0.25
    client.delete("/api/admin/faults", headers=admin_headers)
    assert timed(client, "/api/orders/no-such-order")[1] < 0.25


def test_fault_gateway_outage_hits_only_that_gateway(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str]
) -> None:
    set_faults(client, admin_headers, gateway_outage=["adyen"])
    errors = sample("shop_payments_total", gateway="adyen", outcome="error")

    down = checkout(client, app, "adyen")
    up = checkout(client, app, "stripe")

    assert down.status_code == 503
    assert down.json["error"]["code"] == "gateway_unavailable"
    assert "adyen" in down.json["error"]["message"]
    assert sample("shop_payments_total", gateway="adyen", outcome="error") - errors == 1
    assert up.status_code == 201
    client.delete("/api/admin/faults", headers=admin_headers)
    assert checkout(client, app, "adyen").status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"gateway_outage": ["paypal"]}, "gateway_outage"),
        ({"gateway_outage": "adyen"}, "gateway_outage"),
        ({"ledger_faults": ["lose_everything"]}, "ledger_faults"),
        ({"ledger_faults": "double_capture"}, "ledger_faults"),
        ({"meteor": 1}, "meteor"),
    ],
)
def test_fault_bad_values_are_400(
    client: FlaskClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    rv = client.put("/api/admin/faults", json=body, headers=admin_headers)
    assert rv.status_code == 400
    assert rv.json["error"]["field"] == field
    assert client.get("/api/admin/faults", headers=admin_headers).json["faults"]["latency_ms"] == 0


@pytest.fixture
def disabled_client(build_app: Callable[..., Flask]) -> FlaskClient:
    return build_app(faults_enabled=False).test_client()


def test_faults_disabled_is_403(
    disabled_client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    rv = disabled_client.put("/api/admin/faults", json={"latency_ms": 100}, headers=admin_headers)

    assert rv.status_code == 403
    assert rv.json["error"]["code"] == "faults_disabled"
    assert "VIGIL_SHOP_FAULTS_ENABLED" in rv.json["error"]["message"]
    assert "shop.faults_enabled" in rv.json["error"]["message"]
    assert disabled_client.delete("/api/admin/faults", headers=admin_headers).status_code == 403
    state = disabled_client.get("/api/admin/faults", headers=admin_headers).json
    assert state["enabled"] is False
    assert state["faults"]["latency_ms"] == 0
