"""Payment flows: per-gateway funnel metrics and a reconciliation against gateway ledgers.

Every ``collect.payments_interval_s`` the source does two things.

**Funnel.** From the ``shop.payment`` events already in the store (one per
payment attempt, joined to its order by ``labels.order_id``) it writes, per
gateway, counts over every stored attempt, recomputed each pass — so a restart
neither loses nor double-counts anything:

- ``vigil_payments_attempts_total{gateway}``: attempts, including those the
  shop's fraud check refused before asking the gateway;
- ``vigil_payments_authorised_total{gateway}``;
- ``vigil_payments_declined_total{gateway,reason}``: the gateway's decline
  reason (``card_declined``, ``do_not_honor`` …), or ``fraud:<rule>`` when the
  shop's fraud check refused the payment;
- ``vigil_payments_gateway_errors_total{gateway,reason}`` (``gateway_unavailable``,
  ``gateway_internal_error`` …);
- ``vigil_payments_authorise_seconds_bucket{gateway,le}`` and ``_count``: how
  long the gateway took to answer (``event.duration``), as a Prometheus
  histogram (no ``_sum``: the store aggregates counts, not sums).

The counts shrink when retention removes old events; ``rate()`` reads that as
a counter reset.

**Reconciliation.** The simulated gateways keep their own ledger
(``shop/ledger.py``: authorisations and captures with amount, currency and the
order reference). The source reads it and the orders from the shop database
(``shop.db``) for the last ``collect.payments_window_s`` and writes one
``payments.reconciliation`` event (``event.kind: alert``) per discrepancy,
``event.action`` naming the rule:

- ``paid_without_capture``: an order paid (or shipped, delivered, refunded)
  whose gateway recorded no capture for it;
- ``capture_without_order``: a capture whose order does not exist or was never
  paid (the customer was charged for nothing);
- ``double_capture``: more than one capture for one order;
- ``currency_mismatch`` / ``amount_mismatch``: the one capture differs from
  the order's currency or total.

A discrepancy is reported only once it has settled: when the newest record
it involves (a capture, or the order's last update) is older than
``collect.payments_grace_s``. A checkout writes the gateway's capture and the
order's ``paid`` status one after the other (``shop/checkout.py``), and a real
gateway's ledger lags the shop by seconds; a pass that reads between the two
would otherwise report a capture without an order (or a paid order without a
capture) that the next second puts right — a false money alert at every busy
moment. Real reconciliation jobs wait out the same settle time.

The window selects orders created *or updated* in it (an order placed just
before the window and paid inside it is checked), plus every order a capture
in the window refers to and every capture of those orders, whatever their age:
a record just past the window's edge never makes its partner look orphaned.

Each event's id is a hash of (rule, gateway, order reference), so a re-run
stores it once. A database that cannot be read is counted in
``vigil_collector_scrape_errors_total{job="payments"}`` and logged, never raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Numeric, String, column, create_engine, or_, select, table
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from collectors.metrics import CollectorMetrics
from collectors.sink import Batch
from siem.model import Event, EventQuery, Sample, Store, event_id, make_labels
from vigil.settings import Settings

log = logging.getLogger("vigil.collect.payments")

JOB = "payments"
DATASET = "payments.reconciliation"
PAYMENT_DATASET = "shop.payment"
# Statuses of an order whose money the gateway must have captured.
PAID_STATUSES = ("paid", "shipped", "delivered", "refunded")
# Bounds of the time-to-authorise histogram, in seconds (shop_payment_duration_seconds's).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Gateways given funnel metrics, the busiest first.
MAX_GATEWAYS = 20
# Orders and captures read per query, so an IN list stays small on every database.
CHUNK = 500
RULES = (
    "paid_without_capture",
    "capture_without_order",
    "double_capture",
    "currency_mismatch",
    "amount_mismatch",
)


# --- funnel ---------------------------------------------------------------------------------


def funnel_samples(store: Store, now: float) -> list[Sample]:
    """The funnel metrics (see the module docstring) over every stored payment attempt."""
    attempts = EventQuery(dataset=PAYMENT_DATASET, kql='event.action:"payment-authorisation"')
    by_gateway = store.count_by(attempts, "labels.gateway")
    samples: list[Sample] = []

    def add(name: str, value: float, **labels: str) -> None:
        samples.append(Sample(make_labels(name, **labels), now, float(value)))

    # The most used gateways only: a forged log line must not mint series without end.
    busiest = sorted(by_gateway.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_GATEWAYS]
    for gateway, total in sorted(busiest):
        one = (("labels.gateway", gateway),)

        def count(kql: str, field: str, one: tuple[tuple[str, Any], ...] = one) -> dict[str, int]:
            query = EventQuery(dataset=PAYMENT_DATASET, kql=kql, equals=one)
            return store.count_by(query, field)

        add("vigil_payments_attempts_total", total, gateway=gateway)
        approved = count("labels.payment_outcome:approved", "labels.gateway")
        add("vigil_payments_authorised_total", approved.get(gateway, 0), gateway=gateway)
        for reason, n in sorted(count("labels.payment_outcome:declined", "event.reason").items()):
            add("vigil_payments_declined_total", n, gateway=gateway, reason=reason)
        for reason, n in sorted(count("labels.payment_outcome:fraud", "event.reason").items()):
            add("vigil_payments_declined_total", n, gateway=gateway, reason=f"fraud:{reason}")
        for reason, n in sorted(count("labels.payment_outcome:error", "event.reason").items()):
            add("vigil_payments_gateway_errors_total", n, gateway=gateway, reason=reason)
        # Attempts the gateway answered (a fraud refusal never reached it).
        answered = "labels.payment_outcome:(approved or declined or error)"
        for bound in BUCKETS:
            nanos = int(bound * 1e9)
            within = count(f"{answered} and event.duration <= {nanos}", "labels.gateway")
            le = _le(bound)
            add(
                "vigil_payments_authorise_seconds_bucket",
                within.get(gateway, 0),
                gateway=gateway,
                le=le,
            )
        answers = count(answered, "labels.gateway").get(gateway, 0)
        add("vigil_payments_authorise_seconds_bucket", answers, gateway=gateway, le="+Inf")
        add("vigil_payments_authorise_seconds_count", answers, gateway=gateway)
    return samples


def _le(bound: float) -> str:
    # Prometheus client's formatting of bucket bounds: 0.05, 1.0, 10.0.
    return repr(float(bound))


# --- reconciliation -------------------------------------------------------------------------

# The shop's tables as far as read here (shop/models.py), described rather than imported:
# importing the shop's models would load its prometheus metrics into the collector.
_MONEY = Numeric(12, 2, asdecimal=True)
_TIME = DateTime(timezone=True)
LEDGER_TABLE = table(
    "gateway_transactions",
    column("txn_id", String),
    column("gateway", String),
    column("kind", String),
    column("order_ref", String),
    column("amount", _MONEY),
    column("currency", String),
    column("created_at", _TIME),
)
ORDERS_TABLE = table(
    "orders",
    column("public_id", String),
    column("gateway", String),
    column("status", String),
    column("total", _MONEY),
    column("currency", String),
    column("created_at", _TIME),
    column("updated_at", _TIME),
)


@dataclass(frozen=True)
class OrderView:
    """What the reconciliation needs of an order."""

    ref: str
    gateway: str
    status: str
    total: Decimal
    currency: str
    created_at: float
    # The last change of the order (its status, most often), epoch seconds.
    updated_at: float


@dataclass(frozen=True)
class LedgerEntry:
    """One capture in a gateway's ledger."""

    txn_id: str
    gateway: str
    order_ref: str
    amount: Decimal
    currency: str
    created_at: float


@dataclass(frozen=True)
class Discrepancy:
    """One reconciliation finding: ``rule`` broken for ``order_ref`` at ``gateway``."""

    rule: str
    gateway: str
    order_ref: str
    order: OrderView | None
    captures: tuple[LedgerEntry, ...]

    @property
    def timestamp(self) -> float:
        """When it happened: the first capture, else the order (stable across passes)."""
        if self.captures:
            return self.captures[0].created_at
        return self.order.created_at if self.order is not None else 0.0

    @property
    def newest(self) -> float:
        """When the newest record involved was written: a capture or the order's last update."""
        times = [e.created_at for e in self.captures]
        if self.order is not None:
            times.append(self.order.updated_at)
        return max(times, default=0.0)


def reconcile(
    orders: Iterable[OrderView],
    captures: Iterable[LedgerEntry],
    *,
    settled_before: float = math.inf,
) -> list[Discrepancy]:
    """Every settled discrepancy between ``orders`` and the gateways' ``captures``.

    ``orders`` must include every order some capture refers to (paid or not),
    plus the paid orders to check; a capture whose order is missing is a
    capture without an order. A discrepancy whose newest record
    (:attr:`Discrepancy.newest`) is not older than ``settled_before`` may be a
    checkout caught between its two writes: it is left for a later pass.
    """
    by_ref = {order.ref: order for order in orders}
    captured: dict[tuple[str, str], list[LedgerEntry]] = defaultdict(list)
    for entry in captures:
        captured[(entry.gateway, entry.order_ref)].append(entry)
    found: list[Discrepancy] = []
    for (gateway, ref), entries in sorted(captured.items()):
        entries.sort(key=lambda e: (e.created_at, e.txn_id))
        order = by_ref.get(ref)
        if order is None or order.status not in PAID_STATUSES or order.gateway != gateway:
            found.append(Discrepancy("capture_without_order", gateway, ref, order, tuple(entries)))
            continue
        if len(entries) > 1:
            found.append(Discrepancy("double_capture", gateway, ref, order, tuple(entries)))
            continue
        (entry,) = entries
        if entry.currency != order.currency:
            found.append(Discrepancy("currency_mismatch", gateway, ref, order, (entry,)))
        elif entry.amount != order.total:
            found.append(Discrepancy("amount_mismatch", gateway, ref, order, (entry,)))
    for order in sorted(by_ref.values(), key=lambda o: o.ref):
        if order.status in PAID_STATUSES and (order.gateway, order.ref) not in captured:
            found.append(Discrepancy("paid_without_capture", order.gateway, order.ref, order, ()))
    return [d for d in found if d.newest < settled_before]


def _message(d: Discrepancy) -> str:
    amounts = ", ".join(f"{e.amount} {e.currency}" for e in d.captures)
    order = f"{d.order.total} {d.order.currency}" if d.order is not None else "no such order"
    if d.rule == "paid_without_capture":
        return f"order {d.order_ref} ({order}) is paid but {d.gateway} recorded no capture"
    if d.rule == "capture_without_order":
        status = d.order.status if d.order is not None else "missing"
        return f"{d.gateway} captured {amounts} for order {d.order_ref}, which is {status}"
    if d.rule == "double_capture":
        return f"{d.gateway} captured order {d.order_ref} {len(d.captures)} times: {amounts}"
    return f"{d.gateway} captured {amounts} for order {d.order_ref} of {order}"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def discrepancy_event(d: Discrepancy, detected_at: float) -> Event:
    """The ``payments.reconciliation`` event of ``d``, found at ``detected_at``.

    ``@timestamp`` is when it was found (so alert windows see it however late it
    is found) and ``event.start`` when the money moved. The id depends only on
    what broke: the store keeps the first detection and drops the re-runs.
    """
    labels: dict[str, Any] = {
        "rule": d.rule,
        "gateway": d.gateway,
        "order_id": d.order_ref,
        "captures": len(d.captures),
    }
    if d.order is not None:
        labels |= {
            "order_status": d.order.status,
            "order_amount": str(d.order.total),
            "order_currency": d.order.currency,
        }
    if d.captures:
        labels |= {
            "captured_amount": str(sum((e.amount for e in d.captures), Decimal("0"))),
            "captured_currency": d.captures[0].currency,
        }
    doc: dict[str, Any] = {
        "@timestamp": _iso(detected_at),
        "message": _message(d),
        "event": {
            "kind": "alert",
            "category": ["process"],
            "type": ["info"],
            "dataset": DATASET,
            "action": d.rule,
            "outcome": "failure",
            "start": _iso(d.timestamp),
        },
        "labels": labels,
        "transaction": {"id": [e.txn_id for e in d.captures]},
        "ecs": {"version": "8.11.0"},
    }
    ident = event_id(DATASET, f"{d.rule}\x00{d.gateway}\x00{d.order_ref}")
    return Event(ident, detected_at, DATASET, doc)


def _epoch(value: dt.datetime) -> float:
    # SQLite hands back naive datetimes, stored in UTC.
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


def read_books(engine: Engine, since: dt.datetime) -> tuple[list[OrderView], list[LedgerEntry]]:
    """The orders and captures to reconcile: everything since ``since`` and what it refers to."""
    txn = LEDGER_TABLE.c
    o = ORDERS_TABLE.c
    entry_cols = [txn.txn_id, txn.gateway, txn.order_ref, txn.amount, txn.currency, txn.created_at]
    order_cols = [o.public_id, o.gateway, o.status, o.total, o.currency, o.created_at, o.updated_at]

    def entries(rows: Iterable[Any]) -> list[LedgerEntry]:
        return [LedgerEntry(r[0], r[1], r[2], Decimal(r[3]), r[4], _epoch(r[5])) for r in rows]

    def views(rows: Iterable[Any]) -> list[OrderView]:
        return [
            OrderView(r[0], r[1], r[2], Decimal(r[3]), r[4], _epoch(r[5]), _epoch(r[6]))
            for r in rows
        ]

    with engine.connect() as conn:
        is_capture = txn.kind == "capture"
        captures = entries(
            conn.execute(select(*entry_cols).where(is_capture, txn.created_at >= since))
        )
        orders = views(
            conn.execute(
                select(*order_cols).where(
                    or_(o.created_at >= since, o.updated_at >= since),
                    o.status.in_(PAID_STATUSES),
                )
            )
        )
        # The orders of captures in the window, whatever their age or status.
        refs = sorted({e.order_ref for e in captures} - {v.ref for v in orders})
        for chunk in _chunks(refs):
            orders += views(conn.execute(select(*order_cols).where(o.public_id.in_(chunk))))
        # Captures before the window of orders inside it: such an order is not unpaid.
        missing = sorted({v.ref for v in orders} - {e.order_ref for e in captures})
        for chunk in _chunks(missing):
            captures += entries(
                conn.execute(select(*entry_cols).where(is_capture, txn.order_ref.in_(chunk)))
            )
    return orders, captures


# --- the source -----------------------------------------------------------------------------


class PaymentsSource:
    """A collector source: funnel samples and reconciliation events every interval."""

    def __init__(
        self,
        store: Store,
        db_url: str,
        metrics: CollectorMetrics,
        *,
        interval_s: float,
        window_s: float,
        grace_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.db_url = db_url
        self.metrics = metrics
        self.interval_s = interval_s
        self.window_s = window_s
        self.grace_s = grace_s
        self.clock = clock
        self._next = 0.0
        self._engine: Engine | None = None

    def _db(self) -> Engine | None:
        """The shop database, or None while a SQLite file does not exist yet."""
        if self._engine is None:
            url = make_url(self.db_url)
            if url.get_backend_name() == "sqlite":
                # Never create an empty shop database before the shop does.
                if not url.database or not Path(url.database).exists():
                    return None
                args: dict[str, Any] = {"timeout": 5}
            elif url.get_backend_name() == "postgresql":
                # A pass never waits on the shop's database for long (a lock, a hung server).
                args = {"connect_timeout": 5, "options": "-c statement_timeout=30000"}
            else:
                args = {"connect_timeout": 5}
            self._engine = create_engine(url, pool_pre_ping=True, connect_args=args)
        return self._engine

    def collect(self) -> list[Batch]:
        """At most once per interval: the funnel samples and any new discrepancies."""
        now = self.clock()
        if now < self._next:
            return []
        self._next = now + self.interval_s
        samples: list[Sample] = []
        events: list[Event] = []
        try:
            samples = funnel_samples(self.store, now)
        except Exception:  # the store down or refusing: the next pass recomputes it all
            self.metrics.scrape_errors.labels(JOB).inc()
            log.exception("payments: cannot read payment events from the store")
        try:
            engine = self._db()
            if engine is not None:
                since = dt.datetime.fromtimestamp(now - self.window_s, dt.UTC)
                orders, captures = read_books(engine, since)
                settled = reconcile(orders, captures, settled_before=now - self.grace_s)
                events = [discrepancy_event(d, now) for d in settled]
        except (SQLAlchemyError, OSError) as exc:  # down, locked, no such table yet
            self.metrics.scrape_errors.labels(JOB).inc()
            log.warning("payments: cannot reconcile the shop database: %s", exc)
        except Exception:  # rows this code cannot read: counted, never the collector's end
            self.metrics.scrape_errors.labels(JOB).inc()
            log.exception("payments: cannot reconcile the shop database")
        if not events and not samples:
            return []
        return [Batch(events=tuple(events), samples=tuple(samples))]

    def behind(self) -> bool:
        """Never: each pass reads the whole window."""
        return False

    def close(self) -> None:
        """Close the shop database's connections."""
        if self._engine is not None:
            self._engine.dispose()


def payments_from(
    settings: Settings,
    store: Store,
    metrics: CollectorMetrics,
    *,
    clock: Callable[[], float] = time.time,
) -> PaymentsSource | None:
    """The payments source ``settings`` ask for, or None when it is off (interval 0)."""
    if settings.collect.payments_interval_s <= 0:
        return None
    return PaymentsSource(
        store,
        settings.shop_db_url,
        metrics,
        interval_s=settings.collect.payments_interval_s,
        window_s=settings.collect.payments_window_s,
        grace_s=settings.collect.payments_grace_s,
        clock=clock,
    )
