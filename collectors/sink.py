"""The sink: bounded FIFOs of events and samples written to the Store, retried until they land.

Like sentry-python's transport, the sink never crashes its host: a failing
``store.write`` is counted, logged and retried with exponential backoff, and
the data stays queued. A batch's ``on_written`` callback (the tailer's
checkpoint commit) runs only after the store accepted it, which makes delivery
at-least-once; deterministic event ids make it effectively exactly-once.

Events and samples travel in separate lanes, each with its own queue and
backoff, so events the store rejects never hold back the scraped samples (and
the other way round).

A failed write is one of two things:

- **the store is down** (locked, read-only, disk full, I/O error: SQLite's
  error classes for those, a :class:`~siem.StoreUnavailable` such as an
  Elasticsearch cluster refusing connections, timing out or answering 429/5xx,
  an ``OSError``, or any error of unknown kind):
  nothing is known to be wrong with the data, so the whole lane backs off and
  retries, dead-lettering nothing (see :func:`store_is_down`); once a lane
  writes again, the other lane's backoff ends too (the store is back);
- **poison** (a data error: a value the store refuses or cannot encode): the write is
  split in halves until the items that fail alone are isolated; those go to a
  dead-letter file ``<dead_letter_dir>/collector-YYYYMMDD.jsonl`` (one JSON
  line per item: the error and the item, escaped), are counted in
  ``vigil_collector_dead_letter_items_total``, and everything else flows on.

Batches without ``on_written`` (scrapes, syslog, the PostgreSQL poller) have
no other copy: what is not queued is gone. With a :class:`~collectors.spool.Spool`,
once the store refused a write of a lane and ``spool_after`` such items wait
in its memory queue, they move to the spool on disk, and so does every such
batch of that lane after them until the spool is replayed. A lane writes its
memory queue first (the tailer's batches, and such batches queued before the
spool started, which are older), then the spool's records in order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.metrics import CollectorMetrics
from collectors.spool import Spool
from siem import SiemError, StoreUnavailable
from siem.model import Event, Sample, Store, WriteResult, value_text

log = logging.getLogger("vigil.collect.sink")

# SQLite primary result codes meaning "the database cannot be written now", not "bad row":
# PERM, BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, AUTH, NOTADB.
_STORE_DOWN_CODES = frozenset({3, 5, 6, 7, 8, 10, 11, 13, 14, 15, 23, 26})


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


def store_is_down(exc: BaseException) -> bool:
    """True when ``exc`` says the store cannot take any write now (retry all later).

    False means the data is at fault (the write is split to find the item):
    a SQLite error of a data class (constraint, mismatch, too big, malformed
    JSON), a ``ValueError``/``TypeError``/``UnicodeError``/``RecursionError``
    from encoding an item, or a ``SiemError`` refusing a value. Anything
    unknown counts as the store being down: retrying is safe, dead-lettering
    every item of a healthy batch is not.
    """
    if isinstance(exc, StoreUnavailable):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            if code is None:
                return isinstance(seen, sqlite3.OperationalError)
            return (code & 0xFF) in _STORE_DOWN_CODES
        if isinstance(seen, (OSError, MemoryError)):
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, (ValueError, TypeError, UnicodeError, RecursionError)):
        return False
    return not (isinstance(exc, SiemError) and "closed" not in str(exc))


class _Done:
    """Runs a batch's callback once each of its lanes has stored its part."""

    def __init__(self, callback: Callable[[], None], parts: int) -> None:
        self._callback = callback
        self._parts = parts

    def part_written(self) -> None:
        self._parts -= 1
        if self._parts == 0:
            self._callback()


@dataclass
class _Entry:
    items: list[Any]
    done: _Done | None = None


@dataclass
class _Lane:
    """One queue (events or samples) with its own retry state."""

    kind: str
    entries: deque[_Entry] = field(default_factory=deque)
    pending: int = 0
    failures: int = 0
    next_try: float = 0.0


class _StoreDown(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Sink:
    """Queue batches with :meth:`submit`; write them with :meth:`flush`.

    ``max_pending`` bounds the queues: while :meth:`has_room` is False the
    collector loop collects nothing (the log files and targets keep the data),
    so nothing that was collected is ever dropped. ``max_write`` bounds how many
    items go into one ``store.write`` call (several small batches are coalesced).
    ``dead_letter_dir`` receives the items the store rejects one by one; with
    None they are only logged (and counted). ``spool`` takes batches without
    ``on_written`` while the store is down (see the module's docstring).
    """

    def __init__(
        self,
        store: Store,
        metrics: CollectorMetrics,
        *,
        max_pending: int = 100_000,
        max_write: int = 5_000,
        backoff: Backoff = Backoff(),
        dead_letter_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        spool: Spool | None = None,
        spool_after: int = 0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._events = _Lane("event")
        self._samples = _Lane("sample")
        self._lanes = (self._samples, self._events)  # samples first: they are small and urgent
        self._max_pending = max_pending
        self._max_write = max_write
        self._backoff = backoff
        self._dead_letter_dir = dead_letter_dir
        self._clock = clock
        self._sleep = sleep
        self._handled = 0  # items of the current write already stored or dead-lettered
        self._spool = spool
        self._spool_after = spool_after
        metrics.pending.set_function(self.pending_items)
        if dead_letter_dir is not None:
            metrics.dead_letter_bytes.set(_dir_bytes(dead_letter_dir))

    def pending_items(self) -> int:
        """Events plus samples queued and not yet written."""
        return self._events.pending + self._samples.pending

    def has_room(self) -> bool:
        return self.pending_items() < self._max_pending

    @property
    def spooling(self) -> bool:
        """True when batches without ``on_written`` can go to the disk spool."""
        return self._spool is not None

    def _spooled(self, lane: _Lane) -> bool:
        return self._spool is not None and not self._spool.lane(lane.kind).empty()

    def _maybe_spool(self, lane: _Lane, force: bool = False) -> None:
        """Move ``lane``'s batches without a callback to the spool, when it is time.

        It is time once the store refused a write of the lane and at least
        ``spool_after`` such items are queued (or always, with ``force``: at
        shutdown). They move in queue order, so the spool stays in order.
        """
        if self._spool is None or not (force or lane.failures > 0):
            return
        loose = [entry for entry in lane.entries if entry.done is None]
        if not loose or (not force and sum(len(e.items) for e in loose) < self._spool_after):
            return
        lane.entries = deque(entry for entry in lane.entries if entry.done is not None)
        for entry in loose:
            lane.pending -= len(entry.items)
            self._spool.append(lane.kind, entry.items)

    def spool_unwritten(self) -> None:
        """Move every queued batch without a callback to the spool (at shutdown)."""
        for lane in self._lanes:
            self._maybe_spool(lane, force=True)

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; empty batches with a callback still run it in order."""
        if len(batch) == 0 and batch.on_written is None:
            return
        parts = [(lane, items) for lane, items in self._split(batch) if items]
        if not parts:
            parts = [(self._events, [])]  # a callback alone keeps its place among events
        done = None if batch.on_written is None else _Done(batch.on_written, len(parts))
        for lane, items in parts:
            if done is None and self._spool is not None and self._spooled(lane):
                self._spool.append(lane.kind, items)  # after what is spooled: keeps the order
                continue
            lane.entries.append(_Entry(items, done))
            lane.pending += len(items)
            if done is None:
                self._maybe_spool(lane)

    def _split(self, batch: Batch) -> tuple[tuple[_Lane, list[Any]], ...]:
        return ((self._events, list(batch.events)), (self._samples, list(batch.samples)))

    def flush(self, timeout_s: float, wait: Callable[[float], object] | None = None) -> bool:
        """Write queued batches, retrying for up to ``timeout_s``; True when the queues are empty.

        Writes that succeed continue until the queues are empty; only waiting for
        the next retry is bounded by ``timeout_s``. A lane that is backing off
        does not hold back the other.

        ``wait`` sleeps between retries; pass ``threading.Event.wait`` to make the
        backoff interruptible by a stop request.
        """
        wait = wait or self._sleep
        deadline = self._clock() + timeout_s
        while True:
            busy = [lane for lane in self._lanes if lane.entries or self._spooled(lane)]
            if not busy:
                return True
            now = self._clock()
            ready = [lane for lane in busy if lane.next_try <= now]
            if ready:
                for lane in ready:
                    self._write_next(lane)
                continue
            next_try = min(lane.next_try for lane in busy)
            # An interruptible wait returns True when a stop was requested.
            if now >= deadline or wait(min(next_try, deadline) - now):
                return False

    def _write_next(self, lane: _Lane) -> None:
        if not lane.entries:
            self._replay_next(lane)
            return
        group = [lane.entries[0]]
        size = len(group[0].items)
        for entry in list(lane.entries)[1:]:
            if size + len(entry.items) > self._max_write:
                break
            group.append(entry)
            size += len(entry.items)
        items = [item for entry in group for item in entry.items]
        self._handled = 0
        try:
            try:
                self._count(lane, items, self._write(lane, items))
            except Exception as exc:  # any backend failure: find out whose fault it is
                if store_is_down(exc):
                    raise _StoreDown(exc) from exc
                log.warning(
                    "store rejected a write; splitting it to isolate the bad items",
                    extra={"error.message": str(exc), "labels.items": len(items)},
                )
                self._isolate(lane, items, exc)
        except _StoreDown as down:
            self._release(lane, group, self._handled)
            self._failed(lane, down)
            self._maybe_spool(lane)
            return
        self._succeeded(lane)
        self._release(lane, group, len(items))

    def _replay_next(self, lane: _Lane) -> None:
        """Write the oldest spooled records of ``lane`` (up to ``max_write`` items in one
        write); forget them once stored.

        Records the store went down in the middle of are written again whole
        later: the store dedupes what it already has.
        """
        assert self._spool is not None
        records = self._spool.lane(lane.kind).peek_many(self._max_write)
        if not records:
            return
        self._handled = 0
        try:
            self._bisect(lane, [item for record in records for item in record.items])
        except _StoreDown as down:
            self._failed(lane, down)
            return
        self._succeeded(lane)
        for _ in records:
            self._spool.popped(lane.kind)

    def _succeeded(self, lane: _Lane) -> None:
        """``lane`` wrote; when it had been failing, the store is back: the other lane
        retries now instead of at the end of a backoff of up to ``max_s``."""
        if lane.failures:
            for other in self._lanes:
                if other is not lane and other.failures:
                    other.failures = 1
                    other.next_try = min(other.next_try, self._clock())
        lane.failures = 0
        lane.next_try = 0.0

    def _failed(self, lane: _Lane, down: _StoreDown) -> None:
        lane.failures += 1
        delay = self._backoff.after(lane.failures)
        lane.next_try = self._clock() + delay
        self._metrics.write_errors.inc()
        log.warning(
            "store write failed; retrying in %.1fs",
            delay,
            extra={
                "error.message": str(down.cause),
                "error.type": type(down.cause).__name__,
                "labels.lane": lane.kind,
            },
        )

    def _write(self, lane: _Lane, items: list[Any]) -> WriteResult:
        if lane is self._events:
            return self._store.write(events=items)
        return self._store.write(samples=items)

    def _bisect(self, lane: _Lane, items: list[Any]) -> None:
        """Write ``items``; when the store rejects them, :meth:`_isolate` the bad ones."""
        try:
            self._count(lane, items, self._write(lane, items))
        except Exception as exc:
            if store_is_down(exc):
                raise _StoreDown(exc) from exc
            self._isolate(lane, items, exc)
            return
        self._handled += len(items)

    def _isolate(self, lane: _Lane, items: list[Any], exc: Exception) -> None:
        """``items`` failed with ``exc``: dead-letter a lone item, else write each half.

        Items are handled left to right, so ``self._handled`` is always a prefix
        of the write; a store that goes down midway raises :class:`_StoreDown`.
        """
        if len(items) == 1:
            self._dead_letter(lane, items[0], exc)
            self._handled += 1
            return
        middle = len(items) // 2
        self._bisect(lane, items[:middle])
        self._bisect(lane, items[middle:])

    def _release(self, lane: _Lane, group: list[_Entry], handled: int) -> None:
        """Drop the first ``handled`` items of ``group`` from the lane; run finished callbacks."""
        for entry in group:
            if handled < len(entry.items):
                if handled:
                    del entry.items[:handled]
                    lane.pending -= handled
                return
            handled -= len(entry.items)
            lane.entries.popleft()
            lane.pending -= len(entry.items)
            if entry.done is not None:
                entry.done.part_written()

    def _count(self, lane: _Lane, items: Sequence[Any], result: WriteResult) -> None:
        if lane is self._events:
            self._metrics.events.inc(len(items))
            self._metrics.duplicate_events.inc(result.duplicate_events)
            if items:
                self._metrics.observe_event_time(max(e.timestamp for e in items))
        else:
            self._metrics.samples.inc(len(items))

    def _dead_letter(self, lane: _Lane, item: Any, exc: BaseException) -> None:
        """Append ``item`` and why it failed to today's dead-letter file.

        If even that fails (the disk is full), the item is not given up: the
        write counts as the store being down and is retried later.
        """
        now = dt.datetime.now(dt.UTC)
        record = {
            "@timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "kind": lane.kind,
            "error": {"type": type(exc).__name__, "message": str(exc)},
            "item": _escaped(item),
        }
        line = (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")
        if self._dead_letter_dir is not None:
            path = self._dead_letter_dir / f"collector-{now:%Y%m%d}.jsonl"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as error:
                raise _StoreDown(error) from error
            self._metrics.dead_letter_bytes.inc(len(line))
        self._metrics.dead_letter_items.inc()
        log.error(
            "store rejected one %s; written to the dead-letter file",
            lane.kind,
            extra={
                "error.message": str(exc),
                "error.type": type(exc).__name__,
                "file.path": str(self._dead_letter_dir),
            },
        )


def _escaped(item: Any) -> dict[str, Any] | str:
    """``item`` as ASCII-safe JSON values: lone surrogates, NUL, NaN all survive as text."""
    try:
        if isinstance(item, Event):
            return {
                "id": item.id,
                "timestamp": repr(item.timestamp),
                "dataset": item.dataset,
                "doc": json.dumps(item.doc, ensure_ascii=True, default=repr),
            }
        if isinstance(item, Sample):
            return {
                "labels": dict(item.labels),
                "timestamp": repr(item.timestamp),
                "value": value_text(item.value),
            }
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return repr(item)[: 1 << 20]
    except RecursionError:
        return f"<{type(item).__name__} nested too deep to show>"


def _dir_bytes(path: Path) -> int:
    try:
        return sum(p.stat().st_size for p in path.glob("collector-*.jsonl"))
    except OSError:
        return 0
