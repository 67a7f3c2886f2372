"""The shipped self-monitoring rules (config/rules/vigil.yaml) fire on the metrics they watch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import rule_engine

from alerting.rules import check_files, load_rules
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Sample, make_labels

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "config" / "rules" / "vigil.yaml"
T0 = 1_700_000_000.0
STEP = 15.0  # the collector's scrape interval in these tests
COLLECTOR = {"job": "vigil", "instance": "127.0.0.1:8091"}
ALERTER = {"job": "vigil", "instance": "127.0.0.1:8092"}


def healthy(store: MemoryStore, until: float, *, but: str = "") -> None:
    """Everything at rest (except metric ``but``): a collector and an alert process keeping up."""
    for name, labels in (
        ("vigil_collector_lag_bytes", {**COLLECTOR, "file": "/d/logs/access.log"}),
        ("vigil_collector_pending_items", COLLECTOR),
        ("vigil_collector_lost_bytes_total", {**COLLECTOR, "file": "/d/logs/access.log"}),
        ("vigil_collector_dead_letter_items_total", COLLECTOR),
        ("vigil_collector_spool_dropped_items_total", COLLECTOR),
        ("vigil_collector_spool_oldest_seconds", COLLECTOR),
        ("vigil_notifier_failures_total", {**ALERTER, "receiver": "slack"}),
        ("vigil_notifier_queue_items", {**ALERTER, "receiver": "slack"}),
        ("vigil_store_prune_errors_total", COLLECTOR),
    ):
        if name != but:
            put(store, name, labels, T0 - 900, until, lambda t: 0.0)


def put(
    store: MemoryStore,
    name: str,
    labels: dict[str, str],
    start: float,
    end: float,
    value: Callable[[float], float],
) -> None:
    """One sample every STEP seconds in [start, end], valued ``value(t)``."""
    steps = int((end - start) // STEP) + 1
    store.write(
        samples=[
            Sample(make_labels(name, **labels), start + i * STEP, value(start + i * STEP))
            for i in range(steps)
        ]
    )


def firing(tmp_path: Path, store: MemoryStore, times: list[float]) -> list[set[str]]:
    """The names of the firing alerts after evaluating at each of ``times``."""
    return rule_engine.firing(tmp_path, store, SHIPPED, times)


def test_vigil_rules_load_with_runbooks() -> None:
    assert check_files([str(SHIPPED)]) == []  # no errors, no warnings
    (group,) = load_rules([SHIPPED])
    names = {rule.name for rule in group.rules}
    assert names == {
        "VigilIngestLagging",
        "VigilLosingData",
        "VigilNotifierFailing",
        "VigilRetentionFailing",
        "VigilConfigReloadFailing",
    }
    for rule in group.rules:
        runbook = ROOT / rule.annotations["runbook_url"]
        text = runbook.read_text(encoding="utf-8")
        assert f"alert: {rule.name}" in text
        for section in ("## Symptoms", "## Impact", "## Diagnosis", "## Remedy"):
            assert section in text, f"{runbook.name} lacks {section}"


def test_vigil_rules_quiet_when_healthy(tmp_path: Path) -> None:
    store = MemoryStore()
    healthy(store, T0 + 900)
    assert firing(tmp_path, store, [T0 + 60 * m for m in range(0, 15)]) == [set()] * 15


def test_vigil_rules_ingest_lagging_fires_after_five_minutes(tmp_path: Path) -> None:
    store = MemoryStore()
    healthy(store, T0 + 900)
    labels = {**COLLECTOR, "file": "/d/logs/app.log"}
    put(store, "vigil_collector_lag_bytes", labels, T0, T0 + 900, lambda t: 64 << 20)
    states = firing(tmp_path, store, [T0 + 60, T0 + 240, T0 + 360])
    assert states == [set(), set(), {"VigilIngestLagging"}]  # pending from T0 + 60


def test_vigil_rules_ingest_lagging_on_a_full_sink(tmp_path: Path) -> None:
    store = MemoryStore()
    healthy(store, T0 + 900, but="vigil_collector_pending_items")
    put(store, "vigil_collector_pending_items", COLLECTOR, T0, T0 + 900, lambda t: 80_000)
    assert firing(tmp_path, store, [T0 + 30, T0 + 330]) == [set(), {"VigilIngestLagging"}]


def test_vigil_rules_ingest_lagging_on_an_old_spool(tmp_path: Path) -> None:
    store = MemoryStore()
    healthy(store, T0 + 1800, but="vigil_collector_spool_oldest_seconds")
    # The store went down at T0: the oldest spooled batch ages with the clock.
    put(store, "vigil_collector_spool_oldest_seconds", COLLECTOR, T0, T0 + 1800, lambda t: t - T0)
    states = firing(tmp_path, store, [T0 + 300, T0 + 660, T0 + 960])
    assert states == [set(), set(), {"VigilIngestLagging"}]  # over 600 s from T0 + 600, for 5m


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("vigil_collector_dead_letter_items_total", COLLECTOR),
        ("vigil_collector_lost_bytes_total", {**COLLECTOR, "file": "/d/logs/access.log"}),
        ("vigil_collector_spool_dropped_items_total", COLLECTOR),
    ],
)
def test_vigil_rules_losing_data_fires_at_once(
    tmp_path: Path, name: str, labels: dict[str, str]
) -> None:
    store = MemoryStore()
    healthy(store, T0 + 1800, but=name)
    put(store, name, labels, T0 - 900, T0 + 1800, lambda t: 0.0 if t < T0 + 120 else 3.0)
    states = firing(tmp_path, store, [T0 + 60, T0 + 150, T0 + 1500])
    # Fires on the next evaluation, resolves once ten minutes passed without more loss.
    assert states == [set(), {"VigilLosingData"}, set()]


def failures(t: float) -> float:
    """A delivery failing every 30 s from T0 on."""
    return max(0.0, (t - T0) // 30)


def test_vigil_rules_notifier_failing(tmp_path: Path) -> None:
    store = MemoryStore()
    healthy(store, T0 + 900, but="vigil_notifier_failures_total")
    labels = {**ALERTER, "receiver": "slack"}
    put(store, "vigil_notifier_failures_total", labels, T0 - 900, T0 + 900, failures)
    states = firing(tmp_path, store, [T0 + 60, T0 + 200, T0 + 400])
    assert states == [set(), set(), {"VigilNotifierFailing"}]  # pending from T0 + 60
    (alert,) = [
        a for a in AlertBook(AlertDB(tmp_path / "alerts.db")).alerts() if a.state == "firing"
    ]
    assert alert.labels["receiver"] == "slack"


def test_vigil_rules_retention_failing_after_two_failed_passes(tmp_path: Path) -> None:
    store = MemoryStore()
    healthy(store, T0 + 3600, but="vigil_store_prune_errors_total")

    def errors(t: float) -> float:  # a pass every 300 s fails from T0 + 300 on
        return max(0.0, (t - T0) // 300)

    put(store, "vigil_store_prune_errors_total", COLLECTOR, T0 - 900, T0 + 3600, errors)
    states = firing(tmp_path, store, [T0 + 60, T0 + 400, T0 + 700])
    assert states == [set(), set(), {"VigilRetentionFailing"}]  # one failure is not enough
