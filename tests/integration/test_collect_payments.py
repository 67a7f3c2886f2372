"""The payment-flow collector against the real shop app (SQLite and PostgreSQL).

Checkouts go through the gateway simulators, ledger faults are injected through
the admin faults API, and the collector (tailer + payments source, as `vigil up`
runs them) writes the funnel metrics and the reconciliation events to the store.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, select

from collectors.loop import Collector
from collectors.payments import DATASET, PaymentsSource, read_books, reconcile
from collectors.tail import Tailer
from shop.models import Product
from siem.model import EventQuery, Matcher
from siem.sqlite import SqliteStore
from vigil.settings import Settings

APPROVED = "4242424242424242"
DECLINED = "4000000000000002"
# Distinct valid cards, so the fraud check's per-card velocity limit stays out of the way.
CARDS = ("4000056655665556", "5555555555554444", "2223003122003222", "5200828282828210")
GRACE = 120.0


def checkout(client: FlaskClient, app: Flask, gateway: str, card: str = APPROVED) -> Any:
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
            "card": {"number": card, "expiry": "10/37", "cvc": "123"},
        },
    )


def set_ledger_faults(client: FlaskClient, headers: dict[str, str], *names: str) -> None:
    rv = client.put("/api/admin/faults", json={"ledger_faults": list(names)}, headers=headers)
    assert rv.status_code == 200, rv.json
    assert rv.json["faults"]["ledger_faults"] == sorted(names)


def collector_for(
    settings: Settings, store: SqliteStore, clock: Callable[[], float] = time.time
) -> Collector:
    """The collector `vigil up` runs, reduced to the two sources this test needs."""
    collector = Collector(settings, store, registry=CollectorRegistry(), sources=[])
    data_dir = Path(settings.data_dir).resolve()
    tailer = Tailer(data_dir, ["logs/*.log"], collector.checkpoints, collector.metrics)
    payments = PaymentsSource(
        store,
        settings.shop_db_url,
        collector.metrics,
        interval_s=0,
        window_s=3600,
        grace_s=GRACE,
        clock=clock,
    )
    collector.sources = [tailer, payments]
    return collector


def latest(store: SqliteStore, name: str) -> dict[tuple[str, ...], float]:
    """The newest value of each series called ``name``, keyed by its labels' values."""
    now = time.time()
    rv = {}
    for series in store.select([Matcher("__name__", "=", name)], now - 600, now + 600):
        key = tuple(v for k, v in series.labels if k != "__name__")
        rv[key] = series.points[-1][1]
    return rv


def test_collect_payments_finds_capture_without_order_and_counts_the_funnel(
    app: Flask,
    client: FlaskClient,
    settings: Settings,
    admin_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    assert checkout(client, app, "stripe").status_code == 201
    assert checkout(client, app, "stripe").status_code == 201
    assert checkout(client, app, "adyen", CARDS[0]).status_code == 201
    assert checkout(client, app, "stripe", DECLINED).status_code == 402
    set_ledger_faults(client, admin_headers, "capture_without_order")
    charged = checkout(client, app, "payu", DECLINED)
    assert charged.status_code == 402
    (order_id,) = [
        o["order_id"]
        for o in client.get("/api/admin/orders?status=cancelled", headers=admin_headers).json[
            "orders"
        ]
        if o["gateway"] == "payu"
    ]
    # The gateway's own ledger (its transactions API) shows the capture the shop never saw.
    ledger = client.get("/api/admin/gateways/payu/transactions?since=0", headers=admin_headers)
    assert ledger.status_code == 200
    assert [(t["kind"], t["order_ref"]) for t in ledger.json["transactions"]] == [
        ("capture", order_id)
    ]

    store = SqliteStore(tmp_path / "siem.db")
    later = [0.0]  # how far the payments source's clock is ahead of now
    collector = collector_for(settings, store, clock=lambda: time.time() + later[0])
    assert collector.run_once()  # tails the shop's logs (and reconciles)
    # The capture is seconds old: it may still be a checkout between its two writes.
    assert store.search(EventQuery(dataset=DATASET)) == []
    later[0] = GRACE + 1
    assert collector.run_once()  # the funnel now sees the stored payment events

    (found,) = store.search(EventQuery(dataset=DATASET))
    assert found.get("event.action") == "capture_without_order"
    assert found.get("labels.gateway") == "payu"
    assert found.get("labels.order_id") == order_id
    assert found.get("labels.order_status") == "cancelled"
    assert found.get("labels.captured_amount") == found.get("labels.order_amount")

    assert latest(store, "vigil_payments_attempts_total") == {
        ("adyen",): 1,
        ("payu",): 1,
        ("stripe",): 3,
    }
    assert latest(store, "vigil_payments_authorised_total") == {
        ("adyen",): 1,
        ("payu",): 0,
        ("stripe",): 2,
    }
    assert latest(store, "vigil_payments_declined_total") == {
        ("payu", "card_declined"): 1,
        ("stripe", "card_declined"): 1,
    }
    inf = {k: v for k, v in latest(store, "vigil_payments_authorise_seconds_bucket").items()}
    assert inf[("stripe", "+Inf")] == 3

    # A re-run (a restart) stores the finding once.
    assert collector.run_once()
    assert len(store.search(EventQuery(dataset=DATASET))) == 1
    collector.close()
    store.close()


def test_ledger_faults_produce_each_discrepancy(
    app: Flask, client: FlaskClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    made: dict[str, str] = {}
    faults = ("lost_capture", "double_capture", "amount_mismatch", "currency_mismatch")
    for fault, card in zip(faults, CARDS, strict=True):
        set_ledger_faults(client, admin_headers, fault)
        rv = checkout(client, app, "stripe", card)
        assert rv.status_code == 201
        made[rv.json["order_id"]] = fault
    client.delete("/api/admin/faults", headers=admin_headers)
    clean = checkout(client, app, "stripe")
    assert clean.status_code == 201

    engine = create_engine(settings.shop_db_url)
    try:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        found = {d.order_ref: d.rule for d in reconcile(*read_books(engine, since))}
    finally:
        engine.dispose()
    assert found == {
        ref: {"lost_capture": "paid_without_capture"}.get(fault, fault)
        for ref, fault in made.items()
    }
