"""The collector loop: every ``collect.interval_s`` scrape all targets, tail all files, write.

Example::

    collector = Collector(settings, store)
    collector.run_once()          # one pass (tests, cron): True when all was stored
    collector.run(stop_event)     # until stop_event is set, then flush and return;
                                  # retention (store.retention_interval_s) runs beside it
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry

from collectors.checkpoints import CHECKPOINT_FILE, Checkpoints
from collectors.deferred import Deferred
from collectors.metrics import CollectorMetrics
from collectors.parsers import get_parser
from collectors.payments import payments_from
from collectors.pglog import pglog_from
from collectors.postgres import poller_from
from collectors.prometheus import Scraper, all_targets
from collectors.retention import RetentionWorker
from collectors.sink import Batch, Sink
from collectors.spool import Spool
from collectors.syslog import SyslogReceiver
from collectors.tail import Tailer
from siem.model import Store
from siem.retention import policy_from
from vigil.settings import Settings

log = logging.getLogger("vigil.collect")


DEAD_LETTER_DIR = "dead-letter"
SPOOL_DIR = "spool"


class Source(Protocol):
    """Anything the loop collects from: each call returns what is new since the last.

    A source may also have ``behind() -> bool``: True while it has more to read
    right now (a tailer that stopped at its read limit). The loop then calls
    ``collect()`` again at once instead of waiting for the next interval.
    Sources without it are never behind.
    """

    def collect(self) -> list[Batch]: ...


def can_wait(source: Source) -> bool:
    """True for a source that keeps its data until it is stored (a tailer: its log file).

    A source says so with a true ``keeps_data`` attribute; tailers do without one.
    Other sources (scrapes, syslog, the PostgreSQL poller) cannot wait: what is not
    collected now is gone, so they are read even while the sink's queue is full,
    and their batches go to the disk spool.
    """
    return bool(getattr(source, "keeps_data", isinstance(source, Tailer)))


def tune_gc() -> None:
    """Run the cyclic garbage collector less often in an ingesting process.

    Parsing allocates ~20 containers per log line and the sink holds up to
    ``max_pending`` events, so with the default threshold (700) the collector
    spends about half its CPU walking those live, acyclic objects. Reference
    counting frees them; the cyclic GC only has to run now and then.
    """
    gc.set_threshold(20_000, 20, 20)


def is_behind(source: Source) -> bool:
    """``source.behind()``, or False for a source that does not have it."""
    behind = getattr(source, "behind", None)
    return bool(behind()) if callable(behind) else False


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
        data_dir = Path(settings.data_dir).resolve()
        spool = None
        if settings.collect.spool_max_bytes > 0:
            # A spool left by an earlier run is replayed before anything newer.
            spool = Spool(
                data_dir / SPOOL_DIR,
                self.metrics,
                max_bytes=settings.collect.spool_max_bytes,
                clock=clock,
            )
        self.sink = Sink(
            store,
            self.metrics,
            dead_letter_dir=data_dir / DEAD_LETTER_DIR,
            spool=spool,
            spool_after=settings.collect.spool_after_items,
        )
        self.checkpoints = Checkpoints(data_dir / CHECKPOINT_FILE)
        # Retention runs beside collection in `run()`; `store.retention_interval_s: 0` is off.
        self.retention: RetentionWorker | None = None
        if settings.store.retention_interval_s > 0:
            self.retention = RetentionWorker(
                store,
                policy_from(settings.store),
                self.metrics,
                interval_s=settings.store.retention_interval_s,
                clock=clock,
            )
        if sources is None:
            sources = [
                Scraper(all_targets(settings), self.metrics, clock=clock, store=store),
                Tailer(
                    data_dir,
                    settings.collect.tail,
                    self.checkpoints,
                    self.metrics,
                    parsers={
                        pattern: get_parser(
                            name,
                            key=f"collect.files.{pattern}",
                            postgresql_prefix=settings.collect.postgresql_log_line_prefix,
                        )
                        for pattern, name in settings.collect.files.items()
                    },
                    clock=clock,
                ),
            ]
            # The shop's PostgreSQL (or collect.postgres), polled like a scrape target.
            poller = poller_from(settings, self.metrics, clock=clock)
            if poller is not None:
                sources.append(poller)
            # Payment funnel and reconciliation (collectors/payments.py).
            payments = payments_from(settings, store, self.metrics, clock=clock)
            if payments is not None:
                sources.append(payments)
            # PostgreSQL's server log, found by asking the server (collectors/pglog.py).
            server_log = pglog_from(settings, self.checkpoints, self.metrics, clock=clock)
            if server_log is not None:
                sources.append(server_log)
            if settings.collect.syslog_udp:
                address = settings.collect.syslog_udp
                # A port taken is a warning and a retry, not the collector's end.
                sources.append(
                    Deferred(
                        "syslog",
                        lambda: SyslogReceiver(address, self.metrics, clock=clock),
                        self.metrics,
                    )
                )
        self.sources = list(sources)

    def close(self) -> None:
        """Release what sources hold (the syslog receiver's socket)."""
        for source in self.sources:
            close = getattr(source, "close", None)
            if callable(close):
                close()

    def collect(self, sources: Sequence[Source] | None = None) -> int:
        """Read every source (or ``sources``) into the sink, unless the sink is full.

        When the sink is full and spools, only the sources that cannot wait
        are read (their batches go to the spool). Returns how many batches were queued.
        """
        chosen = self.sources if sources is None else sources
        if not self.sink.has_room():
            self.metrics.backpressure.inc()
            log.warning(
                "sink queue full; skipping collection until the store accepts writes",
                extra={"labels.pending_items": self.sink.pending_items()},
            )
            if not self.sink.spooling:
                return 0
            chosen = [source for source in chosen if not can_wait(source)]
        queued = 0
        for source in chosen:
            for batch in source.collect():
                self.sink.submit(batch)
                queued += 1
        return queued

    def catch_up(self, stop: threading.Event, deadline: float) -> None:
        """Until ``deadline`` (monotonic): re-read the sources that are behind, and write.

        Only sources reporting ``behind()`` are read again (the scraper never is:
        it scrapes once per interval), and only while the sink has room, so the
        memory used stays bounded by the sink's ``max_pending``.
        """
        while not stop.is_set() and time.monotonic() < deadline and self.sink.has_room():
            behind = [source for source in self.sources if is_behind(source)]
            # A source behind that yields nothing (a writer mid-line) must not spin.
            if not behind or not self.collect(behind):
                return
            self.sink.flush(max(0.0, deadline - time.monotonic()), wait=stop.wait)

    def run_once(self, flush_timeout_s: float = 30.0) -> bool:
        """One pass: collect, then write; True when everything collected is stored."""
        self.collect()
        return self.sink.flush(flush_timeout_s)

    def run(self, stop: threading.Event, shutdown_timeout_s: float = 10.0) -> bool:
        """Pass every ``interval_s`` until ``stop`` is set; then flush what is queued.

        Returns True when nothing was left unwritten. Unwritten log lines are not
        lost (their checkpoints were not committed, so they are read again on the
        next start); unwritten scrapes and syslog events go to the spool (when it
        is on) and are replayed on the next start.
        """
        log.info("collector started", extra={"labels.interval_s": self.interval_s})
        if self.retention is not None:
            self.retention.start(stop)
        while not stop.is_set():
            started = time.monotonic()
            deadline = started + self.interval_s
            self.collect()
            self.sink.flush(max(0.0, deadline - time.monotonic()), wait=stop.wait)
            self.catch_up(stop, deadline)
            stop.wait(max(0.0, deadline - time.monotonic()))
        if self.retention is not None:
            self.retention.stop()
        done = self.sink.flush(shutdown_timeout_s)
        if not done:
            self.sink.spool_unwritten()  # replayed on the next start
        if done:
            log.info("collector stopped; everything collected was stored")
        else:
            log.error(
                "collector stopped with unwritten data",
                extra={"labels.pending_items": self.sink.pending_items()},
            )
        return done
