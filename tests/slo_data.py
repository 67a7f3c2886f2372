"""Generated shop traffic for the SLO pages' tests, run through the real rules.

``seed_slo_store`` writes two hours of checkout counters and latency buckets ending
at ``now`` into a store and evaluates the rules generated from config/slos.yaml at
every minute with the real ``AlertEngine``, so the store holds what ``vigil alert``
would have recorded: the error ratios of every window, and the ``vigil.alert``
events of the alerts that fired.

The rates are constant, so every window has the same ratio:

* checkout-availability: 10% of checkouts fail (20x its 0.5% budget): both burn-rate
  alerts fire, and the budget remaining over the window is 1 - 20 = -1900%;
* checkout-latency: 0.5% of checkouts are slower than 1 s (0.5x its 1% budget):
  no alert, 50% of the budget remains.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.promql import Engine
from alerting.slo import load_slos, rule_groups
from alerting.state import AlertBook, AlertDB
from siem.model import Sample, Store, make_labels

SHIPPED_SLOS = Path(__file__).resolve().parents[1] / "config" / "slos.yaml"
MINUTES = 120
PER_MINUTE = 1000
AVAILABILITY_ERRORS = 0.10
LATENCY_SLOW = 0.005


def _samples(t: float, minute: int) -> list[Sample]:
    shop = {"job": "shop", "instance": "127.0.0.1:8001", "method": "POST"}
    checkout = {**shop, "route": "/api/checkout"}
    total = PER_MINUTE * minute
    errors = total * AVAILABILITY_ERRORS
    fast = total * (1 - LATENCY_SLOW)
    return [
        Sample(
            make_labels("shop_http_requests_total", status="201", **checkout), t, total - errors
        ),
        Sample(make_labels("shop_http_requests_total", status="502", **checkout), t, errors),
        Sample(
            make_labels("shop_http_request_duration_seconds_bucket", le="0.5", **checkout), t, fast
        ),
        Sample(
            make_labels("shop_http_request_duration_seconds_bucket", le="1.0", **checkout), t, fast
        ),
        Sample(
            make_labels("shop_http_request_duration_seconds_bucket", le="2.5", **checkout), t, fast
        ),
        Sample(
            make_labels("shop_http_request_duration_seconds_bucket", le="+Inf", **checkout),
            t,
            total,
        ),
        Sample(make_labels("shop_http_request_duration_seconds_count", **checkout), t, total),
    ]


def seed_slo_store(store: Store, now: float) -> None:
    """Two hours of traffic ending at ``now``, and the SLO rules evaluated every minute."""
    groups = rule_groups(load_slos([SHIPPED_SLOS]), str(SHIPPED_SLOS))
    db = AlertDB(":memory:")
    engine = AlertEngine(
        store, groups, AlertBook(db), [], evaluator=Engine(store), registry=CollectorRegistry()
    )
    try:
        for minute in range(MINUTES + 1):
            t = now - (MINUTES - minute) * 60
            store.write(samples=_samples(t, minute))
            for group in groups:
                engine.evaluate_group(group, t)
    finally:
        db.close()
