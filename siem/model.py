"""The store's data model: ECS events, Prometheus samples, and the Store protocol.

Every backend (``siem.memory``, ``siem.sqlite``, later Elasticsearch) implements
``Store``; collectors write through it, alerting, dashboards and playbooks read
through it, and none of them sees SQL.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import re2

from siem import SiemError, kql
from siem.aggregations import Aggregation, AggregationResult
from siem.retention import PruneResult, RetentionPolicy, StoreStats

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name; ``__name__`` holds the metric name, as in Prometheus."""

METRIC_NAME = "__name__"


def make_labels(name: str | None = None, /, **labels: str) -> Labels:
    """Sorted label pairs, with the metric name under ``__name__`` when given."""
    if name is not None:
        labels[METRIC_NAME] = name
    return tuple(sorted(labels.items()))


def labels_from(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def value_bits(value: float) -> int:
    """The 64 bits of ``value`` as an IEEE 754 double (what tells one NaN from another)."""
    bits: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits


def from_bits(bits: int) -> float:
    """The double whose 64 bits are ``bits``; ``struct.error`` outside 0 to 2**64 - 1."""
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


STALE_BITS = 0x7FF0000000000002
STALE_NAN: float = from_bits(STALE_BITS)
"""Prometheus' staleness marker: a NaN with exactly these bits, written when a series
ends (a recording rule or ``ALERTS`` series a rule stopped returning). It is not a
value: PromQL ends the series there. Every backend keeps it apart from an ordinary NaN;
compare with ``is_stale``, never with ``==`` or ``math.isnan``."""

_PLAIN_NAN_BITS = value_bits(math.nan)
_BITS_TEXT = re.compile("nan:([0-9a-f]{16})")


def is_stale(value: float) -> bool:
    """True when ``value`` is the staleness marker (by its bits, not as a NaN).

    >>> is_stale(STALE_NAN), is_stale(math.nan), is_stale(1.0)
    (True, False, False)
    """
    return math.isnan(value) and value_bits(value) == STALE_BITS


def value_text(value: float) -> str:
    """``value`` as text that ``value_from_text`` reads back bit for bit: ``repr`` (``"1.5"``,
    ``"inf"``, ``"-0.0"``, ``"nan"``), and for any other NaN (the stale marker) its bits,
    ``"nan:7ff0000000000002"``.

    >>> value_text(STALE_NAN), value_text(-math.inf)
    ('nan:7ff0000000000002', '-inf')
    """
    if math.isnan(value):
        bits = value_bits(value)
        if bits != _PLAIN_NAN_BITS:
            return f"nan:{bits:016x}"
    return repr(value)


def value_from_text(text: str) -> float:
    """The value ``value_text`` wrote; ``ValueError`` when ``text`` is not one."""
    match = _BITS_TEXT.fullmatch(text)
    if match is None:
        return float(text)
    value = from_bits(int(match.group(1), 16))
    if not math.isnan(value):
        raise ValueError(f"{text!r} holds the bits of {value!r}, not of a NaN")
    return value


@dataclass(frozen=True)
class Sample:
    """One value of one series at one time (seconds since the epoch).

    >>> Sample(make_labels("up", job="shop", instance="127.0.0.1:8001"), 1700000000.0, 1.0).name
    'up'
    """

    labels: Labels
    timestamp: float
    value: float
    """Any double: NaN, ±Inf and -0.0 included, and ``STALE_NAN`` where the series ends;
    every backend gives back the same bits."""

    @property
    def name(self) -> str:
        return dict(self.labels).get(METRIC_NAME, "")


@dataclass(frozen=True)
class Series:
    """A series read back: its labels and its (timestamp, value) points in time order."""

    labels: Labels
    points: tuple[tuple[float, float], ...]

    @property
    def name(self) -> str:
        return dict(self.labels).get(METRIC_NAME, "")


@dataclass(frozen=True)
class SampleChanges:
    """What a store wrote since a reader's cursor (``samples_since``), for readers that keep
    recent samples in memory (``alerting.sample_cache``)."""

    cursor: int
    """Pass it to the next ``samples_since``."""
    reset: bool
    """The store no longer knows what came after the cursor given: read everything again."""
    deleted_before: float
    """Samples older than this were deleted (retention): a reader drops its copies."""
    samples: list[tuple[Labels, float, float]]
    """(labels, timestamp, value) of every sample stored since the cursor (late writes
    too), in no particular order; a sample the store refused as a duplicate is not
    among them."""


Columns = tuple[Labels, "array[float]", "array[float]"]
"""A series read back as columns: labels, times and values (``select_columns``)."""


class SelectsColumns:
    """``Store.select`` and ``select_columns`` for a backend that reads a series' samples
    as columns (``_columns``), which the PromQL evaluator takes without a copy."""

    def _columns(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Columns]:
        raise NotImplementedError

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        return [
            Series(labels, tuple(zip(times, values, strict=True)))
            for labels, times, values in self._columns(matchers, start, end)
        ]

    def select_columns(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[Columns]:
        """``select`` as columns: (labels, times, values) per series, sorted by labels."""
        return self._columns(matchers, start, end)


_SURROGATE = re.compile("[\ud800-\udfff]")

MAX_REGEX_LENGTH = 4096
"""Longest regex a matcher takes; RE2 is linear in the input, not in the pattern."""


class MatcherError(SiemError):
    """A label matcher's regex is not valid RE2 syntax (or is too long); names the pattern."""

    def __init__(self, message: str, pattern: str) -> None:
        self.pattern = pattern
        super().__init__(message)


@dataclass(frozen=True)
class Matcher:
    """A Prometheus label matcher; regexes are anchored at both ends, as in PromQL.

    Regexes use RE2 syntax and semantics (what Prometheus uses): matching takes
    time linear in the label value, so no pattern can backtrack for ages.
    ``\\pL`` and ``[[:alpha:]]`` work; a pattern RE2 rejects raises
    ``MatcherError`` when the matcher is built.

    >>> Matcher("job", "=~", "sh.p").matches({"job": "shop"})
    True
    """

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            _regex(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        try:
            hit = _regex(self.value).fullmatch(actual) is not None
        except UnicodeEncodeError:
            # RE2 takes UTF-8; a lone surrogate (from a bad scrape) reads as U+FFFD, as in Go.
            hit = _regex(self.value).fullmatch(_SURROGATE.sub("\ufffd", actual)) is not None
        return hit if self.op == "=~" else not hit


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    """The compiled RE2 for ``pattern``, anchored as Prometheus anchors it (``^(?:re)$``).

    Cached (bounded): a selector is matched against every series' labels.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        raise MatcherError(
            f"regex of {len(pattern):,} characters is longer than {MAX_REGEX_LENGTH:,}", pattern
        )
    options = re2.Options()
    options.log_errors = False
    # RE2's "." skips newlines by default; Prometheus sets (?s) so "." matches any character.
    try:
        return re2.compile(f"^(?s:{pattern})$", options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise MatcherError(f"invalid regex {pattern!r}: {reason}", pattern) from None
    except (TypeError, ValueError) as exc:
        # e.g. a lone surrogate, which RE2 (UTF-8 only) cannot take
        raise MatcherError(f"invalid regex {pattern!r}: {exc}", pattern) from None


def parse_timestamp(value: str) -> float:
    """An ECS ``@timestamp`` (ISO 8601, ``Z`` allowed) as seconds since the epoch."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def get_field(doc: Mapping[str, Any], dotted: str) -> Any:
    """``source.ip`` from a nested ECS document, or from a flat ``"source.ip"`` key."""
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class Event:
    """One ECS document, with the fields every backend indexes pulled out.

    ``id`` is deterministic (a hash of where the event came from), so a
    re-delivered event is stored once.

    ``text``, when set, is ``doc`` as JSON text (the collector keeps the log
    line's own text): a backend may store it instead of encoding ``doc`` again.
    It takes no part in equality.
    """

    id: str
    timestamp: float
    dataset: str
    doc: Mapping[str, Any]
    text: str | None = field(default=None, compare=False, repr=False)

    def get(self, dotted: str) -> Any:
        return get_field(self.doc, dotted)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], *, source: str, position: int | str) -> Event:
        """Build an event from a parsed ECS document read at ``source``/``position``."""
        ts_raw = doc.get("@timestamp")
        timestamp = parse_timestamp(ts_raw) if isinstance(ts_raw, str) else 0.0
        dataset = get_field(doc, "event.dataset") or "unknown"
        return cls(event_id(source, position), timestamp, str(dataset), doc)


def event_id(source: str, position: int | str) -> str:
    """The deterministic id of the event at ``position`` of ``source``."""
    return hashlib.sha256(f"{source}\x00{position}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class EventQuery:
    """Which events: dataset, time range [start, end), field equalities, KQL, newest first.

    A malformed ``kql`` raises ``siem.kql.KqlError`` here, when the query is built.
    """

    dataset: str | None = None
    start: float | None = None
    end: float | None = None
    equals: tuple[tuple[str, Any], ...] = field(default=())
    limit: int = 100
    kql: str | None = None
    after: tuple[float, str] | None = None
    """A page's cursor (``search_after``): only events older than this (timestamp, id),
    in the newest-first order (timestamp, then id, descending)."""

    def __post_init__(self) -> None:
        if self.kql is not None:
            kql.parse(self.kql)

    def matches(self, event: Event) -> bool:
        if self.dataset is not None and event.dataset != self.dataset:
            return False
        if self.start is not None and event.timestamp < self.start:
            return False
        if self.end is not None and event.timestamp >= self.end:
            return False
        if self.after is not None and (event.timestamp, event.id) >= self.after:
            return False
        if not all(_same(event.get(name), value) for name, value in self.equals):
            return False
        return self.kql is None or kql.matches(kql.parse(self.kql), event.get)


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(actual, list):
        return any(_same(item, expected) for item in actual)
    if actual == expected:
        return True
    return actual is not None and str(actual) == str(expected)


@dataclass(frozen=True)
class MetricMetadata:
    """The ``# TYPE``/``# HELP``/``# UNIT`` of one metric family, as Prometheus keeps them.

    >>> MetricMetadata("http_requests_total", "counter", "Requests served.")
    MetricMetadata(metric='http_requests_total', type='counter', help='Requests served.', unit='')
    """

    metric: str
    type: str = "unknown"
    help: str = ""
    unit: str = ""


@dataclass(frozen=True)
class WriteResult:
    """What a write stored; duplicates (same event id, same series and time) are skipped."""

    events: int = 0
    duplicate_events: int = 0
    samples: int = 0
    duplicate_samples: int = 0


class Store(Protocol):
    """What every backend offers. Writes are idempotent; reads never see SQL."""

    def write(
        self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()
    ) -> WriteResult: ...

    def search(self, query: EventQuery) -> list[Event]:
        """Matching events, newest first, at most ``query.limit``."""
        ...

    def count_by(self, query: EventQuery, field_name: str) -> dict[str, int]:
        """How many matching events per value of ``field_name`` (no limit)."""
        ...

    def aggregate(self, query: EventQuery, request: Aggregation) -> AggregationResult:
        """``request`` (see ``siem.aggregations``) over the matching events (no limit)."""
        ...

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        """Series whose labels match all ``matchers``, with their points in [start, end];
        each value with the bits written (NaN, ±Inf, -0.0 and ``STALE_NAN`` included)."""
        ...

    def prune(self, policy: RetentionPolicy, now: float, *, dry_run: bool = False) -> PruneResult:
        """Remove what ``policy`` no longer keeps at ``now`` (``siem.retention``), in bounded
        chunks; with ``dry_run``, count what would go by age and by how much the store is
        over its size cap, and remove nothing."""
        ...

    def stats(self) -> StoreStats:
        """Events, size, oldest and newest per dataset; series, samples and their span."""
        ...

    # Look-ups without samples (see ``siem.lookups``): the series with at least one
    # sample in [start, end] (``None``: no bound), matching all ``matchers`` (none:
    # every series); sorted, at most ``limit`` (0: no limit).

    def series(
        self,
        matchers: Sequence[Matcher],
        start: float | None = None,
        end: float | None = None,
        limit: int = 0,
    ) -> list[Labels]:
        """The label sets of the matching series, without reading their samples."""
        ...

    def label_names(
        self,
        matchers: Sequence[Matcher] = (),
        start: float | None = None,
        end: float | None = None,
        limit: int = 0,
    ) -> list[str]:
        """The label names of the matching series (a label with an empty value is absent)."""
        ...

    def label_values(
        self,
        name: str,
        matchers: Sequence[Matcher] = (),
        start: float | None = None,
        end: float | None = None,
        limit: int = 0,
    ) -> list[str]:
        """The values of label ``name`` on the matching series."""
        ...

    def write_metadata(self, items: Iterable[MetricMetadata]) -> int:
        """Store each family's metadata, replacing what that family had; how many written."""
        ...

    def metadata(self, metric: str | None = None, limit: int = 0) -> list[MetricMetadata]:
        """The metadata of ``metric`` (every family when ``None``), sorted by metric name,
        at most ``limit`` (0: no limit)."""
        ...

    def close(self) -> None: ...
