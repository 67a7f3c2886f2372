"""PromQL functions, aggregations and operators over evaluated values.

Everything here works on data already selected and sliced by the evaluator in
``alerting.promql``; nothing touches the store. The formulas follow Prometheus'
``promql/functions.go``, ``promql/quantile.go`` and ``promql/engine.go``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from siem.model import METRIC_NAME, Labels
from vigil.errors import VigilError

_SHOWN = 300  # characters of the expression an error message repeats


class PromQLError(VigilError):
    """A PromQL expression is malformed, unsupported, or fails to evaluate.

    Parse errors carry ``expr`` and the 0-based ``offset`` of the problem and
    name its line and column in the message.
    """

    def __init__(self, message: str, *, expr: str | None = None, offset: int | None = None) -> None:
        self.expr = expr
        self.offset = offset
        self.line: int | None = None
        self.column: int | None = None
        if expr is not None and offset is not None:
            before = expr[:offset]
            self.line = before.count("\n") + 1
            self.column = offset - (before.rfind("\n") + 1) + 1
            near = expr[offset : offset + 20].split("\n", 1)[0].strip()
            where = (
                f"line {self.line}, column {self.column}"
                if "\n" in expr
                else f"column {self.column}"
            )
            message = (
                f"{where}" + (f" near {near!r}" if near else " (end of input)") + f": {message}"
            )
        if expr is not None:
            shown = expr.strip()
            if len(shown) > _SHOWN:  # a 16 KB expression need not come back whole
                shown = shown[:_SHOWN] + "..."
            message = f"{message} in {shown!r}"
        super().__init__(message)


Vector = list[tuple[Labels, float]]
"""An instant vector: (labels, value) per series, at one evaluation time."""


@dataclass(frozen=True)
class Window:
    """The points of one series inside a range selector's window ``(start, end]``."""

    labels: Labels
    times: Sequence[float]
    values: Sequence[float]
    start: float
    end: float
    resets: Sequence[float] | None = None
    """The value before each counter reset in the window, in order, when known."""


class Span(Sequence[float]):
    """``data[lo:hi]`` without copying until iterated: ``rate`` reads only the ends.

    >>> Span([1.0, 2.0, 3.0, 4.0], 1, 3)[-1]
    3.0
    """

    def __init__(self, data: Sequence[float], lo: int, hi: int) -> None:
        self._data, self._lo, self._hi = data, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[float]: ...

    def __getitem__(self, index: int | slice) -> float | Sequence[float]:
        if isinstance(index, slice):
            return self._data[self._lo : self._hi][index]
        n = self._hi - self._lo
        if not -n <= index < n:
            raise IndexError(index)
        return self._data[self._lo + index if index >= 0 else self._hi + index]

    def __iter__(self) -> Iterator[float]:
        return iter(self._data[self._lo : self._hi])


def drop_name(labels: Labels) -> Labels:
    """The labels without ``__name__``, as functions and arithmetic leave them."""
    return tuple(pair for pair in labels if pair[0] != METRIC_NAME)


def _extrapolated(window: Window, *, is_rate: bool) -> float | None:
    """Counter increase over the window, extrapolated to its edges like Prometheus.

    Resets (a value lower than the one before) count as a restart from zero.
    The increase is extrapolated to the window boundary when the first/last
    sample is within 1.1 average intervals of it, else by half an interval, and
    never below the counter's zero point.
    """
    times, values = window.times, window.values
    if len(values) < 2:
        return None
    result = values[-1] - values[0]
    if window.resets is not None:
        for before in window.resets:
            result += before
    else:
        previous = 0.0
        for value in values:
            if value < previous:
                result += previous
            previous = value
    sampled = times[-1] - times[0]
    if sampled <= 0:
        return None
    average = sampled / (len(values) - 1)
    threshold = average * 1.1
    to_start = times[0] - window.start
    to_end = window.end - times[-1]
    if to_start >= threshold:
        to_start = average / 2
    if result > 0 and values[0] >= 0:
        to_zero = sampled * (values[0] / result)
        to_start = min(to_start, to_zero)
    if to_end >= threshold:
        to_end = average / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor /= window.end - window.start
    return result * factor


def rate(window: Window) -> float | None:
    """Per-second increase of a counter over the window (``rate``)."""
    return _extrapolated(window, is_rate=True)


def increase(window: Window) -> float | None:
    """Increase of a counter over the window (``increase``)."""
    return _extrapolated(window, is_rate=False)


def irate(window: Window) -> float | None:
    """Per-second rate between the last two samples (``irate``); a reset counts from zero."""
    if len(window.values) < 2:
        return None
    last, before = window.values[-1], window.values[-2]
    elapsed = window.times[-1] - window.times[-2]
    if elapsed <= 0:
        return None
    delta = last if last < before else last - before
    return delta / elapsed


def _over_time(reduce: Callable[[Sequence[float]], float]) -> Callable[[Window], float | None]:
    def apply(window: Window) -> float | None:
        return reduce(window.values) if window.values else None

    return apply


def _sum(values: Sequence[float]) -> float:
    """Plain IEEE addition: ``inf + -inf`` is NaN, as in Go (``math.fsum`` would raise)."""
    return sum(values, 0.0)


def _min_max(values: Sequence[float], *, max_: bool) -> float:
    """Minimum or maximum where NaN loses against any number, as in Prometheus."""
    rv = math.nan
    for value in values:
        if math.isnan(rv) or (value > rv if max_ else value < rv):
            rv = value
    return rv


RANGE_FUNCTIONS: dict[str, Callable[[Window], float | None]] = {
    "rate": rate,
    "irate": irate,
    "increase": increase,
    "avg_over_time": _over_time(lambda vs: _sum(vs) / len(vs)),
    "sum_over_time": _over_time(_sum),
    "min_over_time": _over_time(lambda vs: _min_max(vs, max_=False)),
    "max_over_time": _over_time(lambda vs: _min_max(vs, max_=True)),
    "count_over_time": _over_time(lambda vs: float(len(vs))),
}
"""Functions of one range vector, applied per series; ``None`` means no output sample."""


def map_values(vector: Vector, func: Callable[[float], float]) -> Vector:
    """Apply ``func`` to every value and drop ``__name__`` (``abs``, ``clamp_min``...)."""
    return [(drop_name(labels), func(value)) for labels, value in vector]


def clamp_min(vector: Vector, bound: float) -> Vector:
    return map_values(vector, lambda v: math.nan if math.isnan(bound) else max(v, bound))


def clamp_max(vector: Vector, bound: float) -> Vector:
    return map_values(vector, lambda v: math.nan if math.isnan(bound) else min(v, bound))


def group_key(labels: Labels, mode: str | None, names: Sequence[str]) -> Labels:
    """The output labels of an aggregation group: ``by`` keeps, ``without`` drops names."""
    if mode == "by":
        keep = set(names)
        return tuple(pair for pair in labels if pair[0] in keep)
    if mode == "without":
        drop = set(names) | {METRIC_NAME}
        return tuple(pair for pair in labels if pair[0] not in drop)
    return ()


AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": _sum,
    "avg": lambda vs: _sum(vs) / len(vs),
    "min": lambda vs: _min_max(vs, max_=False),
    "max": lambda vs: _min_max(vs, max_=True),
    "count": lambda vs: float(len(vs)),
}
"""Aggregation operators by name, each reducing the values of one group."""


def aggregate(op: str, vector: Vector, mode: str | None, names: Sequence[str]) -> Vector:
    """``op by|without (names) (vector)``: one sample per group, in first-seen order."""
    groups: dict[Labels, list[float]] = {}
    for labels, value in vector:
        groups.setdefault(group_key(labels, mode, names), []).append(value)
    reduce = AGGREGATIONS[op]
    return [(key, reduce(values)) for key, values in groups.items()]


def histogram_quantile(phi: float, vector: Vector) -> Vector:
    """The φ-quantile of classic histograms: buckets grouped by labels except ``le``.

    Interpolates linearly inside the bucket holding the rank; a quantile in the
    ``+Inf`` bucket is the upper bound of the highest finite bucket; a histogram
    without a ``+Inf`` bucket or without observations gives NaN.
    """
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in vector:
        as_dict = dict(labels)
        try:
            upper = float(as_dict["le"])
        except (KeyError, ValueError):
            continue  # Prometheus ignores series without a parsable ``le``.
        key = tuple(pair for pair in drop_name(labels) if pair[0] != "le")
        groups.setdefault(key, []).append((upper, value))
    return [(key, bucket_quantile(phi, buckets)) for key, buckets in groups.items()]


def bucket_quantile(phi: float, buckets: list[tuple[float, float]]) -> float:
    """Quantile ``phi`` of cumulative ``(upper_bound, count)`` buckets (any order)."""
    if math.isnan(phi):
        return math.nan
    if phi < 0:
        return -math.inf
    if phi > 1:
        return math.inf
    merged: dict[float, float] = {}
    for upper, count in buckets:
        merged[upper] = merged.get(upper, 0.0) + count
    bounds = sorted(merged)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return math.nan
    counts: list[float] = []
    for upper in bounds:
        # Rate noise can make cumulative counts dip; Prometheus forces them monotonic.
        counts.append(max(merged[upper], counts[-1]) if counts else merged[upper])
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = phi * total
    index = bisect_left(counts, rank, hi=len(counts) - 1)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[index]
    if index > 0:
        start = bounds[index - 1]
        count -= counts[index - 1]
        rank -= counts[index - 1]
    if count == 0:
        return math.nan  # φ = 0 over an empty first bucket: 0/0 in Prometheus.
    return start + (bounds[index] - start) * (rank / count)


def check_unique(vector: Vector) -> Vector:
    """``vector`` itself, after checking no two samples share a label set."""
    seen: set[Labels] = set()
    for labels, _ in vector:
        if labels in seen:
            raise PromQLError(
                f"vector cannot contain metrics with the same labelset {show(labels)}; "
                "aggregate or add label matchers so each series stays distinct"
            )
        seen.add(labels)
    return vector


def show(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPERATORS = frozenset({"and", "or", "unless"})


@dataclass(frozen=True)
class Operation:
    """A binary operator with its modifiers: ``bool``, ``on``/``ignoring``, ``group_*``."""

    op: str
    return_bool: bool = False
    on: bool = False
    names: tuple[str, ...] = ()
    card: str = "one-to-one"  # or "many-to-one", "one-to-many", "many-to-many"
    include: tuple[str, ...] = ()

    def apply(self, a: float, b: float) -> tuple[float, bool]:
        """``a op b`` with Go float semantics; a comparison gives ``(a, outcome)``."""
        if self.op in COMPARISON:
            return a, _COMPARE[self.op](a, b)
        return _ARITH[self.op](a, b), True

    def scalars(self, a: float, b: float) -> float:
        """Scalar op scalar; comparisons need ``bool`` (the parser enforces it) and give 0/1."""
        value, keep = self.apply(a, b)
        return (1.0 if keep else 0.0) if self.op in COMPARISON else value

    def vector_scalar(self, vector: Vector, scalar: float, *, swapped: bool) -> Vector:
        """Vector op scalar (or scalar op vector when ``swapped``)."""
        rv: Vector = []
        drop = self.op in ARITHMETIC or self.return_bool
        for labels, sample in vector:
            a, b = (scalar, sample) if swapped else (sample, scalar)
            value, keep = self.apply(a, b)
            if self.op in COMPARISON:
                value = sample  # a comparison keeps the vector's value, whichever side it is on
                if self.return_bool:
                    value, keep = (1.0 if keep else 0.0), True
            if keep:
                rv.append((drop_name(labels) if drop else labels, value))
        return check_unique(rv) if drop else rv

    def signature(self, labels: Labels) -> tuple[str, ...] | Labels:
        """What two samples must share to match: ``on`` labels, or all but ``ignoring``."""
        if self.on:
            as_dict = dict(labels)
            return tuple(as_dict.get(name, "") for name in self.names)
        skip = set(self.names) | {METRIC_NAME}
        return tuple(pair for pair in labels if pair[0] not in skip)

    def set_operation(self, lhs: Vector, rhs: Vector) -> Vector:
        """``and``, ``or``, ``unless``: many-to-many, keyed by the signature."""
        right = {self.signature(labels) for labels, _ in rhs}
        if self.op == "and":
            return [s for s in lhs if self.signature(s[0]) in right]
        if self.op == "unless":
            return [s for s in lhs if self.signature(s[0]) not in right]
        left = {self.signature(labels) for labels, _ in lhs}
        return lhs + [s for s in rhs if self.signature(s[0]) not in left]

    def vectors(self, lhs: Vector, rhs: Vector) -> Vector:
        """Arithmetic or comparison between vectors: one-to-one or group_left/right."""
        one_to_many = self.card == "one-to-many"
        many, one = (rhs, lhs) if one_to_many else (lhs, rhs)
        ones: dict[object, tuple[Labels, float]] = {}
        for labels, value in one:
            sig = self.signature(labels)
            if sig in ones:
                side = "left" if one_to_many else "right"
                raise PromQLError(
                    f"found duplicate series for the match group on the {side} hand-side of "
                    f"the operation: {show(labels)}; many-to-many matching not allowed: "
                    "matching labels must be unique on one side"
                )
            ones[sig] = (labels, value)
        matched: dict[object, set[Labels]] = {}
        rv: Vector = []
        for labels, value in many:
            sig = self.signature(labels)
            if sig not in ones:
                continue
            one_labels, other = ones[sig]
            result, keep = self.apply(*((other, value) if one_to_many else (value, other)))
            if self.return_bool:
                result, keep = (1.0 if keep else 0.0), True
            if not keep:
                continue
            metric = self._result_labels(labels, one_labels)
            seen = matched.setdefault(sig, set())
            if self.card == "one-to-one" and seen:
                raise PromQLError(
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right)"
                )
            if metric in seen:
                raise PromQLError(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                )
            seen.add(metric)
            rv.append((metric, result))
        return rv

    def _result_labels(self, many: Labels, one: Labels) -> Labels:
        """Labels of a vector/vector result, as Prometheus' ``resultMetric`` builds them."""
        labels = dict(many)
        if self.op in ARITHMETIC or self.return_bool:
            labels.pop(METRIC_NAME, None)
        if self.card == "one-to-one":
            if self.on:
                labels = {k: v for k, v in labels.items() if k in self.names}
            else:
                for name in self.names:
                    labels.pop(name, None)
        one_dict = dict(one)
        for name in self.include:
            if one_dict.get(name):
                labels[name] = one_dict[name]
            else:
                labels.pop(name, None)
        return tuple(sorted(labels.items()))


def _divide(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _modulo(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:  # fmod(x, 0) and fmod(±inf, y) are NaN in Go
        return math.nan


def _power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf
    except ValueError:  # 0 ** -1 is +Inf in Go; a negative base with a fraction is NaN
        return math.inf if a == 0 else math.nan


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "%": _modulo,
    "^": _power,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
