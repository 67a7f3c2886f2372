"""The alert engine's in-memory head: recent samples of the metrics its rules select.

Prometheus evaluates rules from its in-memory head block; Vigil's rules would
otherwise read the store every pass, and a thousand rules over ten thousand
series re-read the same windows each second. ``SampleCache`` keeps, for each
metric name the rules select (``wants``), every sample of the last ``keep``
seconds that name's selectors reach back (range, ``offset``, the group's
``query_offset``), plus per series the newest sample before that (what an
instant selector, or a staleness marker, needs). Each pass (``refresh``) asks
the store only for what was stored since the last one (``samples_since``: late
and out-of-order writes, spool replay included), drops copies of samples that
retention deleted, and evicts what no selector can reach any more.

It answers the evaluator's reads like a store (``select_columns``, and
``latest_columns``: per series only the newest sample, what an instant selector
at one time needs), from memory where it holds the whole window asked for and
from the store otherwise: a name without an equality on ``__name__``, a window
older than it keeps (``x[3d]`` when its other rules need minutes), a name left
out because the cache is full (``max_samples``; counted, read from the store
from then on, nothing dropped). ``dirty`` after the engine's own writes
(recording rules, ``ALERTS``): the next read catches up first, so later rules
of a pass read what earlier ones wrote, as Prometheus' rule order promises.

A store without ``samples_since`` (Elasticsearch) gets no cache: the engine
reads it as before.
"""

from __future__ import annotations

import bisect
import logging
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerting import promql_plan as plan
from alerting.promql_series import latest_columns
from siem import limits
from siem.model import METRIC_NAME, Columns, Labels, Matcher, Series, Store

log = logging.getLogger(__name__)

DEFAULT_MAX_SAMPLES = 5_000_000
"""Samples the cache holds at most (16 bytes each, about 80 MB, plus per series)."""
DEFAULT_MAX_WINDOW_S = 3600.0
"""Windows reaching back further (an SLO's ``[3d]``) are read from the store."""
MARGIN_S = 1.0
"""Held beyond what the rules reach: window ends rounded to the millisecond grid."""


def reach(node: plan.Node, lookback: float, extra: float = 0.0) -> dict[str, set[float]]:
    """Per metric name, how far before the evaluation time each of ``node``'s selectors
    reads.

    An instant selector evaluated at one time needs only the newest sample before
    it (which the cache keeps per series), so it reaches back its ``offset``; in an
    expression with a subquery it reaches back the lookback too (the evaluator then
    reads its whole window), inside one the subquery's range as well. A selector
    with ``@`` or without an equality on ``__name__`` is not counted (always read
    from the store)."""
    out: dict[str, set[float]] = {}
    instant = 0.0 if not plan.has_subquery(node) else lookback

    def walk(n: plan.Node, extra: float) -> None:
        if isinstance(n, plan.Selector):
            name = next(
                (m.value for m in n.matchers if m.name == METRIC_NAME and m.op == "="), None
            )
            if name is None or n.at is not None:
                return
            width = n.range if n.range is not None else instant
            back = max(0.0, extra + n.offset + width)
            out.setdefault(name, set()).add(back)
        elif isinstance(n, plan.Subquery):
            if n.at is None:
                walk(n.expr, extra + n.offset + n.range)
        elif isinstance(n, plan.Call):
            for arg in n.args:
                walk(arg, extra)
        elif isinstance(n, plan.Aggregate):
            walk(n.expr, extra)
            if n.param is not None:
                walk(n.param, extra)
        elif isinstance(n, plan.Negate):
            walk(n.expr, extra)
        elif isinstance(n, plan.Binary):
            walk(n.lhs, extra)
            walk(n.rhs, extra)

    walk(node, extra)
    return out


@dataclass
class _Series:
    labels: Labels
    times: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))

    def add(self, ts: float, value: float) -> int:
        """Insert in time order; a time already held keeps its value (the store's
        ``INSERT OR IGNORE``). How many samples were added (0 or 1)."""
        times = self.times
        if not times or ts > times[-1]:
            times.append(ts)
            self.values.append(value)
            return 1
        i = bisect.bisect_left(times, ts)
        if i < len(times) and times[i] == ts:
            return 0
        times.insert(i, ts)
        self.values.insert(i, value)
        return 1

    def evict(self, start: float) -> int:
        """Drop samples before ``start`` except the newest of them; how many went."""
        i = bisect.bisect_left(self.times, start) - 1
        if i > 0:
            del self.times[:i]
            del self.values[:i]
            return i
        return 0

    def drop_before(self, cutoff: float) -> int:
        i = bisect.bisect_left(self.times, cutoff)
        if i > 0:
            del self.times[:i]
            del self.values[:i]
        return max(i, 0)


@dataclass
class _Name:
    keep: float
    start: float = math.inf
    """Every sample at or after ``start`` is held, and per series the newest before it."""
    series: dict[Labels, _Series] = field(default_factory=dict)
    order: list[_Series] | None = None  # sorted by labels, rebuilt when a series appears
    index: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def sorted(self) -> list[_Series]:
        if self.order is None:
            self.order = [self.series[k] for k in sorted(self.series)]
            self.index = {}
        return self.order

    def candidates(self, matchers: Sequence[Matcher]) -> Iterable[_Series]:
        order = self.sorted()
        rest = [m for m in matchers if m.name != METRIC_NAME]
        exact = next((m for m in rest if m.op == "="), None)
        if exact is None:
            picked: Iterable[_Series] = order
        else:
            rest.remove(exact)  # the index answers it
            by_value = self.index.get(exact.name)
            if by_value is None:
                by_value = {}
                for i, s in enumerate(order):
                    by_value.setdefault(dict(s.labels).get(exact.name, ""), []).append(i)
                self.index[exact.name] = by_value
            picked = [order[i] for i in by_value.get(exact.value, [])]
        if not rest:
            return picked
        return [s for s in picked if all(m.matches(dict(s.labels)) for m in rest)]

    def held(self) -> int:
        return sum(len(s.times) for s in self.series.values())


class _Metrics:
    def __init__(self, registry: CollectorRegistry, max_samples: int) -> None:
        self.samples = Gauge(
            "vigil_alert_sample_cache_samples",
            "Samples the alert engine's sample cache holds",
            registry=registry,
        )
        self.series = Gauge(
            "vigil_alert_sample_cache_series", "Series in the sample cache", registry=registry
        )
        self.capacity = Gauge(
            "vigil_alert_sample_cache_max_samples",
            "Samples the sample cache may hold (alerting.cache_max_samples)",
            registry=registry,
        )
        self.capacity.set(max_samples)
        self.reads = Counter(
            "vigil_alert_sample_cache_reads",
            "Selector reads: from the cache (hit) or from the store (miss)",
            ["result"],
            registry=registry,
        )
        self.evicted = Counter(
            "vigil_alert_sample_cache_evicted_samples",
            "Samples the cache let go because no rule reaches back that far",
            registry=registry,
        )
        self.overflows = Counter(
            "vigil_alert_sample_cache_overflows",
            "Metric names left out of the full cache (read from the store instead)",
            registry=registry,
        )
        self.refresh_failures = Counter(
            "vigil_alert_sample_cache_refresh_failures",
            "Catch-ups with the store that failed (the pass read the store instead)",
            registry=registry,
        )
        self.reloads = Counter(
            "vigil_alert_sample_cache_reloads",
            "Times the cache was read again whole (store log no longer reached its cursor)",
            registry=registry,
        )
        self.new_samples = Counter(
            "vigil_alert_sample_cache_new_samples",
            "Samples read from the store's log of new writes",
            registry=registry,
        )


class SampleCache:
    """Recent samples of the rules' metric names, kept in step with ``store``."""

    def __init__(
        self,
        store: Store,
        *,
        lookback: float = 300.0,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_window_s: float = DEFAULT_MAX_WINDOW_S,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.lookback = lookback
        self.max_samples = max_samples
        self.max_window_s = max_window_s
        self.metrics = _Metrics(registry or CollectorRegistry(), max_samples)
        self.names: dict[str, _Name] = {}
        self.left_out: set[str] = set()
        """Names that did not fit under ``max_samples`` (until the rules change)."""
        self._needs: dict[str, set[float]] = {}
        self.cursor: int | None = None
        self.deleted_before = -math.inf
        self.ready = False
        self.dirty = False
        self.total = 0

    @staticmethod
    def supports(store: Store) -> bool:
        return callable(getattr(store, "samples_since", None))

    def want(self, needs: dict[str, set[float]]) -> None:
        """Keep these names (metric name → how far before the evaluation time each of its
        selectors reads); a selector reaching back further than ``max_window_s`` is
        left to the store, the name's others are kept."""
        wanted: dict[str, float] = {}
        for name, backs in needs.items():
            short = [b for b in backs if b <= self.max_window_s]
            if short:
                wanted[name] = max(short)
        for name in list(self.names):
            if name not in wanted:
                self._drop(name)
        for name, keep in wanted.items():
            if name in self.left_out and needs == self._needs:
                continue
            held = self.names.get(name)
            if held is None:
                self.names[name] = _Name(keep)
            elif keep > held.keep:
                self._drop(name)  # it holds too short a window: load it again
                self.names[name] = _Name(keep)
            else:
                held.keep = keep
        if needs != self._needs:
            self.left_out.clear()  # new rules: try again
        self._needs = dict(needs)

    def _drop(self, name: str) -> None:
        held = self.names.pop(name, None)
        if held is not None:
            self.total -= held.held()

    # ---- keeping up with the store ------------------------------------------------

    def refresh(self, now: float) -> None:
        """Before a pass at ``now``: read what was stored since the last pass, load
        names not held yet, evict what no rule reaches. On a store error the pass
        reads the store (``ready`` is false)."""
        try:
            self._refresh(now)
        except Exception as exc:  # the store is busy or gone: read it directly this pass
            self.metrics.refresh_failures.inc()
            log.warning("sample cache refresh failed, reading the store: %s", exc)
            self.ready = False
        self._gauges()

    def _refresh(self, now: float) -> None:
        self.ready = False
        if self.cursor is None or not self.catch_up():
            self._reload()
        for name, held in self.names.items():
            start = now - held.keep - MARGIN_S
            if held.start == math.inf:
                try:
                    self._load(name, held, start)
                except limits.TooManySamplesError:
                    self._leave_out(name)
            elif start > held.start:
                evicted = sum(s.evict(start) for s in held.series.values())
                self.total -= evicted
                self.metrics.evicted.inc(evicted)
                held.start = start
        self._fit()
        self.ready = True

    def _reload(self) -> None:
        self.metrics.reloads.inc()
        changes = self.store.samples_since(None)  # type: ignore[attr-defined]
        self.cursor = changes.cursor
        self.deleted_before = changes.deleted_before
        for held in self.names.values():
            held.series.clear()
            held.order = None
            held.start = math.inf
        self.total = 0

    def _load(self, name: str, held: _Name, start: float) -> None:
        """Read ``name`` from ``start`` on (the lookback before, for each series'
        newest sample before ``start``); samples of later writes come in ``catch_up``."""
        with limits.QueryBudget(max_samples=self.max_samples, timeout_s=60.0).active():
            found = self.store.select_columns(  # type: ignore[attr-defined]
                [Matcher(METRIC_NAME, "=", name)], start - self.lookback, math.inf
            )
        for labels, times, values in found:
            s = _Series(labels, array("d", times), array("d", values))
            s.evict(start)
            held.series[labels] = s
            self.total += len(s.times)
        held.order = None
        held.start = start

    def catch_up(self) -> bool:
        """Take in what the store stored since the cursor; false when it was reset."""
        changes = self.store.samples_since(self.cursor)  # type: ignore[attr-defined]
        if changes.reset:
            return False
        self.cursor = changes.cursor
        if changes.deleted_before > self.deleted_before:
            self.deleted_before = changes.deleted_before
            for held in self.names.values():
                gone = sum(s.drop_before(changes.deleted_before) for s in held.series.values())
                self.total -= gone
        self.metrics.new_samples.inc(len(changes.samples))
        self._take(changes.samples)
        self._fit()
        self.dirty = False
        return True

    def _take(self, samples: list[tuple[Labels, float, float]]) -> None:
        names = self.names
        name_of: dict[Labels, str] = {}
        for labels, ts, value in samples:
            name = name_of.get(labels)
            if name is None:
                name = name_of[labels] = next((v for k, v in labels if k == METRIC_NAME), "")
            held = names.get(name)
            if held is None or held.start == math.inf:
                continue
            series = held.series.get(labels)
            if series is None:
                series = held.series[labels] = _Series(labels)
                held.order = None
            added = series.add(ts, value)
            if added and ts < held.start:
                self.total += added - series.evict(held.start)  # keeps only the newest before
            else:
                self.total += added

    def _fit(self) -> None:
        """Over ``max_samples``: leave the biggest names to the store, counted."""
        while self.total > self.max_samples and self.names:
            self._leave_out(max(self.names, key=lambda n: self.names[n].held()))

    def _leave_out(self, name: str) -> None:
        self._drop(name)
        self.left_out.add(name)
        self.metrics.overflows.inc()
        log.warning(
            "sample cache over %d samples: %s is read from the store", self.max_samples, name
        )

    def _gauges(self) -> None:
        self.metrics.samples.set(self.total)
        self.metrics.series.set(sum(len(h.series) for h in self.names.values()))

    # ---- reads ----------------------------------------------------------------------

    def _held(self, matchers: Sequence[Matcher], start: float) -> _Name | None:
        """The name's samples if they cover ``start`` on, after catching up if dirty."""
        if not self.ready:
            return None
        name = next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)
        held = self.names.get(name) if name is not None else None
        if held is None or start < held.start:
            return None
        if self.dirty:
            try:
                if not self.catch_up():
                    self.ready = False
                    return None
            except Exception as exc:
                self.metrics.refresh_failures.inc()
                log.warning("sample cache catch-up failed, reading the store: %s", exc)
                self.ready = False
                return None
        return held

    def forget(self, names: Iterable[str]) -> None:
        """The engine wrote samples named ``names``: catch up before the next read, if
        the cache holds any of them (``ALERTS`` no rule selects costs nothing)."""
        if not self.dirty and any(name in self.names for name in names):
            self.dirty = True

    def serves(self, matchers: Sequence[Matcher], start: float) -> bool:
        """Whether a read of ``matchers`` from ``start`` on is answered from memory."""
        return self._held(matchers, start) is not None

    def select_columns(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[Columns]:
        """The store's ``select_columns``, from memory where the window is held."""
        held = self._held(matchers, start)
        if held is None:
            self.metrics.reads.labels("miss").inc()
            return self.store.select_columns(matchers, start, end)  # type: ignore[attr-defined]
        self.metrics.reads.labels("hit").inc()
        limits.check()
        rv: list[Columns] = []
        taken = 0
        for s in held.candidates(matchers):
            times = s.times
            lo = bisect.bisect_left(times, start)
            hi = bisect.bisect_right(times, end)
            if lo < hi:
                rv.append((s.labels, times[lo:hi], s.values[lo:hi]))
                taken += hi - lo
        limits.take(taken)
        return rv

    def latest_columns(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[Columns]:
        """Per matching series its newest sample in ``[start, end]`` (a staleness marker
        too): all an instant selector evaluated at ``end`` reads."""
        held = self._held(matchers, end)
        if held is None:
            self.metrics.reads.labels("miss").inc()
            return latest_columns(self.store, matchers, start, end)
        self.metrics.reads.labels("hit").inc()
        limits.check()
        rv: list[Columns] = []
        for s in held.candidates(matchers):
            times = s.times
            hi = bisect.bisect_right(times, end)
            if hi and times[hi - 1] >= start:
                rv.append((s.labels, times[hi - 1 : hi], s.values[hi - 1 : hi]))
        limits.take(len(rv))
        return rv

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        return [
            Series(labels, tuple(zip(t, v, strict=True)))
            for labels, t, v in self.select_columns(matchers, start, end)
        ]
