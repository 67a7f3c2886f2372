"""After a purchase, /metrics and the ECS log files tell the story a collector will read."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from vigil.settings import Settings

CARD = {"number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123", "holder": "Ann"}
SHOPPER_IP = "198.51.100.23"


def scrape(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def read_log(settings: Settings, dataset: str) -> list[dict[str, Any]]:
    path = settings.log_dir / f"{dataset}.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def purchase(client: FlaskClient, currency: str = "PLN") -> dict[str, Any]:
    """Register, log in, fill a cart, apply a coupon and pay — as a shopper behind a proxy."""
    via_proxy = {"X-Forwarded-For": SHOPPER_IP, "User-Agent": "pytest-shopper/1.0"}
    assert (
        client.post(
            "/api/accounts",
            json={"email": "ann@example.com", "password": "correct horse", "name": "Ann"},
        ).status_code
        == 201
    )
    login = client.post(
        "/api/login",
        json={"email": "ann@example.com", "password": "correct horse"},
        headers=via_proxy,
    )
    assert login.status_code == 200
    auth = {"Authorization": f"Bearer {login.json['token']}", **via_proxy}
    cart = client.post("/api/carts", headers=auth).json["cart_id"]
    product = client.get("/api/products?q=headphones").json["items"][0]
    assert (
        client.post(
            f"/api/carts/{cart}/items",
            json={"product_id": product["id"], "quantity": 2},
            headers=auth,
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/api/carts/{cart}/coupon", json={"code": "WELCOME10"}, headers=auth
        ).status_code
        == 200
    )
    rv = client.post(
        "/api/checkout",
        headers=auth,
        json={"cart_id": cart, "currency": currency, "gateway": "payu", "card": CARD},
    )
    assert rv.status_code == 201, rv.json
    order: dict[str, Any] = rv.json
    return order


def test_metrics_after_purchase(app: Flask, client: FlaskClient) -> None:
    before = scrape(client)
    order = purchase(client)
    sold_out = client.get("/api/products?per_page=100").json["items"]
    empty = next(p for p in sold_out if p["stock"] == 0)
    cart = client.post("/api/carts").json["cart_id"]
    assert (
        client.post(
            f"/api/carts/{cart}/items", json={"product_id": empty["id"], "quantity": 1}
        ).status_code
        == 409
    )
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = Decimal(order["total"])
    assert (
        delta("shop_http_requests_total", method="POST", route="/api/checkout", status="201") == 1
    )
    assert (
        delta("shop_http_request_duration_seconds_count", method="POST", route="/api/checkout") == 1
    )
    # The route template, never the raw path with the cart id.
    assert (
        delta(
            "shop_http_requests_total",
            method="POST",
            route="/api/carts/<cart_id>/items",
            status="409",
        )
        == 1
    )
    assert ("shop_http_requests_in_progress", frozenset({("method", "GET")})) in after
    assert delta("shop_orders_total", status="placed", currency="PLN") == 1
    assert delta("shop_orders_total", status="paid", currency="PLN") == 1
    assert delta("shop_revenue_total", currency="PLN") == pytest.approx(float(total))
    assert delta("shop_checkouts_total", outcome="success") == 1
    assert delta("shop_payments_total", gateway="payu", outcome="approved") == 1
    assert delta("shop_payment_duration_seconds_count", gateway="payu") == 1
    assert delta("shop_logins_total", outcome="success") == 1
    assert delta("shop_coupon_redemptions_total", coupon="WELCOME10") == 1
    assert delta("shop_stockouts_total", sku=empty["sku"]) == 1
    assert value(after, "shop_email_queue_depth", status="queued") == 1
    assert ("shop_email_deferrals_total", frozenset()) in after
    assert value(after, "shop_release_info", release="v1") == 1
    assert delta("shop_db_query_duration_seconds_count", operation="insert") >= 3


def test_fraud_decline_counted(client: FlaskClient) -> None:
    before = scrape(client)
    expensive = client.get("/api/products?sort=-price&per_page=1").json["items"][0]
    cart = client.post("/api/carts").json["cart_id"]
    quantity = int(5000 / float(expensive["price"])) + 1
    client.post(
        f"/api/carts/{cart}/items",
        json={"product_id": expensive["id"], "quantity": min(quantity, expensive["stock"])},
    )
    rv = client.post(
        "/api/checkout",
        json={
            "cart_id": cart,
            "email": "x@example.com",
            "currency": "EUR",
            "gateway": "stripe",
            "card": CARD,
        },
    )
    assert rv.status_code == 402, rv.json
    after = scrape(client)
    assert (
        value(after, "shop_fraud_declines_total", reason="amount_limit")
        - value(before, "shop_fraud_declines_total", reason="amount_limit")
        == 1
    )


def test_logs_after_purchase(app: Flask, client: FlaskClient, settings: Settings) -> None:
    order = purchase(client)
    public_id = order["order_id"]

    access = [e for e in read_log(settings, "access") if e["url"]["original"] == "/api/checkout"]
    assert len(access) == 1
    event = access[0]
    assert event["event"]["dataset"] == "shop.access"
    assert event["source"]["ip"] == SHOPPER_IP  # X-Forwarded-For via the trusted 127.0.0.1
    assert event["http"]["request"]["method"] == "POST"
    assert event["http"]["response"]["status_code"] == 201
    assert event["user"]["name"] == "ann@example.com"
    assert event["user_agent"]["original"] == "pytest-shopper/1.0"
    assert event["event"]["duration"] > 0
    assert event["@timestamp"].endswith("Z")

    auth = [e for e in read_log(settings, "auth") if e["event"]["outcome"] == "success"]
    assert auth[-1]["user"]["name"] == "ann@example.com"
    assert auth[-1]["source"]["ip"] == SHOPPER_IP
    assert auth[-1]["event"]["dataset"] == "shop.auth"

    audit = [
        e
        for e in read_log(settings, "audit")
        if e.get("audit", {}).get("target") == f"order:{public_id}"
    ]
    assert [(e["audit"]["before"].get("status"), e["audit"]["after"]["status"]) for e in audit] == [
        ("placed", "paid")
    ]
    assert all(e["event"]["dataset"] == "shop.audit" for e in audit)

    app_events = [
        e for e in read_log(settings, "app") if e.get("labels", {}).get("order_id") == public_id
    ]
    assert [e["event"]["action"] for e in app_events] == ["order-paid"]

    payments = [
        e for e in read_log(settings, "payment") if e.get("labels", {}).get("order_id") == public_id
    ]
    assert len(payments) == 1 and payments[0]["event"]["outcome"] == "success"
    # PCI-DSS: the card number never reaches a log, only BIN and last four.
    for dataset in ("access", "app", "audit", "auth", "payment"):
        text = (settings.log_dir / f"{dataset}.log").read_text(encoding="utf-8")
        assert "4242424242424242" not in text and "4242 4242 4242 4242" not in text


def test_forwarded_for_ignored_from_untrusted_peer(client: FlaskClient, settings: Settings) -> None:
    client.get(
        "/api/version",
        headers={"X-Forwarded-For": "6.6.6.6"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    client.get("/healthz", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"})
    events = read_log(settings, "access")
    by_path = {e["url"]["path"]: e["source"]["ip"] for e in events}
    assert by_path["/api/version"] == "203.0.113.9"  # a client cannot spoof its address
    assert by_path["/healthz"] == "198.51.100.7"  # rightmost untrusted hop behind our proxy
