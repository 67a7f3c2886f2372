"""An in-process Store: the reference semantics every backend must match.

Useful for unit tests of the readers (PromQL evaluation, rules, dashboards) and
for a single process that keeps nothing across restarts.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

from siem import aggregations as agg
from siem import limits, lookups
from siem import retention as ret
from siem.model import (
    METRIC_NAME,
    Columns,
    Event,
    EventQuery,
    Labels,
    Matcher,
    MetricMetadata,
    Sample,
    SampleChanges,
    SelectsColumns,
    WriteResult,
)

_CHECK_EVERY = 1024  # items between deadline/cancellation checks
SAMPLE_LOG_SIZE = 1_000_000
"""Stored samples the log of ``samples_since`` keeps; a reader further behind is reset."""


class MemoryStore(lookups.SeriesLookups, SelectsColumns):
    """``Store`` in dictionaries, safe for several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, Event] = {}
        self._series: dict[Labels, dict[float, float]] = {}
        # Each series' points as sorted columns, made by a read, dropped by a change.
        self._sorted: dict[Labels, tuple[array[float], array[float]]] = {}
        self._sizes: dict[str, int] = {}  # estimated bytes of events, by id, once asked for
        self._metadata: dict[str, MetricMetadata] = {}
        self._log: list[Sample] = []  # stored samples, in order, for ``samples_since``
        self._log_start = 0  # the log number of self._log[0]
        self._deleted_before = -math.inf

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        stored = dup = s_stored = s_dup = 0
        with self._lock:
            for event in events:
                if event.id in self._events:
                    dup += 1
                else:
                    self._events[event.id] = event
                    stored += 1
            for sample in samples:
                points = self._series.setdefault(sample.labels, {})
                if sample.timestamp in points:
                    s_dup += 1
                else:
                    points[sample.timestamp] = sample.value
                    self._sorted.pop(sample.labels, None)
                    self._log.append(sample)
                    s_stored += 1
            if len(self._log) > SAMPLE_LOG_SIZE:
                gone = len(self._log) - SAMPLE_LOG_SIZE // 2
                del self._log[:gone]
                self._log_start += gone
        return WriteResult(stored, dup, s_stored, s_dup)

    def samples_since(self, cursor: int | None) -> SampleChanges:
        """``SqliteStore.samples_since``: the samples stored since ``cursor``."""
        with self._lock:
            newest = self._log_start + len(self._log)
            if cursor is None:
                return SampleChanges(newest, False, self._deleted_before, [])
            if not self._log_start <= cursor <= newest:
                return SampleChanges(newest, True, self._deleted_before, [])
            # the log keeps what was written: a sample deleted since then is not stored,
            # one deleted and written again has its new value
            samples: dict[tuple[Labels, float], tuple[Labels, float, float]] = {}
            for s in self._log[cursor - self._log_start :]:
                points = self._series.get(s.labels, {})
                if s.timestamp in points:
                    samples[(s.labels, s.timestamp)] = (s.labels, s.timestamp, points[s.timestamp])
            return SampleChanges(newest, False, self._deleted_before, list(samples.values()))

    def _matching(self, query: EventQuery) -> list[Event]:
        with self._lock:
            events = list(self._events.values())
        hits = []
        for n, event in enumerate(events):
            if n % _CHECK_EVERY == 0:
                limits.check()
            if query.matches(event):
                hits.append(event)
        hits.sort(key=lambda e: (e.timestamp, e.id), reverse=True)
        return hits

    def search(self, query: EventQuery) -> list[Event]:
        rv = self._matching(query)[: max(query.limit, 0)]
        limits.take(len(rv))
        return rv

    def count_by(self, query: EventQuery, field_name: str) -> dict[str, int]:
        counts = agg.value_counts(self._matching(query), field_name)
        limits.take(len(counts))
        return counts

    def aggregate(self, query: EventQuery, request: agg.Aggregation) -> agg.AggregationResult:
        """``request`` over the matching events; the reference semantics."""
        return agg.aggregate_events(self._matching(query), request)

    def _columns(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Columns]:
        with self._lock:
            names = list(self._series)
        found = []
        for n, labels in enumerate(names):
            if n % _CHECK_EVERY == 0:
                limits.check()
            as_dict = dict(labels)
            if all(m.matches(as_dict) for m in matchers):
                found.append(labels)
        rv: list[Columns] = []
        for labels in found:
            limits.check()
            with self._lock:
                times, values = self._sorted_columns(labels)
            lo = bisect.bisect_left(times, start)
            hi = bisect.bisect_right(times, end)
            if lo < hi:
                limits.take(hi - lo)
                rv.append((labels, times[lo:hi], values[lo:hi]))
        rv.sort(key=lambda c: c[0])
        return rv

    def _sorted_columns(self, labels: Labels) -> tuple[array[float], array[float]]:
        """The points of series ``labels`` as sorted columns (cached); under the lock."""
        columns = self._sorted.get(labels)
        if columns is None:
            points = self._series.get(labels, {})
            times = sorted(points)
            columns = array("d", times), array("d", map(points.__getitem__, times))
            self._sorted[labels] = columns
        return columns

    def prune(
        self, policy: ret.RetentionPolicy, now: float, *, dry_run: bool = False
    ) -> ret.PruneResult:
        """Remove what ``policy`` no longer keeps; the size cap counts estimated bytes."""
        result = ret.PruneResult(dry_run=dry_run)

        def datasets() -> list[str]:
            with self._lock:
                return sorted({e.dataset for e in self._events.values()})

        def events(dataset: str, cutoff: float) -> int:
            old = self._old_events(cutoff, dataset)
            return len(old) if dry_run else sum(self._remove_events(old, policy).values())

        def samples(cutoff: float) -> int:
            return self._remove_samples(cutoff, dry_run)

        ret.prune_with(datasets, events, samples, policy, now, result)
        if dry_run:
            if policy.max_bytes > 0:
                result.over_cap_bytes = max(0, self.used_bytes() - policy.max_bytes)
        else:
            ret.size_cap(self, policy, result)
        return result

    def _old_events(self, cutoff: float, dataset: str | None = None) -> list[str]:
        """Ids of the events older than ``cutoff`` (of ``dataset``), oldest first."""
        with self._lock:
            old = [
                e
                for e in self._events.values()
                if e.timestamp < cutoff and (dataset is None or e.dataset == dataset)
            ]
        return [e.id for e in sorted(old, key=lambda e: e.timestamp)]

    def _remove_events(self, ids: list[str], policy: ret.RetentionPolicy) -> Counter[str]:
        """Remove ``ids``, ``policy.chunk`` at a time (as the other backends do)."""
        removed: Counter[str] = Counter()
        for start in range(0, len(ids), policy.chunk):
            if start:
                policy.pause()
            with self._lock:
                for id_ in ids[start : start + policy.chunk]:
                    event = self._events.pop(id_, None)
                    if event is not None:
                        self._sizes.pop(id_, None)
                        removed[event.dataset] += 1
        return removed

    def _remove_samples(self, cutoff: float, dry_run: bool = False) -> int:
        removed = 0
        with self._lock:
            for points in self._series.values():
                old = [t for t in points if t < cutoff]
                removed += len(old)
                if not dry_run:
                    for t in old:
                        del points[t]
            if not dry_run:
                self._deleted_before = max(self._deleted_before, cutoff)
            if removed and not dry_run:
                self._sorted.clear()
        return removed

    def _size(self, event: Event) -> int:
        """``event``'s estimated bytes, computed once (not on the write path); under the lock."""
        size = self._sizes.get(event.id)
        if size is None:
            size = self._sizes[event.id] = _estimate(event)
        return size

    def used_bytes(self) -> int:
        """The estimated bytes of everything held (``siem.retention.estimate_event_bytes``)."""
        with self._lock:
            samples = sum(len(points) for points in self._series.values())
            events = sum(self._size(e) for e in self._events.values())
            return events + samples * ret.SAMPLE_BYTES

    def time_span(self) -> tuple[float, float] | None:
        with self._lock:
            times = [e.timestamp for e in self._events.values()]
            for points in self._series.values():
                if points:
                    times.extend((min(points), max(points)))
        return (min(times), max(times)) if times else None

    def delete_before(self, cutoff: float, policy: ret.RetentionPolicy) -> tuple[Counter[str], int]:
        return self._remove_events(self._old_events(cutoff), policy), self._remove_samples(cutoff)

    def stats(self) -> ret.StoreStats:
        """Counts and spans exact; bytes estimated (the JSON text of each document)."""
        with self._lock:
            by_dataset: dict[str, list[Event]] = {}
            for event in self._events.values():
                by_dataset.setdefault(event.dataset, []).append(event)
            datasets = tuple(
                ret.DatasetStats(
                    name,
                    len(events),
                    sum(self._size(e) for e in events),
                    min(e.timestamp for e in events),
                    max(e.timestamp for e in events),
                )
                for name, events in sorted(by_dataset.items())
            )
            live = [points for points in self._series.values() if points]
            samples = sum(len(points) for points in live)
            oldest = min((min(p) for p in live), default=None)
            newest = max((max(p) for p in live), default=None)
        samples_bytes = samples * ret.SAMPLE_BYTES
        return ret.StoreStats(
            datasets=datasets,
            series=len(live),
            samples=samples,
            samples_bytes=samples_bytes,
            oldest_sample=oldest,
            newest_sample=newest,
            total_bytes=sum(d.bytes for d in datasets) + samples_bytes,
        )

    def _in_range(
        self, matchers: Sequence[Matcher], start: float | None, end: float | None
    ) -> list[Labels]:
        """The label sets of the series with a point in [start, end] (by name first)."""
        name = lookups.exact_name(matchers)
        with self._lock:
            items = [
                (labels, list(points))
                for labels, points in self._series.items()
                if name is None or dict(labels).get(METRIC_NAME) == name
            ]
        return [
            labels for labels, times in items if any(lookups.in_range(t, start, end) for t in times)
        ]

    def write_metadata(self, items: Iterable[MetricMetadata]) -> int:
        written = 0
        with self._lock:
            for item in items:
                self._metadata[item.metric] = item
                written += 1
        return written

    def metadata(self, metric: str | None = None, limit: int = 0) -> list[MetricMetadata]:
        with self._lock:
            items = list(self._metadata.values())
        return lookups.pick_metadata(items, metric, limit)

    def close(self) -> None:
        """Nothing to release."""


def _estimate(event: Event) -> int:
    text = event.text if event.text is not None else json.dumps(event.doc, default=str)
    return ret.estimate_event_bytes(
        len(event.id), len(event.dataset), len(text.encode("utf-8", "surrogatepass"))
    )
