"""The collector's own metrics, exposed on its ``/metrics``.

Every metric is registered on the ``registry`` given, so tests build a private
``CollectorRegistry`` and read values with ``registry.get_sample_value(...)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class CollectorMetrics:
    """Counters and gauges of one collector process."""

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._newest_event: float | None = None
        self.events = Counter(
            "vigil_collector_events_total", "Events written to the store", registry=registry
        )
        self.duplicate_events = Counter(
            "vigil_collector_duplicate_events_total",
            "Events the store already had (re-delivered after a restart)",
            registry=registry,
        )
        self.samples = Counter(
            "vigil_collector_samples_total", "Samples written to the store", registry=registry
        )
        self.parse_errors = Counter(
            "vigil_collector_parse_errors_total",
            "Log lines that were not ECS JSON (stored as vigil.collector.error events)",
            registry=registry,
        )
        self.scrape_errors = Counter(
            "vigil_collector_scrape_errors_total",
            "Scrapes that failed (target down, HTTP error, unparsable exposition)",
            ["job"],
            registry=registry,
        )
        self.write_errors = Counter(
            "vigil_collector_write_errors_total",
            "Store writes that failed and will be retried",
            registry=registry,
        )
        self.metadata_dropped = Counter(
            "vigil_collector_metadata_dropped_total",
            "Metric families whose # TYPE/# HELP/# UNIT were not kept: over the scraper's"
            " limit of families",
            registry=registry,
        )
        self.dead_letter_items = Counter(
            "vigil_collector_dead_letter_items_total",
            "Events and samples the store rejected one by one, written to the dead-letter file",
            registry=registry,
        )
        self.dead_letter_bytes = Gauge(
            "vigil_collector_dead_letter_bytes",
            "Bytes in the collector's dead-letter files (data/dead-letter/collector-*.jsonl)",
            registry=registry,
        )
        self.backpressure = Counter(
            "vigil_collector_backpressure_skips_total",
            "Passes that collected nothing because the sink queue was full",
            registry=registry,
        )
        self.lost_bytes = Counter(
            "vigil_collector_lost_bytes_total",
            "Log bytes the tailer saw but could not read: a rotated generation deleted"
            " or overwritten (copytruncate) before it got there",
            ["file"],
            registry=registry,
        )
        self.multiline_cuts = Counter(
            "vigil_collector_multiline_cut_total",
            "Multiline events (tracebacks, PostgreSQL statements) cut short by the group bounds"
            " (max_lines, max_bytes); the rest went on as the events after them, the cut one"
            " tagged multiline_cut",
            ["file"],
            registry=registry,
        )
        self.lag_bytes = Gauge(
            "vigil_collector_lag_bytes",
            "Bytes of a tailed log on disk not yet read (current file and unread generations)",
            ["file"],
            registry=registry,
        )
        self.syslog_datagrams = Counter(
            "vigil_collector_syslog_datagrams_total",
            "Syslog datagrams by result: received, parsed, failed (stored as error events),"
            " dropped (the receive queue was full)",
            ["result"],
            registry=registry,
        )
        self.source_up = Gauge(
            "vigil_collector_source_up",
            "1 while an optional source works (syslog: listening; postgresql_log: the server"
            " log found and readable), 0 while it does not (the collector retries)",
            ["source"],
            registry=registry,
        )
        self.source_failures = Counter(
            "vigil_collector_source_failures_total",
            "Attempts to start an optional source that failed (see the collector's warning)",
            ["source"],
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "vigil_collector_spool_bytes",
            "Bytes of batches spooled to disk (data/spool) while the store refused writes",
            registry=registry,
        )
        self.spool_oldest = Gauge(
            "vigil_collector_spool_oldest_seconds",
            "Now minus when the oldest batch still in the spool was spooled (0 when empty)",
            registry=registry,
        )
        self.spool_dropped_items = Counter(
            "vigil_collector_spool_dropped_items_total",
            "Events and samples dropped because the spool was full (collect.spool_max_bytes)"
            " or could not be written",
            registry=registry,
        )
        self.spool_corrupt_records = Counter(
            "vigil_collector_spool_corrupt_records_total",
            "Spool records skipped on replay: cut short by a crash or failing their checksum",
            registry=registry,
        )
        self.pending = Gauge(
            "vigil_collector_pending_items",
            "Events and samples waiting to be written",
            registry=registry,
        )
        self.store_pruned_events = Counter(
            "vigil_store_pruned_events_total",
            "Events removed by retention: reason age (older than store.retention)"
            " or size (store.max_bytes reached)",
            ["dataset", "reason"],
            registry=registry,
        )
        self.store_pruned_samples = Counter(
            "vigil_store_pruned_samples_total",
            "Samples removed by retention (store.samples_retention, store.max_bytes)",
            registry=registry,
        )
        self.store_prune_errors = Counter(
            "vigil_store_prune_errors_total",
            "Retention passes that failed (retried at the next pass)",
            registry=registry,
        )
        self.store_last_prune = Gauge(
            "vigil_store_last_prune_timestamp_seconds",
            "When the last retention prune succeeded (0 before the first)",
            registry=registry,
        )
        self.store_bytes = Gauge(
            "vigil_store_bytes",
            "Bytes of each dataset's events (SQLite, memory: estimated; Elasticsearch: index size)",
            ["dataset"],
            registry=registry,
        )
        self.store_events = Gauge(
            "vigil_store_events", "Events stored per dataset", ["dataset"], registry=registry
        )
        self.store_oldest_event = Gauge(
            "vigil_store_oldest_event_timestamp_seconds",
            "Timestamp of the oldest event stored per dataset",
            ["dataset"],
            registry=registry,
        )
        self.store_samples = Gauge("vigil_store_samples", "Samples stored", registry=registry)
        self.store_size_bytes = Gauge(
            "vigil_store_size_bytes",
            "Bytes the whole store takes (SQLite: file and WAL; Elasticsearch: its indices)",
            registry=registry,
        )
        self.store_max_bytes = Gauge(
            "vigil_store_max_bytes", "The size cap, store.max_bytes (0: none)", registry=registry
        )
        self.lag = Gauge(
            "vigil_collector_lag_seconds",
            "Now minus the timestamp of the newest event written (0 before the first)",
            registry=registry,
        )
        self.lag.set_function(self._lag)

    def observe_event_time(self, timestamp: float) -> None:
        """Remember the newest event timestamp written, for the lag gauge."""
        if self._newest_event is None or timestamp > self._newest_event:
            self._newest_event = timestamp

    def _lag(self) -> float:
        if self._newest_event is None:
            return 0.0
        return max(0.0, self._clock() - self._newest_event)
