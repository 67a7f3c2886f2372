"""Releases: v2 makes checkout ~800 ms slower and fails some payments with 5xx; v1 does not."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from shop import payments
from shop.models import Payment, Product

CHECKOUTS = 12


@pytest.fixture
def release_apps(build_app: Callable[..., Flask]) -> dict[str, Flask]:
    """A v1 and a v2 shop on the same database, fraud limits out of the way."""
    fraud = {"max_per_card": 1000, "max_per_ip": 1000}
    return {release: build_app(release=release, fraud=fraud) for release in ("v1", "v2")}


def run_checkouts(app: Flask, count: int) -> tuple[list[float], list[int]]:
    """``count`` single-item checkouts; their durations in seconds and their statuses."""
    client: FlaskClient = app.test_client()
    with app.extensions["vigil.shop"].sessions() as session:
        product_id = session.scalars(select(Product.id).where(Product.sku == "ELEC-008")).one()
    durations: list[float] = []
    statuses: list[int] = []
    for _ in range(count):
        cart_id = client.post("/api/carts").json["cart_id"]
        client.post(f"/api/carts/{cart_id}/items", json={"product_id": product_id, "quantity": 1})
        started = time.perf_counter()
        rv = client.post(
            "/api/checkout",
            json={
                "cart_id": cart_id,
                "email": "ann@example.com",
                "currency": "EUR",
                "gateway": "stripe",
                "card": {"number": "4242424242424242", "expiry": "10/37", "cvc": "123"},
            },
        )
        durations.append(time.perf_counter() - started)
        statuses.append(rv.status_code)
    return durations, statuses


def test_release_version_endpoint(release_apps: dict[str, Flask]) -> None:
    for name, app in release_apps.items():
        assert app.test_client().get("/api/version").json == {"release": name, "service": "shop"}


def test_release_v2_is_slow_and_fails_payments(release_apps: dict[str, Flask]) -> None:
    payments.seed(5)  # the 5xx share is random; a fixed seed makes this run repeatable
    v1_durations, v1_statuses = run_checkouts(release_apps["v1"], CHECKOUTS)
    v2_durations, v2_statuses = run_checkouts(release_apps["v2"], CHECKOUTS)

    assert v1_statuses == [201] * CHECKOUTS
    assert statistics.median(v2_durations) - statistics.median(v1_durations) >= 0.6
    failed = [s for s in v2_statuses if s >= 500]
    assert failed, "v2 should fail some payments with a 5xx"
    assert set(failed) == {502}
    assert set(v2_statuses) <= {201, 502}
    assert len(failed) <= CHECKOUTS // 2
    with release_apps["v2"].extensions["vigil.shop"].sessions() as session:
        reasons = session.scalars(select(Payment.reason).where(Payment.outcome == "error")).all()
    assert reasons == ["gateway_internal_error"] * len(failed)
    log_dir: Path = release_apps["v2"].extensions["vigil.shop"].settings.log_dir
    events: list[dict[str, Any]] = [
        json.loads(line)
        for line in (log_dir / "payment.log").read_text(encoding="utf-8").splitlines()
    ]
    assert {e["labels"]["release"] for e in events} == {"v2"}
    assert sum(e["labels"]["payment_outcome"] == "error" for e in events) == len(failed)
