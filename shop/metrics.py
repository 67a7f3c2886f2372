"""The shop's Prometheus metrics.

Under gunicorn each worker is its own process, so ``/metrics`` uses
prometheus-client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set
(``vigil shop serve`` sets it). Values that live in the database (mail queue
depth) or in settings (the release) are read at scrape time by
``ShopStateCollector`` so every worker reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "shop_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "shop_http_request_duration_seconds",
    "HTTP request duration by route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "shop_http_requests_in_progress",
    "HTTP requests being served",
    ["method"],
    multiprocess_mode="livesum",
)
ORDERS = Counter(
    "shop_orders", "Orders entering a status, by status and currency", ["status", "currency"]
)
REVENUE = Counter("shop_revenue", "Revenue of paid orders in the order currency", ["currency"])
REFUNDS = Counter("shop_refunds", "Refunded amount in the order currency", ["currency"])
CHECKOUTS = Counter("shop_checkouts", "Checkout attempts by outcome", ["outcome"])
PAYMENTS = Counter("shop_payments", "Payment authorisations", ["gateway", "outcome"])
PAYMENT_DURATION = Histogram(
    "shop_payment_duration_seconds",
    "Payment authorisation duration",
    ["gateway"],
    buckets=LATENCY_BUCKETS,
)
FRAUD_DECLINES = Counter("shop_fraud_declines", "Payments declined by the fraud check", ["reason"])
LOGINS = Counter("shop_logins", "Login attempts", ["outcome"])
LOGIN_THROTTLED = Counter(
    "shop_login_throttled",
    "Logins refused with 429 by the failed-login limit, by the limit hit",
    ["scope"],
)
LOG_PANS_MASKED = Counter(
    "shop_log_pans_masked",
    "Card-number-like digit runs masked before a log line was written",
    ["dataset"],
)
COUPON_REDEMPTIONS = Counter("shop_coupon_redemptions", "Coupons redeemed", ["coupon"])
EMAILS_SENT = Counter("shop_emails_sent", "Order-confirmation e-mails sent")
EMAIL_DEFERRALS = Counter(
    "shop_email_deferrals", "E-mails deferred because the daily cap was reached"
)
EMAIL_FAILURES = Counter("shop_email_failures", "E-mail send attempts that failed")
STOCKOUTS = Counter("shop_stockouts", "Requests refused because stock ran out", ["sku"])
DB_QUERY_DURATION = Histogram(
    "shop_db_query_duration_seconds",
    "Database statement duration",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

DB_ERRORS = Counter(
    "shop_db_errors",
    "Database statements that failed with an operational error, by kind: busy (SQLite's "
    "'database is locked': another connection held the lock past the busy timeout), "
    "locked, readonly, ioerr, full, other",
    ["kind"],
)
for _kind in ("busy", "locked"):  # at 0 from the start: the first error is an increase
    DB_ERRORS.labels(_kind)


class ShopStateCollector:
    """Scrape-time gauges: release info, mail queue depth and the SQLite files' sizes.

    ``queue_depth`` is called on every scrape; it returns counts by status.
    ``sqlite_path`` is the shop's SQLite database (None on PostgreSQL): its size
    and its write-ahead log's, read from the files, so every worker reports the same.
    """

    def __init__(
        self,
        release: str,
        queue_depth: Callable[[], dict[str, int]],
        sqlite_path: Path | None = None,
    ) -> None:
        self.release = release
        self.queue_depth = queue_depth
        self.sqlite_path = sqlite_path

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "shop_release_info", "Release this instance runs", labels=["release"]
        )
        info.add_metric([self.release], 1)
        yield info
        depth = GaugeMetricFamily(
            "shop_email_queue_depth", "E-mails waiting to be sent", labels=["status"]
        )
        for status, count in sorted(self.queue_depth().items()):
            depth.add_metric([status], count)
        yield depth
        if self.sqlite_path is not None:
            for suffix, name, what in (
                ("", "shop_sqlite_db_bytes", "Size of the shop's SQLite database file"),
                ("-wal", "shop_sqlite_wal_bytes", "Size of its write-ahead log (0 when absent)"),
            ):
                yield GaugeMetricFamily(name, what, value=_file_size(f"{self.sqlite_path}{suffix}"))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def exposition(state: ShopStateCollector) -> tuple[bytes, str]:
    """The text exposition of this process, or of all workers in multiprocess mode."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(state)
    return body + generate_latest(registry), CONTENT_TYPE_LATEST
