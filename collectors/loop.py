"""The collector loop: every ``collect.interval_s`` scrape all targets, tail all files, write.

Example::

    collector = Collector(settings, store)
    collector.run_once()          # one pass (tests, cron): True when all was stored
    collector.run(stop_event)     # until stop_event is set, then flush and return
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry

from collectors.metrics import CollectorMetrics
from collectors.prometheus import Scraper, all_targets
from collectors.sink import Batch, Sink
from collectors.tail import CHECKPOINT_FILE, Checkpoints, Tailer
from siem.model import Store
from vigil.settings import Settings

log = logging.getLogger("vigil.collect")


class Source(Protocol):
    """Anything the loop collects from: each call returns what is new since the last."""

    def collect(self) -> list[Batch]: ...


class Collector:
    """Sources → sink → ``store``, with the collector's metrics on ``registry``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        registry: CollectorRegistry = REGISTRY,
        sources: Sequence[Source] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = settings.collect.interval_s
        self.metrics = CollectorMetrics(registry, clock)
        self.sink = Sink(store, self.metrics)
        data_dir = Path(settings.data_dir).resolve()
        self.checkpoints = Checkpoints(data_dir / CHECKPOINT_FILE)
        if sources is None:
            sources = [
                Scraper(all_targets(settings), self.metrics, clock=clock),
                Tailer(
                    data_dir, settings.collect.tail, self.checkpoints, self.metrics, clock=clock
                ),
            ]
        self.sources = list(sources)

    def collect(self) -> None:
        """Read every source into the sink, unless the sink is full (then read nothing)."""
        if not self.sink.has_room():
            self.metrics.backpressure.inc()
            log.warning(
                "sink queue full; skipping collection until the store accepts writes",
                extra={"labels.pending_items": self.sink.pending_items()},
            )
            return
        for source in self.sources:
            for batch in source.collect():
                self.sink.submit(batch)

    def run_once(self, flush_timeout_s: float = 30.0) -> bool:
        """One pass: collect, then write; True when everything collected is stored."""
        self.collect()
        return self.sink.flush(flush_timeout_s)

    def run(self, stop: threading.Event, shutdown_timeout_s: float = 10.0) -> bool:
        """Pass every ``interval_s`` until ``stop`` is set; then flush what is queued.

        Returns True when nothing was left unwritten. Unwritten log lines are not
        lost (their checkpoints were not committed, so they are read again on the
        next start); unwritten samples are, and are reported in the log.
        """
        log.info("collector started", extra={"labels.interval_s": self.interval_s})
        while not stop.is_set():
            started = time.monotonic()
            self.collect()
            remaining = self.interval_s - (time.monotonic() - started)
            self.sink.flush(max(0.0, remaining), wait=stop.wait)
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        done = self.sink.flush(shutdown_timeout_s)
        if done:
            log.info("collector stopped; everything collected was stored")
        else:
            log.error(
                "collector stopped with unwritten data",
                extra={"labels.pending_items": self.sink.pending_items()},
            )
        return done
