"""The payment-flow collector: funnel metrics from payment events, reconciliation rules."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.rules import check_files, load_rules
from alerting.state import AlertBook, AlertDB
from collectors.metrics import CollectorMetrics
from collectors.payments import (
    DATASET,
    LEDGER_TABLE,
    ORDERS_TABLE,
    RULES,
    LedgerEntry,
    OrderView,
    PaymentsSource,
    discrepancy_event,
    funnel_samples,
    reconcile,
)
from siem.memory import MemoryStore
from siem.model import Event, Sample

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "config" / "rules" / "payments.yaml"
T0 = 1_700_000_000.0


def order(ref: str, status: str = "paid", total: str = "10.00", **kw: Any) -> OrderView:
    return OrderView(
        ref=ref,
        gateway=kw.get("gateway", "stripe"),
        status=status,
        total=Decimal(total),
        currency=kw.get("currency", "EUR"),
        created_at=T0,
        updated_at=kw.get("updated_at", T0),
    )


def capture(ref: str, amount: str = "10.00", n: int = 0, **kw: Any) -> LedgerEntry:
    return LedgerEntry(
        txn_id=f"txn-{ref}-{n}",
        gateway=kw.get("gateway", "stripe"),
        order_ref=ref,
        amount=Decimal(amount),
        currency=kw.get("currency", "EUR"),
        created_at=T0 + n,
    )


def rules_of(orders: list[OrderView], captures: list[LedgerEntry]) -> list[tuple[str, str]]:
    return [(d.rule, d.order_ref) for d in reconcile(orders, captures)]


def test_reconcile_matching_books_find_nothing() -> None:
    orders = [order("a"), order("b", "shipped", "5.50"), order("c", "cancelled")]
    assert rules_of(orders, [capture("a"), capture("b", "5.50")]) == []


def test_reconcile_paid_without_capture() -> None:
    orders = [order("a"), order("b", "delivered"), order("c", "cancelled")]
    assert rules_of(orders, [capture("a")]) == [("paid_without_capture", "b")]


def test_reconcile_capture_without_order() -> None:
    orders = [order("a", "cancelled"), order("b", "placed")]
    captures = [capture("a"), capture("b"), capture("ghost")]
    assert rules_of(orders, captures) == [
        ("capture_without_order", "a"),
        ("capture_without_order", "b"),
        ("capture_without_order", "ghost"),
    ]


def test_reconcile_capture_at_another_gateway_is_without_order() -> None:
    found = rules_of([order("a")], [capture("a", gateway="adyen")])
    # The paying gateway has no capture, the other one captured for nothing.
    assert found == [("capture_without_order", "a"), ("paid_without_capture", "a")]


def test_reconcile_double_capture() -> None:
    found = reconcile([order("a")], [capture("a", n=1), capture("a", n=0)])
    assert [(d.rule, d.order_ref) for d in found] == [("double_capture", "a")]
    assert [e.txn_id for e in found[0].captures] == ["txn-a-0", "txn-a-1"]


def test_reconcile_amount_and_currency_mismatch() -> None:
    orders = [order("a"), order("b"), order("c")]
    captures = [capture("a", "10.01"), capture("b", currency="USD"), capture("c", "10.0")]
    # 10.0 and 10.00 are the same amount.
    assert rules_of(orders, captures) == [("amount_mismatch", "a"), ("currency_mismatch", "b")]


GRACE = 120.0


def test_reconcile_waits_out_a_checkout_between_capture_and_paid() -> None:
    # The gateway captures at T0+10; the shop marks the order paid a second later.
    placed = order("a", "placed", updated_at=T0)
    paid = order("a", "paid", updated_at=T0 + 11)
    captured = [capture("a", n=10)]
    # A pass between the two writes sees a capture of an unpaid order: not settled yet.
    assert reconcile([placed], captured, settled_before=T0 + 10.5 - GRACE) == []
    # Once both writes are in, the books agree.
    assert reconcile([paid], captured, settled_before=T0 + 11.5 - GRACE) == []
    assert reconcile([paid], captured, settled_before=T0 + 500 - GRACE) == []
    # Without a grace the in-between pass raises the false alarm the grace prevents.
    assert rules_of([placed], captured) == [("capture_without_order", "a")]


def test_reconcile_reports_a_capture_whose_order_stays_unpaid_after_the_grace() -> None:
    placed = order("a", "placed", updated_at=T0)
    captured = [capture("a", n=10)]
    assert reconcile([placed], captured, settled_before=T0 + 10 + GRACE - 1 - GRACE) == []
    (found,) = reconcile([placed], captured, settled_before=T0 + 10 + GRACE + 1 - GRACE)
    assert (found.rule, found.order_ref) == ("capture_without_order", "a")


def test_reconcile_waits_for_the_capture_of_a_just_paid_order() -> None:
    # The converse order of writes: paid at T0+5, the capture not recorded yet.
    paid = order("a", "paid", updated_at=T0 + 5)
    assert reconcile([paid], [], settled_before=T0 + 6 - GRACE) == []
    (found,) = reconcile([paid], [], settled_before=T0 + 5 + GRACE + 1 - GRACE)
    assert found.rule == "paid_without_capture"


def test_reconcile_settles_on_the_newest_record_involved() -> None:
    # An old paid order and a second capture a moment ago: a double capture, not settled.
    paid = order("a", updated_at=T0)
    captures = [capture("a", n=0), capture("a", n=300)]
    assert reconcile([paid], captures, settled_before=T0 + 200) == []
    (found,) = reconcile([paid], captures, settled_before=T0 + 301)
    assert found.rule == "double_capture"
    assert found.newest == T0 + 300
    # A capture whose order does not exist settles on the capture alone.
    (ghost,) = reconcile([], [capture("ghost", n=7)], settled_before=T0 + 8)
    assert (ghost.rule, ghost.newest) == ("capture_without_order", T0 + 7)


def test_discrepancy_event_fields_and_stable_id() -> None:
    (d,) = reconcile([order("a", total="20.00")], [capture("a", "20.00"), capture("a", "20.00", 1)])
    first = discrepancy_event(d, T0 + 60)
    again = discrepancy_event(d, T0 + 90)
    assert first.id == again.id
    assert first.dataset == DATASET
    assert first.get("event.action") == "double_capture"
    assert first.get("event.kind") == "alert"
    assert first.get("labels.gateway") == "stripe"
    assert first.get("labels.order_id") == "a"
    assert first.get("labels.order_amount") == "20.00"
    assert first.get("labels.captured_amount") == "40.00"
    assert first.get("labels.captures") == 2
    assert first.get("transaction.id") == ["txn-a-0", "txn-a-1"]
    assert first.get("event.start") == "2023-11-14T22:13:20Z"
    assert "captured order a 2 times" in first.get("message")
    store = MemoryStore()
    assert store.write(events=[first]).events == 1
    assert store.write(events=[again]).duplicate_events == 1


def test_discrepancy_event_ids_differ_by_rule_gateway_and_order() -> None:
    found = reconcile(
        [order("a"), order("b", gateway="adyen")],
        [capture("a", "1.00"), capture("b", gateway="adyen", currency="PLN")],
    )
    ids = {discrepancy_event(d, T0).id for d in found}
    assert len(ids) == len(found) == 2


def payment_event(i: int, gateway: str, outcome: str, reason: str = "", ms: int = 0) -> Event:
    doc: dict[str, Any] = {
        "@timestamp": dt.datetime.fromtimestamp(T0 + i, dt.UTC).isoformat(),
        "event": {
            "dataset": "shop.payment",
            "action": "payment-authorisation",
            "duration": ms * 1_000_000,
        },
        "labels": {"gateway": gateway, "payment_outcome": outcome, "order_id": f"o{i}"},
    }
    if reason:
        doc["event"]["reason"] = reason
    return Event.from_doc(doc, source="payment.log", position=i)


def funnel(samples: list[Sample]) -> dict[tuple[str, ...], float]:
    return {(*(v for k, v in s.labels if k != "__name__"), s.name): s.value for s in samples}


def test_funnel_samples_per_gateway_outcome_and_reason() -> None:
    store = MemoryStore()
    store.write(
        events=[
            payment_event(0, "stripe", "approved", ms=40),
            payment_event(1, "stripe", "approved", ms=300),
            payment_event(2, "stripe", "declined", "card_declined", ms=20),
            payment_event(3, "stripe", "fraud", "amount"),
            payment_event(4, "adyen", "error", "gateway_unavailable", ms=3000),
            payment_event(5, "adyen", "declined", "do_not_honor", ms=60),
        ]
    )
    got = funnel(funnel_samples(store, T0 + 100))
    assert got[("stripe", "vigil_payments_attempts_total")] == 4
    assert got[("stripe", "vigil_payments_authorised_total")] == 2
    assert got[("stripe", "card_declined", "vigil_payments_declined_total")] == 1
    assert got[("stripe", "fraud:amount", "vigil_payments_declined_total")] == 1
    assert got[("adyen", "vigil_payments_attempts_total")] == 2
    assert got[("adyen", "vigil_payments_authorised_total")] == 0
    assert got[("adyen", "gateway_unavailable", "vigil_payments_gateway_errors_total")] == 1
    assert got[("adyen", "do_not_honor", "vigil_payments_declined_total")] == 1
    # Time to authorise: only what the gateway answered (not the fraud refusal).
    bucket = "vigil_payments_authorise_seconds_bucket"
    assert got[("stripe", "0.05", bucket)] == 2
    assert got[("stripe", "0.5", bucket)] == 3
    assert got[("stripe", "+Inf", bucket)] == 3
    assert got[("stripe", "vigil_payments_authorise_seconds_count")] == 3
    assert got[("adyen", "0.1", bucket)] == 1
    assert got[("adyen", "2.5", bucket)] == 1
    assert got[("adyen", "5.0", bucket)] == 2
    assert not any(k[0] == "stripe" and "gateway_errors" in k[-1] for k in got)
    assert {s.timestamp for s in funnel_samples(store, T0 + 100)} == {T0 + 100}


def test_funnel_samples_none_without_payments() -> None:
    assert funnel_samples(MemoryStore(), T0) == []


def test_payments_source_counts_unreadable_database(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    bad = tmp_path / "shop.db"
    bad.write_bytes(b"this is not a sqlite database" * 100)
    source = PaymentsSource(
        MemoryStore(),
        f"sqlite:///{bad}",
        CollectorMetrics(registry),
        interval_s=30,
        window_s=3600,
        grace_s=0,
        clock=lambda: T0,
    )
    assert source.collect() == []
    errors = "vigil_collector_scrape_errors_total"
    assert registry.get_sample_value(errors, {"job": "payments"}) == 1
    source.close()


def test_payments_source_waits_for_missing_sqlite_and_its_interval(tmp_path: Path) -> None:
    now = [T0]
    registry = CollectorRegistry()
    store = MemoryStore()
    store.write(events=[payment_event(0, "payu", "approved", ms=10)])
    path = tmp_path / "absent.db"
    source = PaymentsSource(
        store,
        f"sqlite:///{path}",
        CollectorMetrics(registry),
        interval_s=30,
        window_s=3600,
        grace_s=0,
        clock=lambda: now[0],
    )
    (batch,) = source.collect()
    assert batch.events == ()
    assert {s.name for s in batch.samples} >= {"vigil_payments_attempts_total"}
    now[0] += 10
    assert source.collect() == []  # not due yet
    now[0] += 25
    assert len(source.collect()) == 1
    assert not path.exists()  # never created the shop's database
    assert (
        registry.get_sample_value("vigil_collector_scrape_errors_total", {"job": "payments"})
        is None
    )


def test_payments_rule_fires_per_gateway_and_resolves(tmp_path: Path) -> None:
    assert [i for i in check_files([str(SHIPPED)]) if i.severity == "error"] == []
    found = reconcile(
        [order("a"), order("b", gateway="adyen")],
        [capture("a", n=0), capture("a", n=1), capture("ghost")],
    )
    store = MemoryStore()
    store.write(events=[discrepancy_event(d, T0 - 30) for d in found])
    engine = AlertEngine(
        store,
        load_rules([SHIPPED]),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=CollectorRegistry(),
    )
    changes = engine.run_once(at=T0)
    firing = {c.alert.labels["labels_gateway"]: c.alert for c in changes if c.after == "firing"}
    assert sorted(firing) == ["adyen", "stripe"]
    assert firing["stripe"].value == 2.0  # the double capture and the capture of "ghost"
    assert firing["stripe"].labels["severity"] == "critical"
    summary = firing["adyen"].annotations["summary"]
    assert summary == "1 reconciliation mismatches at gateway adyen"
    assert (
        firing["adyen"]
        .annotations["runbook_url"]
        .endswith("runbooks/payment-reconciliation-mismatch.md")
    )
    later = engine.run_once(at=T0 + 15 * 60)
    assert sorted(c.after for c in later) == ["resolved", "resolved"]


def test_payments_runbook_names_every_rule() -> None:
    text = (ROOT / "runbooks" / "payment-reconciliation-mismatch.md").read_text()
    assert [rule for rule in RULES if f"`{rule}`" not in text] == []


def test_payments_tables_match_the_shop_models() -> None:
    from shop.models import GatewayTransaction, Order

    for described, model in ((LEDGER_TABLE, GatewayTransaction), (ORDERS_TABLE, Order)):
        assert described.name == model.__tablename__
        assert set(described.c.keys()) <= set(model.__table__.c.keys())


def test_payments_source_runs_in_the_collector_unless_off(tmp_path: Path) -> None:
    from collectors.loop import Collector
    from vigil.settings import from_mapping

    def sources(**collect: Any) -> list[PaymentsSource]:
        settings = from_mapping({"data_dir": str(tmp_path), "collect": collect})
        collector = Collector(settings, MemoryStore(), registry=CollectorRegistry())
        collector.close()
        return [s for s in collector.sources if isinstance(s, PaymentsSource)]

    (source,) = sources()
    assert source.db_url == f"sqlite:///{tmp_path.resolve() / 'shop.db'}"
    assert source.interval_s == 30.0
    assert source.grace_s == 120.0
    assert sources(payments_interval_s=0) == []


def test_payments_source_reads_the_settle_time_and_the_window_edge_from_the_database(
    tmp_path: Path,
) -> None:
    from sqlalchemy import create_engine, update

    from shop.db import Base
    from shop.models import GatewayTransaction, Order

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    window = 3600.0

    def at(t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, dt.UTC)

    def add_order(ref: str, status: str, created: float, updated: float) -> None:
        with engine.begin() as conn:
            conn.execute(
                Order.__table__.insert().values(
                    public_id=ref,
                    email="ann@example.com",
                    status=status,
                    currency="EUR",
                    subtotal=Decimal("10.00"),
                    total=Decimal("10.00"),
                    total_eur=Decimal("10.00"),
                    gateway="stripe",
                    created_at=at(created),
                    updated_at=at(updated),
                )
            )

    def add_capture(ref: str, when: float) -> None:
        with engine.begin() as conn:
            conn.execute(
                GatewayTransaction.__table__.insert().values(
                    gateway="stripe",
                    txn_id=f"txn-{ref}",
                    kind="capture",
                    order_ref=ref,
                    amount=Decimal("10.00"),
                    currency="EUR",
                    created_at=at(when),
                )
            )

    now = [T0 + 0.5]
    source = PaymentsSource(
        MemoryStore(),
        url,
        CollectorMetrics(CollectorRegistry()),
        interval_s=0,
        window_s=window,
        grace_s=GRACE,
        clock=lambda: now[0],
    )

    def found() -> list[tuple[str, str]]:
        return sorted(
            (e.get("event.action"), e.get("labels.order_id"))
            for b in source.collect()
            for e in b.events
        )

    # "a" and "b" are captured at T0; "a" is marked paid at T0 + 1, "b" never is.
    add_order("a", "placed", T0 - 100, T0 - 100)
    add_order("b", "placed", T0 - 100, T0 - 100)
    add_capture("a", T0)
    add_capture("b", T0)
    # "c" was placed before the window and paid and captured inside it; "d" was
    # placed before the window and paid inside it, with no capture at all.
    add_order("c", "paid", T0 - window - 50, T0 - 10)
    add_capture("c", T0 - 10)
    add_order("d", "paid", T0 - window - 50, T0 - 10)
    assert found() == []  # a pass between "a"'s capture and its paid status
    with engine.begin() as conn:
        conn.execute(
            update(Order.__table__)
            .where(Order.public_id == "a")
            .values(status="paid", updated_at=at(T0 + 1))
        )
    now[0] = T0 + GRACE + 5
    assert found() == [("capture_without_order", "b"), ("paid_without_capture", "d")]
    source.close()
    engine.dispose()
