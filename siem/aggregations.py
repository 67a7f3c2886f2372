"""Aggregations over matching events: the typed contract every Store backend implements.

A request is one of ``Count``, ``Terms``, ``DateHistogram``, ``Percentiles``
or ``Cardinality`` (frozen dataclasses); ``Store.aggregate(query, request)``
answers with the matching result type. The semantics, which every backend
(memory, SQLite, later Elasticsearch) must give identically:

- ``Count``: matching events (no limit).
- ``Terms``: the ``size`` most frequent values of a field as ``str()`` of the
  value (as ``Store.count_by``), count descending then value ascending (as
  Elasticsearch's ``terms`` ordering), with ``other`` = events whose value is
  not among them (Elasticsearch's ``sum_other_doc_count``) and ``missing``
  = matching events without the field.
- ``DateHistogram``: counts per fixed interval over [start, end). Buckets are
  aligned like Elasticsearch's ``fixed_interval``: a bucket starts at a
  multiple of ``interval_s`` since the Unix epoch (plus ``offset_s``), so
  ``@timestamp`` 12:07:31 falls into the 12:05 bucket of a 5 m histogram.
  Every bucket from the one holding ``start`` to the one holding the last
  instant before ``end`` is returned, empty ones included
  (``extended_bounds``, ``min_doc_count: 0``). Only events in [start, end)
  are counted.
- ``Percentiles``: of the numeric (JSON number, not boolean) values of a
  field, by **linear interpolation** between the closest ranks (rank
  ``p / 100 * (n - 1)``, NumPy's default, what Elasticsearch's TDigest
  approximates): exact here, so an Elasticsearch backend may differ by the
  digest's error. ``None`` when no event has a numeric value.
- ``Cardinality``: distinct values of the field (as ``str()``), exact
  (Elasticsearch's HyperLogLog++ is exact below its precision threshold,
  3000 by default).

Backends compute the per-value counts, the bucket counts and the sorted
numeric values (what a database does well); the functions here turn them into
results, so the arithmetic exists once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from siem import SiemError, limits
from siem.kql import FIELD_RE

if TYPE_CHECKING:
    from siem.model import Event

MAX_BUCKETS = 10_000
"""Histogram buckets one request may ask for (Elasticsearch's ``search.max_buckets`` is 65,536)."""
MAX_TERMS = 10_000


class AggregationError(SiemError):
    """An aggregation request is not valid (bad field, size, interval, range or percent)."""


def _check_field(name: str) -> None:
    # The same names KQL takes, so every backend can address the field.
    if not FIELD_RE.fullmatch(name):
        raise AggregationError(
            f"invalid field name {name!r}: use letters, digits, '_', '@', '.' and '-'"
        )


@dataclass(frozen=True)
class Count:
    """How many events match."""


@dataclass(frozen=True)
class Terms:
    """The ``size`` most frequent values of ``field``."""

    field: str
    size: int = 10

    def __post_init__(self) -> None:
        _check_field(self.field)
        if not 1 <= self.size <= MAX_TERMS:
            raise AggregationError(f"terms size must be between 1 and {MAX_TERMS}, not {self.size}")


@dataclass(frozen=True)
class DateHistogram:
    """Event counts per ``interval_s`` seconds over [start, end), empty buckets included."""

    interval_s: float
    start: float
    end: float
    offset_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise AggregationError(f"histogram interval must be positive, not {self.interval_s}")
        if not (math.isfinite(self.start) and math.isfinite(self.end) and self.start < self.end):
            raise AggregationError("histogram range must be finite with start before end")
        n = self._bucket_count()
        if n > MAX_BUCKETS:
            raise AggregationError(
                f"histogram of {n:,} buckets; at most {MAX_BUCKETS:,} (use a longer interval)"
            )

    def bucket_of(self, ts: float) -> float:
        """The start of the bucket holding ``ts`` (aligned on the epoch plus the offset)."""
        return math.floor((ts - self.offset_s) / self.interval_s) * self.interval_s + self.offset_s

    def first_bucket(self) -> float:
        """The start of the bucket holding ``start``: bucket indexes count from it."""
        return self.bucket_of(self.start)

    def _bucket_count(self) -> int:
        # Buckets from the one holding start to the one holding the last instant before end.
        first = self.bucket_of(self.start)
        return math.ceil((self.end - first) / self.interval_s)

    def bucket_starts(self) -> list[float]:
        """The start of every bucket of the range, in time order."""
        first = self.bucket_of(self.start)
        return [first + k * self.interval_s for k in range(self._bucket_count())]


@dataclass(frozen=True)
class Percentiles:
    """Percentiles (0–100) of a numeric field, by linear interpolation."""

    field: str
    percents: tuple[float, ...] = (50.0, 95.0, 99.0)

    def __post_init__(self) -> None:
        _check_field(self.field)
        if not self.percents or not all(0.0 <= p <= 100.0 for p in self.percents):
            raise AggregationError("percents must be between 0 and 100")


@dataclass(frozen=True)
class Cardinality:
    """How many distinct values ``field`` has among the matching events (exact)."""

    field: str

    def __post_init__(self) -> None:
        _check_field(self.field)


Aggregation = Count | Terms | DateHistogram | Percentiles | Cardinality


@dataclass(frozen=True)
class CountResult:
    count: int


@dataclass(frozen=True)
class TermsResult:
    """``buckets`` of (value, count), most frequent first; ``other`` and ``missing`` counts."""

    buckets: tuple[tuple[str, int], ...]
    other: int = 0
    missing: int = 0


@dataclass(frozen=True)
class HistogramResult:
    """(bucket start, count) for every bucket of the range, in time order."""

    interval_s: float
    buckets: tuple[tuple[float, int], ...] = field(default=())


@dataclass(frozen=True)
class PercentilesResult:
    """(percent, value) in the requested order; value ``None`` when there are no numbers."""

    values: tuple[tuple[float, float | None], ...]


@dataclass(frozen=True)
class CardinalityResult:
    value: int


AggregationResult = (
    CountResult | TermsResult | HistogramResult | PercentilesResult | CardinalityResult
)


def terms_result(counts: Mapping[str, int], size: int, matched: int) -> TermsResult:
    """Top ``size`` of ``counts`` (value → events); ``matched`` is all matching events."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = tuple(ranked[:size])
    with_field = sum(counts.values())
    return TermsResult(top, with_field - sum(c for _, c in top), max(matched - with_field, 0))


def histogram_result(request: DateHistogram, counts: Mapping[int, int]) -> HistogramResult:
    """Every bucket of ``request``'s range with its count from ``counts`` (bucket index → n).

    A backend computes an event's bucket index as ``int((ts - first) / interval_s)``
    with ``first = request.first_bucket()`` (never negative: only events at or
    after ``start`` count), so every backend does the same float arithmetic.
    """
    return HistogramResult(
        request.interval_s,
        tuple((start, counts.get(k, 0)) for k, start in enumerate(request.bucket_starts())),
    )


def percentiles_result(request: Percentiles, ordered: Sequence[float]) -> PercentilesResult:
    """Linear interpolation between closest ranks of the sorted ``ordered`` values."""
    values: list[tuple[float, float | None]] = []
    n = len(ordered)
    for p in request.percents:
        if n == 0:
            values.append((p, None))
            continue
        rank = p / 100.0 * (n - 1)
        lo = math.floor(rank)
        hi = min(lo + 1, n - 1)
        frac = rank - lo
        values.append((p, ordered[lo] + (ordered[hi] - ordered[lo]) * frac))
    return PercentilesResult(tuple(values))


def is_number(value: object) -> bool:
    """A JSON number (booleans are not numbers here, as in Elasticsearch's numeric fields)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


NICE_INTERVALS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 604800, 2592000, 31536000,
)  # fmt: skip
"""The intervals an automatic histogram picks from (seconds), as Kibana's time buckets do."""
MAX_AUTO_BUCKETS = 100


def auto_interval(span_s: float) -> float:
    """The shortest nice interval giving at most 100 buckets over ``span_s`` (Kibana-like:
    15 m → 10 s (90 buckets), 1 h → 1 m (60), 24 h → 15 m (96), 7 d → 2 h (84))."""
    for interval in NICE_INTERVALS_S:
        if span_s / interval <= MAX_AUTO_BUCKETS:
            return float(interval)
    return float(NICE_INTERVALS_S[-1])


def value_counts(events: Iterable[Event], field_name: str) -> dict[str, int]:
    """How many ``events`` hold each value of ``field_name``, as ``str()`` of the value."""
    counts: Counter[str] = Counter()
    for event in events:
        value = event.get(field_name)
        if value is not None:
            counts[str(value)] += 1
    return dict(counts)


def aggregate_events(hits: Sequence[Event], request: Aggregation) -> AggregationResult:
    """``request`` over the matching events in memory: the reference semantics, which
    backends that cannot aggregate natively (or exactly) compute with."""
    if isinstance(request, Count):
        return CountResult(len(hits))
    if isinstance(request, DateHistogram):
        first = request.first_bucket()
        buckets: Counter[int] = Counter(
            int((e.timestamp - first) / request.interval_s)
            for e in hits
            if request.start <= e.timestamp < request.end
        )
        limits.take(len(buckets))
        return histogram_result(request, buckets)
    if isinstance(request, Percentiles):
        values = sorted(float(v) for v in (e.get(request.field) for e in hits) if is_number(v))
        limits.take(len(values))
        return percentiles_result(request, values)
    counts = value_counts(hits, request.field)
    limits.take(len(counts))
    if isinstance(request, Cardinality):
        return CardinalityResult(len(counts))
    return terms_result(counts, request.size, len(hits))
