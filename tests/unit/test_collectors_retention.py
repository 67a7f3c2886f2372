"""The collector's retention pass: prunes in the background, counts what it removed,
never stops the collector (errors are logged and counted), stops with it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until
from prometheus_client import CollectorRegistry

from collectors.loop import Collector
from collectors.metrics import CollectorMetrics
from collectors.retention import RetentionWorker
from siem import SiemError
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Sample, make_labels
from siem.retention import PruneResult, RetentionPolicy
from siem.sqlite import SqliteStore
from vigil.settings import from_mapping

NOW = 1_700_000_000.0
DAY = 86400.0


def event(n: int, dataset: str, ts: float, **doc: object) -> Event:
    return Event(f"e{n}", ts, dataset, {"event": {"dataset": dataset}, "n": n, **doc})


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_retention_pass_prunes_and_fills_the_store_metrics(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    store.write(
        events=[event(n, "shop.access", NOW - n * DAY) for n in range(10)]
        + [event(100 + n, "shop.app", NOW - n * DAY) for n in range(3)],
        samples=[Sample(make_labels("up"), NOW - n * DAY, 1.0) for n in range(20)],
    )
    registry = CollectorRegistry()
    policy = RetentionPolicy({"default": 30 * DAY, "shop.access": 2.5 * DAY}, 15 * DAY)
    worker = RetentionWorker(
        store, policy, CollectorMetrics(registry), interval_s=60, clock=lambda: NOW
    )
    try:
        result = worker.run_once()
    finally:
        store.close()
    assert result is not None and dict(result.events) == {"shop.access": 7}
    pruned = "vigil_store_pruned_events_total"
    assert value(registry, pruned, dataset="shop.access", reason="age") == 7
    assert value(registry, pruned, dataset="shop.app", reason="age") == 0
    assert value(registry, "vigil_store_pruned_samples_total") == 4  # 16..19 days old
    assert value(registry, "vigil_store_last_prune_timestamp_seconds") == NOW
    assert value(registry, "vigil_store_events", dataset="shop.access") == 3
    assert value(registry, "vigil_store_events", dataset="shop.app") == 3
    oldest = value(registry, "vigil_store_oldest_event_timestamp_seconds", dataset="shop.access")
    assert oldest == NOW - 2 * DAY
    assert value(registry, "vigil_store_bytes", dataset="shop.app") > 0
    assert value(registry, "vigil_store_samples") == 16
    assert value(registry, "vigil_store_size_bytes") > 0
    assert value(registry, "vigil_store_prune_errors_total") == 0


def test_retention_pass_counts_the_size_caps_removals_apart() -> None:
    store = MemoryStore()
    store.write(events=[event(n, "shop.app", NOW - 1000 + n, pad="x" * 500) for n in range(100)])
    registry = CollectorRegistry()
    policy = RetentionPolicy({"default": 0}, 0, max_bytes=store.used_bytes() // 4, pause_s=0)
    worker = RetentionWorker(store, policy, CollectorMetrics(registry), interval_s=60)
    result = worker.run_once()
    assert result is not None and result.size_cap_events == result.total_events > 50
    pruned = "vigil_store_pruned_events_total"
    assert value(registry, pruned, dataset="shop.app", reason="size") == result.total_events
    assert value(registry, pruned, dataset="shop.app", reason="age") == 0
    assert value(registry, "vigil_store_max_bytes") == policy.max_bytes


class FlakyStore(MemoryStore):
    """A store whose prune fails while ``down`` is set (a locked or unreachable store)."""

    down = True

    def prune(self, policy: RetentionPolicy, now: float, *, dry_run: bool = False) -> PruneResult:
        if self.down:
            raise SiemError("siem.db: database is locked")
        return super().prune(policy, now, dry_run=dry_run)


def test_retention_pass_failure_is_logged_and_counted_then_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    store.write(events=[event(1, "shop.app", NOW - 40 * DAY)])
    registry = CollectorRegistry()
    worker = RetentionWorker(
        store, RetentionPolicy(), CollectorMetrics(registry), interval_s=60, clock=lambda: NOW
    )
    assert worker.run_once() is None
    assert value(registry, "vigil_store_prune_errors_total") == 1
    assert value(registry, "vigil_store_last_prune_timestamp_seconds") == 0
    assert "retention pass failed" in caplog.text and "database is locked" in caplog.text
    store.down = False
    assert worker.run_once() is not None
    assert store.search(EventQuery()) == []
    assert value(registry, "vigil_store_last_prune_timestamp_seconds") == NOW


def test_collector_runs_retention_in_the_background_and_stops_it(tmp_path: Path) -> None:
    settings = from_mapping(
        {
            "data_dir": str(tmp_path),
            "store": {"retention": {"default": "1d"}, "retention_interval_s": 0.05},
            "collect": {"scrape": {}, "scrape_stack": False, "interval_s": 0.05},
        }
    )
    store = MemoryStore()
    old = time.time() - 2 * DAY
    store.write(events=[event(n, "shop.app", old) for n in range(3)])
    registry = CollectorRegistry()
    collector = Collector(settings, store, registry=registry, sources=[])
    stop = threading.Event()
    runner = threading.Thread(target=collector.run, args=(stop,))
    runner.start()
    try:
        wait_until(
            "a retention pass",
            lambda: value(registry, "vigil_store_last_prune_timestamp_seconds") > 0,
            timeout=10,
        )
        assert store.search(EventQuery()) == []
        pruned = value(
            registry, "vigil_store_pruned_events_total", dataset="shop.app", reason="age"
        )
        assert pruned == 3
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert collector.retention is not None and not collector.retention._thread.is_alive()  # type: ignore[union-attr]


def test_stopping_cancels_a_running_pass_between_chunks() -> None:
    store = MemoryStore()
    store.write(events=[event(n, "shop.app", NOW - DAY - n) for n in range(50)])
    policy = RetentionPolicy({"default": 3600}, chunk=1, pause_s=0.05)  # 50 chunks: 2.5 s
    worker = RetentionWorker(
        store, policy, CollectorMetrics(CollectorRegistry()), interval_s=0.01, clock=lambda: NOW
    )
    stop = threading.Event()
    worker.start(stop)
    wait_until("the pass to start", lambda: len(store.search(EventQuery(limit=100))) < 50, 10)
    stop.set()
    worker.stop()
    assert worker._thread is not None and not worker._thread.is_alive()
    assert len(store.search(EventQuery(limit=100))) > 10  # it stopped long before the end


def test_retention_interval_zero_turns_the_pass_off(tmp_path: Path) -> None:
    settings = from_mapping({"data_dir": str(tmp_path), "store": {"retention_interval_s": 0}})
    collector = Collector(settings, MemoryStore(), registry=CollectorRegistry(), sources=[])
    assert collector.retention is None


def test_retention_pass_drops_the_gauges_of_a_dataset_pruned_away() -> None:
    store = MemoryStore()
    store.write(events=[event(1, "old.app", NOW - 40 * DAY), event(2, "shop.app", NOW)])
    registry = CollectorRegistry()
    policy = RetentionPolicy({"default": 50 * DAY}, pause_s=0)
    worker = RetentionWorker(
        store, policy, CollectorMetrics(registry), interval_s=60, clock=lambda: NOW
    )
    worker.run_once()
    assert value(registry, "vigil_store_events", dataset="old.app") == 1
    worker.policy = RetentionPolicy({"default": 30 * DAY}, pause_s=0)
    worker.run_once()
    assert registry.get_sample_value("vigil_store_events", {"dataset": "old.app"}) is None
    assert registry.get_sample_value("vigil_store_bytes", {"dataset": "old.app"}) is None
    assert value(registry, "vigil_store_events", dataset="shop.app") == 1
