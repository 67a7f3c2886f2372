"""An in-process Store: the reference semantics every backend must match.

Useful for unit tests of the readers (PromQL evaluation, rules, dashboards) and
for a single process that keeps nothing across restarts.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence

from siem import aggregations as agg
from siem import limits, lookups
from siem.model import (
    METRIC_NAME,
    Event,
    EventQuery,
    Labels,
    Matcher,
    MetricMetadata,
    Sample,
    Series,
    WriteResult,
)

_CHECK_EVERY = 1024  # items between deadline/cancellation checks


class MemoryStore(lookups.SeriesLookups):
    """``Store`` in dictionaries, safe for several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, Event] = {}
        self._series: dict[Labels, dict[float, float]] = {}
        self._metadata: dict[str, MetricMetadata] = {}

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
                    s_stored += 1
        return WriteResult(stored, dup, s_stored, s_dup)

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

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        rv: list[Series] = []
        with self._lock:
            items = [(labels, dict(points)) for labels, points in self._series.items()]
        for n, (labels, points) in enumerate(items):
            if n % _CHECK_EVERY == 0:
                limits.check()
            as_dict = dict(labels)
            if not all(m.matches(as_dict) for m in matchers):
                continue
            times = sorted(points)
            lo = bisect.bisect_left(times, start)
            hi = bisect.bisect_right(times, end)
            if lo < hi:
                limits.take(hi - lo)
                rv.append(Series(labels, tuple((t, points[t]) for t in times[lo:hi])))
        rv.sort(key=lambda s: s.labels)
        return rv

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
