"""Series, label and metric-metadata look-ups: what every backend shares.

Grafana's query editor asks which series, label names and label values exist
(``/api/v1/series``, ``/labels``, ``/label/<name>/values``) many times a
minute. A backend answers from its series index, never from the samples: it
yields the label sets of the series with at least one sample in the time
range (``None`` bounds: all retained time), and the functions here apply the
matchers, the ``limit`` and the query budget the same way for all of them:

- the work is the number of series, checked against the deadline and for
  cancellation every ``CHECK_EVERY`` of them (``siem.limits.check``);
- what is held is at most about twice ``limit`` items, and the answer
  (sorted, at most ``limit``; 0 means no limit) counts against the sample
  budget (``siem.limits.take``), one unit per series, name or value.

Metric metadata (``siem.model.MetricMetadata``) is kept one per metric family
name, the latest written winning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from siem import limits
from siem.model import METRIC_NAME, Labels, Matcher, MetricMetadata

CHECK_EVERY = 1024
"""Series looked at between deadline/cancellation checks."""

METRIC_TYPES = frozenset(
    {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"}
)
"""The types Prometheus' metadata API reports (``untyped`` is read as ``unknown``)."""

_T = TypeVar("_T", Labels, str)


def exact_name(matchers: Sequence[Matcher]) -> str | None:
    """The metric name an ``__name__="..."`` matcher pins, for a backend's name index."""
    return next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)


def in_range(t: float, start: float | None, end: float | None) -> bool:
    """``start <= t <= end``, an absent bound being no bound."""
    return (start is None or t >= start) and (end is None or t <= end)


class _Smallest(Generic[_T]):
    """The ``limit`` smallest distinct items seen (all when ``limit`` is 0), in memory
    bounded by about twice ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = max(limit, 0)
        self._items: set[_T] = set()

    def add(self, item: _T) -> None:
        self._items.add(item)
        if self._limit and len(self._items) > 2 * self._limit:
            self._items = set(sorted(self._items)[: self._limit])

    def result(self) -> list[_T]:
        rv = sorted(self._items)
        if self._limit:
            rv = rv[: self._limit]
        limits.take(len(rv))
        return rv


def _matching(candidates: Iterable[Labels], matchers: Sequence[Matcher]) -> Iterator[Labels]:
    for n, labels in enumerate(candidates):
        if n % CHECK_EVERY == 0:
            limits.check()
        if not matchers or all(m.matches(dict(labels)) for m in matchers):
            yield labels


def _pick(
    candidates: Iterable[Labels],
    matchers: Sequence[Matcher],
    limit: int,
    items: Callable[[Labels], Iterable[_T]],
) -> list[_T]:
    found: _Smallest[_T] = _Smallest(limit)
    for labels in _matching(candidates, matchers):
        for item in items(labels):
            found.add(item)
    return found.result()


def pick_series(
    candidates: Iterable[Labels], matchers: Sequence[Matcher], limit: int
) -> list[Labels]:
    """The label sets among ``candidates`` matching all ``matchers``, sorted, at most ``limit``."""
    return _pick(candidates, matchers, limit, lambda labels: (labels,))


def pick_label_names(
    candidates: Iterable[Labels], matchers: Sequence[Matcher], limit: int
) -> list[str]:
    """The label names of the matching series (a label with an empty value is absent)."""
    return _pick(candidates, matchers, limit, lambda labels: (k for k, v in labels if v))


def pick_label_values(
    candidates: Iterable[Labels], name: str, matchers: Sequence[Matcher], limit: int
) -> list[str]:
    """The values of label ``name`` on the matching series, sorted, at most ``limit``."""
    return _pick(
        candidates, matchers, limit, lambda labels: (v for k, v in labels if k == name and v)
    )


def pick_values(values: Iterable[str], limit: int) -> list[str]:
    """The distinct ``values``, sorted, at most ``limit``: a backend that reads distinct
    values straight from its index (metric names) uses the same bounds and budget."""
    found: _Smallest[str] = _Smallest(limit)
    for n, value in enumerate(values):
        if n % CHECK_EVERY == 0:
            limits.check()
        found.add(value)
    return found.result()


def pick_metadata(
    items: Iterable[MetricMetadata], metric: str | None, limit: int
) -> list[MetricMetadata]:
    """``items`` of ``metric`` (all when ``None``), sorted by metric name, at most ``limit``."""
    rv = sorted((m for m in items if metric is None or m.metric == metric), key=lambda m: m.metric)
    if limit > 0:
        rv = rv[:limit]
    limits.take(len(rv))
    return rv


class SeriesLookups:
    """``Store.series``, ``label_names`` and ``label_values`` for a backend that gives
    ``_in_range``: the label sets of the series with a sample in [start, end] (it may
    use the matchers to narrow them, e.g. by metric name; they are applied again)."""

    def _in_range(
        self, matchers: Sequence[Matcher], start: float | None, end: float | None
    ) -> Iterable[Labels]:
        raise NotImplementedError

    def series(
        self,
        matchers: Sequence[Matcher],
        start: float | None = None,
        end: float | None = None,
        limit: int = 0,
    ) -> list[Labels]:
        return pick_series(self._in_range(matchers, start, end), matchers, limit)

    def label_names(
        self,
        matchers: Sequence[Matcher] = (),
        start: float | None = None,
        end: float | None = None,
        limit: int = 0,
    ) -> list[str]:
        return pick_label_names(self._in_range(matchers, start, end), matchers, limit)

    def label_values(
        self,
        name: str,
        matchers: Sequence[Matcher] = (),
        start: float | None = None,
        end: float | None = None,
        limit: int = 0,
    ) -> list[str]:
        if name == METRIC_NAME and not matchers:
            names = self._metric_names(start, end, limit)
            if names is not None:
                return names
        return pick_label_values(self._in_range(matchers, start, end), name, matchers, limit)

    def _metric_names(self, start: float | None, end: float | None, limit: int) -> list[str] | None:
        """Grafana's metric picker (``label/__name__/values`` of every series) straight from
        a backend's index of names, through ``pick_values``; ``None``: from the series."""
        return None
