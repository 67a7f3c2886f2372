"""Per-receiver outboxes: each notifier gets a bounded queue and its own worker thread.

The evaluation loop only *offers* fingerprints (``Outbox.offer`` never blocks);
the worker reads the alert as it is *now* from the ``AlertBook``, tells its
receiver, and records the outcome there (``alerts.db``). Because the book is
the durable record of what each receiver has been told, a restart re-offers
whatever was still undelivered and never repeats what was (Slack's message
``ts`` is saved the moment the post succeeds). A receiver that fails backs off
on its own (exponential with jitter, capped) while the others and the
evaluation loop go on. Example::

    outboxes = Outboxes(book, [slack, webhook], registry=registry)
    outboxes.start()
    outboxes.offer_pending()  # after every evaluation pass
    outboxes.stop(timeout=10)
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from alerting.notify.base import Delivery, Notifier
from alerting.state import Alert, AlertBook

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_BACKOFF_S = 1.0
DEFAULT_MAX_BACKOFF_S = 30.0


def absolute_url(url: str, base: str) -> str:
    """``runbooks/x.md`` under ``base``; absolute URLs unchanged."""
    if not url or urllib.parse.urlparse(url).scheme or not base:
        return url
    return urllib.parse.urljoin(base if base.endswith("/") else base + "/", url)


def backoff_delay(base_s: float, failures: int, max_s: float) -> float:
    """The wait after ``failures`` failures in a row: exponential, 25% jitter, capped."""
    base = base_s * 2 ** min(failures - 1, 16)
    return float(min(base * (1 + random.random() * 0.25), max_s))


class OutboxMetrics:
    """The queue and delivery metrics every receiver's worker reports to."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "vigil_alert_notifications",
            "Notification attempts by receiver and outcome (success, failure, deferred by a"
            " rate limit)",
            ["receiver", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "vigil_notifier_failures",
            "Alert deliveries a receiver failed (retried by its worker with backoff)",
            ["receiver"],
            registry=registry,
        )
        self.queue_items = Gauge(
            "vigil_notifier_queue_items",
            "Alerts waiting in a receiver's queue",
            ["receiver"],
            registry=registry,
        )
        self.dropped = Counter(
            "vigil_notifier_dropped",
            "Offers refused because the receiver's queue was full; the alert stays"
            " undelivered in alerts.db and is offered again on a later pass",
            ["receiver"],
            registry=registry,
        )


class QueueWorker:
    """A bounded, de-duplicated queue of keys and the thread that delivers them.

    ``offer`` never blocks; the worker takes everything queued, calls ``_deliver``
    (which subclasses implement, returning True when all went out) and on failure
    waits with exponential back-off before it tries again. ``deliver_now`` makes
    one attempt in the caller's thread (``--once`` and tests)."""

    what = "item(s)"
    """How the log names what is queued."""

    def __init__(
        self,
        name: str,
        metrics: OutboxMetrics,
        *,
        max_items: int = DEFAULT_QUEUE_SIZE,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.max_items = max(1, max_items)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Insertion-ordered and de-duplicated: offering the same key every pass
        # while it waits does not grow the queue.
        self._queue: dict[str, None] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._failures_in_a_row = 0
        self._refusing = False
        self._thread: threading.Thread | None = None
        self.metrics.queue_items.labels(self.name).set(0)

    def offer(self, keys: Sequence[str]) -> int:
        """Queue what is not queued yet; never blocks. Returns how many were refused (full)."""
        refused = 0
        with self._cond:
            for key in keys:
                if key in self._queue:
                    continue
                if len(self._queue) >= self.max_items:
                    refused += 1
                    continue
                self._queue[key] = None
            self.metrics.queue_items.labels(self.name).set(len(self._queue))
            self._cond.notify()
        if refused:
            self.metrics.dropped.labels(self.name).inc(refused)
            # Once per episode, not every pass: the counter keeps the full tally.
            level = logging.DEBUG if self._refusing else logging.WARNING
            log.log(
                level,
                "notifier %s: queue full (%d), %d %s wait in alerts.db for a later pass",
                self.name,
                self.max_items,
                refused,
                self.what,
            )
        self._refusing = refused > 0
        return refused

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        """Run the worker thread until ``stop``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name=f"notify-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the worker to stop after the delivery it is in the middle of."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float) -> None:
        """Let an in-flight delivery finish (so its receipt is saved), then end the worker."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def deliver_now(self) -> bool:
        """One attempt at everything queued, in the caller's thread; True when all went out."""
        with self._cond:
            keys = list(self._queue)
        return self._deliver(keys)

    def _stopping(self) -> bool:
        """True when the worker thread was asked to stop (not for ``deliver_now``)."""
        return self._stop.is_set() and self._thread is not None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(1.0)
                keys = list(self._queue)
            if self._stop.is_set():
                return
            try:
                ok = self._deliver(keys)
            except Exception:  # e.g. alerts.db on a full disk: never kill the worker
                log.exception("notifier %s: delivery pass failed", self.name)
                ok = False
            if ok:
                self._failures_in_a_row = 0
                continue
            self._failures_in_a_row += 1
            wait = backoff_delay(self.backoff_s, self._failures_in_a_row, self.max_backoff_s)
            log.info("notifier %s: retrying in %.1f s", self.name, wait)
            self._stop.wait(wait)

    def _done(self, keys: Sequence[str], failed: set[str]) -> bool:
        """Take the delivered keys off the queue; True when none failed."""
        with self._cond:
            for key in keys:
                if key not in failed:
                    self._queue.pop(key, None)
            self.metrics.queue_items.labels(self.name).set(len(self._queue))
        return not failed

    def _deliver(self, keys: Sequence[str]) -> bool:
        raise NotImplementedError


class Outbox(QueueWorker):
    """One receiver's bounded queue of alert fingerprints and the worker that drains it."""

    what = "alert(s)"

    def __init__(
        self,
        notifier: Notifier,
        book: AlertBook,
        metrics: OutboxMetrics,
        *,
        max_items: int = DEFAULT_QUEUE_SIZE,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        runbook_base_url: str = "",
    ) -> None:
        super().__init__(
            notifier.name,
            metrics,
            max_items=max_items,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )
        self.notifier = notifier
        self.book = book
        self.runbook_base_url = runbook_base_url

    def _deliver(self, fps: Sequence[str]) -> bool:
        """Tell the receiver about ``fps`` as they stand in the book now; record outcomes."""
        wanted = set(fps)
        pending: list[Alert] = []
        for alert in self.book.needing(self.name):
            if alert.fingerprint not in wanted:
                continue
            if alert.state == "resolved" and self.name not in alert.delivered:
                # It resolved before this receiver heard it fire: nothing to say.
                self.book.delivered(alert, self.name, "resolved", {})
                continue
            pending.append(self._with_absolute_runbook(alert))
        by_rule: dict[str, list[Alert]] = {}
        for alert in pending:
            by_rule.setdefault(alert.name, []).append(alert)
        failed: set[str] = set()
        for alerts in by_rule.values():
            if self._stopping():
                failed.update(a.fingerprint for a in alerts)
                continue
            for d in self._notify(alerts):
                if not d.ok:
                    failed.add(d.fingerprint)
        return self._done(fps, failed)

    def _with_absolute_runbook(self, alert: Alert) -> Alert:
        if "runbook_url" not in alert.annotations:
            return alert
        annotations = dict(alert.annotations)
        annotations["runbook_url"] = absolute_url(annotations["runbook_url"], self.runbook_base_url)
        return dataclasses.replace(alert, annotations=annotations)

    def _notify(self, alerts: list[Alert]) -> list[Delivery]:
        try:
            deliveries = self.notifier.notify(alerts)
        except Exception as exc:  # the protocol says never raise; be sure anyway
            log.warning("notifier %s raised: %s", self.name, exc)
            deliveries = [Delivery(a.fingerprint, False, error=str(exc)) for a in alerts]
        by_fp = {a.fingerprint: a for a in alerts}
        for d in deliveries:
            alert = by_fp.get(d.fingerprint)
            if alert is None:
                continue
            self.book.delivered(alert, self.name, alert.state if d.ok else None, d.receipt)
            outcome = "success" if d.ok else "deferred" if d.deferred else "failure"
            self.metrics.notifications.labels(self.name, outcome).inc()
            if outcome == "failure":
                self.metrics.failures.labels(self.name).inc()
        return deliveries


class Outboxes:
    """An ``Outbox`` per notifier, fed from the ``AlertBook`` after each evaluation pass."""

    def __init__(
        self,
        book: AlertBook,
        notifiers: Sequence[Notifier],
        *,
        registry: CollectorRegistry = REGISTRY,
        runbook_base_url: str = "",
        max_items: int = DEFAULT_QUEUE_SIZE,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        self.book = book
        metrics = metrics or OutboxMetrics(registry)
        self.metrics = metrics
        self.boxes = [
            Outbox(
                n,
                book,
                metrics,
                max_items=max_items,
                backoff_s=backoff_s,
                max_backoff_s=max_backoff_s,
                runbook_base_url=runbook_base_url,
            )
            for n in notifiers
        ]

    @property
    def receivers(self) -> list[str]:
        return [b.name for b in self.boxes]

    def offer_pending(self) -> None:
        """Offer each receiver what the book says it has not been told; never blocks."""
        for box in self.boxes:
            box.offer([a.fingerprint for a in self.book.needing(box.name)])

    def deliver_now(self) -> None:
        """One attempt per receiver in the caller's thread (``--once`` and tests)."""
        for box in self.boxes:
            box.deliver_now()

    def start(self) -> None:
        for box in self.boxes:
            box.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker; each may finish the delivery it is in the middle of."""
        deadline = time.monotonic() + timeout
        for box in self.boxes:
            box.request_stop()
        for box in self.boxes:
            box.stop(max(0.0, deadline - time.monotonic()))
