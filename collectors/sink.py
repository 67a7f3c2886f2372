"""The sink: a bounded FIFO of batches written to the Store, retried until they land.

Like sentry-python's transport, the sink never crashes its host: a failing
``store.write`` is counted, logged and retried with exponential backoff, and
the data stays queued. A batch's ``on_written`` callback (the tailer's
checkpoint commit) runs only after the store accepted it, which makes delivery
at-least-once; deterministic event ids make it effectively exactly-once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from collectors.metrics import CollectorMetrics
from siem.model import Event, Sample, Store

log = logging.getLogger("vigil.collect.sink")


@dataclass(frozen=True)
class Batch:
    """Events and samples from one source read, and what to do once they are stored."""

    events: tuple[Event, ...] = ()
    samples: tuple[Sample, ...] = ()
    on_written: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self.events) + len(self.samples)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between failed writes: ``initial_s``, doubling up to ``max_s``."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def after(self, failures: int) -> float:
        return float(min(self.max_s, self.initial_s * 2 ** max(0, failures - 1)))


class Sink:
    """Queue batches with :meth:`submit`; write them with :meth:`flush`.

    ``max_pending`` bounds the queue: while :meth:`has_room` is False the
    collector loop collects nothing (the log files and targets keep the data),
    so nothing that was collected is ever dropped. ``max_write`` bounds how many
    items go into one ``store.write`` call (several small batches are coalesced).
    """

    def __init__(
        self,
        store: Store,
        metrics: CollectorMetrics,
        *,
        max_pending: int = 100_000,
        max_write: int = 5_000,
        backoff: Backoff = Backoff(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._queue: deque[Batch] = deque()
        self._pending = 0
        self._max_pending = max_pending
        self._max_write = max_write
        self._backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._failures = 0
        self._next_try = 0.0
        metrics.pending.set_function(self.pending_items)

    def pending_items(self) -> int:
        """Events plus samples queued and not yet written."""
        return self._pending

    def has_room(self) -> bool:
        return self._pending < self._max_pending

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; empty batches with a callback still run it in order."""
        if len(batch) == 0 and batch.on_written is None:
            return
        self._queue.append(batch)
        self._pending += len(batch)

    def flush(self, timeout_s: float, wait: Callable[[float], object] | None = None) -> bool:
        """Write queued batches, retrying for up to ``timeout_s``; True when the queue is empty.

        Writes that succeed continue until the queue is empty; only waiting for
        the next retry is bounded by ``timeout_s``.

        ``wait`` sleeps between retries; pass ``threading.Event.wait`` to make the
        backoff interruptible by a stop request.
        """
        wait = wait or self._sleep
        deadline = self._clock() + timeout_s
        while self._queue:
            now = self._clock()
            if now < self._next_try:
                # An interruptible wait returns True when a stop was requested.
                if now >= deadline or wait(min(self._next_try, deadline) - now):
                    break
                continue
            self._write_next()
        return not self._queue

    def _write_next(self) -> None:
        batches = [self._queue[0]]
        size = len(batches[0])
        for batch in list(self._queue)[1:]:
            if size + len(batch) > self._max_write:
                break
            batches.append(batch)
            size += len(batch)
        events = [e for b in batches for e in b.events]
        samples = [s for b in batches for s in b.samples]
        try:
            result = self._store.write(events, samples)
        except Exception as exc:  # any backend failure: keep the data, retry later
            self._failures += 1
            delay = self._backoff.after(self._failures)
            self._next_try = self._clock() + delay
            self._metrics.write_errors.inc()
            log.warning(
                "store write failed; retrying in %.1fs",
                delay,
                extra={"error.message": str(exc), "error.type": type(exc).__name__},
            )
            return
        self._failures = 0
        self._next_try = 0.0
        for _ in batches:
            self._queue.popleft()
        self._pending -= size
        self._metrics.events.inc(len(events))
        self._metrics.samples.inc(len(samples))
        self._metrics.duplicate_events.inc(result.duplicate_events)
        if events:
            self._metrics.observe_event_time(max(e.timestamp for e in events))
        for batch in batches:
            if batch.on_written is not None:
                batch.on_written()
