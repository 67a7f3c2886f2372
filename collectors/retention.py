"""The collector's retention pass: ``store.prune(policy, now)`` every
``store.retention_interval_s`` in a thread of its own, then ``store.stats()`` into gauges.

A pass never blocks ingestion for long (the store prunes in chunks and pauses between
them, see ``siem.retention``) and never stops the collector: a failure is logged,
counted in ``vigil_store_prune_errors_total`` and retried at the next pass. Stopping
the collector cancels a running pass between two chunks.

    worker = RetentionWorker(store, policy_from(settings.store), metrics, interval_s=300)
    worker.start(stop_event)
    ...
    worker.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from collectors.metrics import CollectorMetrics
from siem import limits
from siem.model import Store
from siem.retention import PruneResult, RetentionPolicy, StoreStats

log = logging.getLogger("vigil.collect")

STOP_TIMEOUT_S = 10.0
"""How long stopping waits for a cancelled pass to finish its current chunk."""


class RetentionWorker:
    """Applies ``policy`` to ``store`` every ``interval_s`` seconds, in the background."""

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        metrics: CollectorMetrics,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.interval_s = interval_s
        self._clock = clock
        self._budget = limits.QueryBudget(max_samples=0, timeout_s=0)
        self._thread: threading.Thread | None = None
        self._datasets: set[str] = set()  # the dataset labels of the store gauges
        metrics.store_max_bytes.set(policy.max_bytes)

    def run_once(self) -> PruneResult | None:
        """One pass: prune, then refresh the store gauges. None when it failed or was
        cancelled (a failure is logged and counted; what was pruned before it is counted)."""
        started = time.monotonic()
        result: PruneResult | None = None
        try:
            with self._budget.active():
                self._budget.stage = "retention"
                result = self.store.prune(self.policy, self._clock())
                self._record_prune(result)
                self._record_stats(self.store.stats())
        except limits.QueryCancelledError:
            log.info("retention pass cancelled: the collector is stopping")
            return None
        except Exception as exc:  # never let retention stop the collector
            self.metrics.store_prune_errors.inc()
            log.error(
                "retention pass failed (retried in %.0f s): %s",
                self.interval_s,
                exc,
                extra={"error.message": str(exc), "error.type": type(exc).__name__},
            )
            return None
        if result.total_events or result.samples:
            log.info(
                "retention removed %d events and %d samples in %.1f s",
                result.total_events,
                result.samples,
                time.monotonic() - started,
                extra={
                    "labels.size_cap_events": result.size_cap_events,
                    "labels.reclaimed_bytes": result.reclaimed_bytes,
                },
            )
        return result

    def _record_prune(self, result: PruneResult) -> None:
        m = self.metrics
        for dataset, n in result.events.items():
            by_size = result.size_cap[dataset]
            if n > by_size:
                m.store_pruned_events.labels(dataset=dataset, reason="age").inc(n - by_size)
            if by_size:
                m.store_pruned_events.labels(dataset=dataset, reason="size").inc(by_size)
        m.store_pruned_samples.inc(result.samples)
        m.store_last_prune.set(self._clock())

    def _record_stats(self, stats: StoreStats) -> None:
        m = self.metrics
        per_dataset = (m.store_bytes, m.store_events, m.store_oldest_event)
        now = {d.dataset for d in stats.datasets}
        for gone in self._datasets - now:  # a dataset pruned away entirely
            for gauge in per_dataset:
                gauge.remove(gone)
        self._datasets = now
        for d in stats.datasets:
            m.store_bytes.labels(dataset=d.dataset).set(d.bytes)
            m.store_events.labels(dataset=d.dataset).set(d.events)
            m.store_oldest_event.labels(dataset=d.dataset).set(d.oldest or 0.0)
        m.store_size_bytes.set(stats.total_bytes)
        m.store_samples.set(stats.samples)

    def run(self, stop: threading.Event) -> None:
        """A pass every ``interval_s`` until ``stop`` is set, the first after one interval
        (a starting collector first replays its spool and catches up on logs)."""
        while not stop.wait(self.interval_s):
            self.run_once()

    def start(self, stop: threading.Event) -> None:
        """Run in a daemon thread until ``stop`` is set (then call ``stop()``)."""
        self._thread = threading.Thread(
            target=self.run, args=(stop,), name="vigil-retention", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Cancel a running pass (it ends after its current chunk) and wait for the thread."""
        self._budget.cancel()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
